"Shared machinery: recipes, result folders, the run-folder contract, stage chaining and conclusions with their noise."
import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

from fastai_lab.flags import parse_seeds
from fastai_lab.data.loaders import resolve_data
from fastai_lab.recipe import FINAL, SPEC, UNET, Recipe, scale_to_profile
from fastai_lab.stats import accuracy_text, compare, mean_std, seed_interval, wilson
from fastai_lab.results import Stage, stage_dir
from fastai_lab.lookup import key_difference, latest_stage_summary
from fastai_lab.stage import stage_choice
from fastai_lab.io import write_json
from fastai_lab.flags import Options
from fastai_lab.rows import classifier_row, experiments_table, overfitting_text
from fastai_lab.train import RunOptions, train_run
from fastai_lab.learner import make_learner


# ----- recipes ------------------------------------------------------------------------------------------------------

def test_recipe_round_trips_and_validates(tmp_path):
    r = replace(SPEC, lr=3e-3, model=dict(SPEC.model, channels=(16, 32, 64)))
    assert r.model['channels'] == [16, 32, 64]  # held as JSON holds it, so a saved recipe compares equal
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    write_json(tmp_path / 'config.json', dict(recipe=r.to_dict()))
    assert Recipe.load(tmp_path / 'config.json') == r
    with pytest.raises(ValueError, match=r"unknown recipe fields \['colour'\]"): Recipe.from_dict(dict(colour='red'))
    with pytest.raises(ValueError, match="no 'recipe' in it"):
        (tmp_path / 'other.json').write_text('{}'); Recipe.load(tmp_path / 'other.json')
    with pytest.raises(ValueError, match="--loss 'ce': expected bce, dice or bce_dice for a U-Net"):
        replace(UNET, loss='ce')
    with pytest.raises(ValueError, match="--mix 'cutmix'"): replace(UNET, mix='cutmix')
    assert SPEC.task == 'classify' and UNET.task == 'segment' and UNET.monitor == 'valid_iou'


def test_the_profile_only_scales_the_recipe():
    quick = scale_to_profile(FINAL, 'quick')
    changed = {k for k, v in quick.to_dict().items() if v != FINAL.to_dict()[k]}
    assert changed == {'profile', 'epochs', 'size', 'max_items', 'bs'}
    assert (quick.epochs, quick.size, quick.max_items, quick.bs) == (2, 16, 15, 32)
    assert scale_to_profile(quick, 'quick') == quick and scale_to_profile(FINAL, 'full') == FINAL
    assert scale_to_profile(UNET, 'quick').bs == 4


def test_parse_seeds():
    assert parse_seeds('2') == [0, 1] and parse_seeds('3,5') == [3, 5] and parse_seeds('5,') == [5]
    for bad in ('two', '0', ',', '0,0', '-1,2'):
        with pytest.raises(ValueError, match='--seeds'): parse_seeds(bad)


# ----- folders ------------------------------------------------------------------------------------------------------

def test_stage_dir_publishes_on_success_and_leaves_nothing_on_failure(tmp_path):
    with stage_dir(tmp_path, 'stage') as a: (a / 'x').write_text('1')
    with stage_dir(tmp_path, 'stage') as b: (b / 'x').write_text('2')
    done = sorted(p.name for p in (tmp_path / 'stage').iterdir())
    assert len(done) == 2 and not any(n.startswith('.') for n in done)  # the second run did not overwrite the first
    with pytest.raises(RuntimeError):
        with stage_dir(tmp_path, 'stage') as c:
            (c / 'half').write_text('written'); raise RuntimeError('boom')
    assert sorted(p.name for p in (tmp_path / 'stage').iterdir()) == done


def test_a_stage_that_trained_nothing_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with Stage(Options(out=str(tmp_path)), 'stage2_baseline', dict(k=1)) as st:
            (st.folder / 'table.md').write_text('half'); raise ValueError('bad input')
    assert not (tmp_path / 'stage2_baseline').exists()  # nor the stage folder it made


def test_latest_stage_summary_reads_finished_runs_on_the_same_data(tmp_path, synthetic_tiny, capsys):
    like = resolve_data(scale_to_profile(replace(SPEC, data=str(synthetic_tiny)), 'quick'))
    assert latest_stage_summary(tmp_path, 'stage3_1_channels') is None
    for stamp, best, key in (('20260101-000000', 'A', like.data_key()),
                             ('20260102-000000', 'B', dict(like.data_key(), classes='n1,n2'))):
        (tmp_path / 'stage3_1_channels' / stamp).mkdir(parents=True)
        write_json(tmp_path / 'stage3_1_channels' / stamp / 'summary.json', dict(best=best, data_key=key))
    (tmp_path / 'stage3_1_channels' / '20260103-000000').mkdir()  # unfinished: no summary.json
    assert latest_stage_summary(tmp_path, 'stage3_1_channels')['best'] == 'B'
    assert latest_stage_summary(tmp_path, 'stage3_1_channels', like=like)['best'] == 'A'
    assert "20260102-000000 is not used: it ran on other data" in capsys.readouterr().out


def test_a_data_key_difference_is_said_whole():
    "Long data folders and class lists are shortened in their middle; every differing field is said to its end."
    wnids = [f'n0{i}{i}{i}{i}{i}{i}{i}' for i in range(10)]
    here = dict(data='/home/someone/experiments/datasets/tiny-imagenet-200-copy-for-the-lab', classes=','.join(wnids),
                profile='quick', split_seed=42)
    there = dict(here, data='/mnt/shared/data/tiny-imagenet-10', classes=','.join(wnids[::-1]), profile='full')
    text = key_difference(here, there, ('here', 'in the others'))
    fields = text.split('; ')
    assert [f.split(':')[0] for f in fields] == ['classes', 'data', 'profile']
    assert all(f.count(' here, ') == 1 and f.endswith(' in the others') for f in fields)
    assert "'quick' here, 'full' in the others" in text and '...' in fields[0] and len(fields[0]) < 160


def test_stage_dir_leaves_no_folder_it_made_when_it_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with stage_dir(tmp_path / 'run', 'evaluation'): raise RuntimeError('boom')
    assert not (tmp_path / 'run').exists()
    (tmp_path / 'kept').mkdir()
    with pytest.raises(RuntimeError):
        with stage_dir(tmp_path / 'kept', 'evaluation'): raise RuntimeError('boom')
    assert (tmp_path / 'kept').is_dir() and not any((tmp_path / 'kept').iterdir())  # it was there before: kept


def test_compare_leaves_undefined_scores_unranked():
    rows = [dict(name='A', iou=float('nan'), n_seeds=1), dict(name='B', iou=0.4, n_seeds=1),
            dict(name='C', iou=None, n_seeds=1)]
    verdict = compare(rows, 'iou')
    assert verdict['best'] == 'B' and verdict['text'] == 'Only B has a iou (0.4). Not ranked, their iou undefined: A, C.'
    none = compare([rows[0], rows[2]], 'iou')
    assert none['best'] == 'A' and none['text'].startswith('No iou to compare: it is undefined for every row')


def test_write_json_cleans_values(tmp_path):
    write_json(tmp_path / 'a.json', dict(x=float('nan'), t=torch.tensor(1.5), p=tmp_path, s=slice(1e-5, 1e-4)))
    assert json.loads((tmp_path / 'a.json').read_text()) == dict(x=None, t=1.5, p=str(tmp_path), s='slice(1e-05, 0.0001)')


# ----- one run ------------------------------------------------------------------------------------------------------

def test_train_run_writes_the_run_folder_contract(tiny3, tmp_path):
    recipe = resolve_data(replace(scale_to_profile(SPEC, 'quick'), data=str(tiny3), classes='3', size=16, bs=8,
                                  epochs=3, model=dict(SPEC.model, channels=[4, 8, 16], blocks=[1, 1, 1]), seed=7))
    summary = train_run(recipe, tmp_path / 'run', RunOptions(export=False))
    run = tmp_path / 'run'
    for f in ('config.json', 'metrics.csv', 'summary.json', 'model.pth', 'model.txt', 'accuracy.png', 'loss.png'):
        assert (run / f).is_file(), f
    history = pd.read_csv(run / 'metrics.csv')
    assert list(history.columns) == ['epoch', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy', 'seconds']
    assert list(history['epoch']) == [0, 1, 2] and (history['seconds'] > 0).all()
    config = json.loads((run / 'config.json').read_text())
    assert config['recipe']['seed'] == 7 and config['recipe'] == recipe.to_dict() and 'torch' in config['environment']
    assert config['precision'] == ('bf16 mixed' if torch.cuda.is_available() else 'fp32')
    assert summary['best_epoch'] == int(history['epoch'][history['valid_accuracy'].idxmax()])
    assert summary['best']['valid_accuracy'] == pytest.approx(history['valid_accuracy'].max())
    assert summary['min_valid_loss'] == pytest.approx(history['valid_loss'].min())
    assert summary['checkpoint'] == 'model.pth' and summary['n_valid'] == 6 and summary['final']['epoch'] == 2
    assert torch.load(run / 'model.pth', weights_only=True)['epoch'] == summary['best_epoch']
    assert 'parameters: ' in (run / 'model.txt').read_text()
    cost = summary.cost  # beside the accuracy, never in metrics.csv (whose columns are above)
    assert json.loads((run / 'config.json').read_text())['cost'] == cost and cost['params'] == summary.params
    assert cost['macs'] > 0 and cost['train_images_per_s'] > 0 and cost['infer_batch'] == summary.bs == 8
    assert cost['train_images_per_epoch'] == 8 * (summary.n_train // 8)  # fastai drops the last partial batch
    again = train_run(recipe, run)  # finished: not trained again, its record read back
    assert again.to_dict() == json.loads((run / 'summary.json').read_text())


def test_make_learner_follows_the_recipe(tiny3):
    from fastai.callback.fp16 import MixedPrecision
    from fastai.callback.mixup import CutMix
    from fastai.data.core import DataLoaders
    from torch.utils.data import TensorDataset
    from fastai_lab.arch.resnet import ResNet
    ds = TensorDataset(torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,)))
    dls = DataLoaders.from_dsets(ds, ds, bs=4)
    learn = make_learner(replace(FINAL, precision='fp32'), ResNet((8, 16, 32), (1, 1, 1), n_classes=3), dls)
    assert not any(isinstance(cb, MixedPrecision) for cb in learn.cbs) and any(isinstance(cb, CutMix) for cb in learn.cbs)
    assert learn.loss_func.eps == 0.1 and learn.wd == 0.05
    learn.create_opt()
    assert type(learn.opt.opt).__name__ == 'AdamW'
    with pytest.raises(ValueError, match="--opt 'rmsprop'"): replace(SPEC, opt='rmsprop')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='--precision bf16: needs a GPU'):
            make_learner(replace(SPEC, precision='bf16'), ResNet((8, 16, 32), (1, 1, 1), n_classes=3), dls)


# ----- intervals and conclusions ------------------------------------------------------------------------------------

def test_wilson_and_seed_intervals():
    lo, hi = wilson(0.714, 500)
    assert (round(lo, 3), round(hi, 3)) == (0.673, 0.752)  # the figure: 71.4% on 500 test images
    assert wilson(0.0, 10)[0] == 0.0 and wilson(1.0, 10)[1] == 1.0
    assert seed_interval([0.7]) is None and seed_interval([0.70, 0.72]) == pytest.approx(12.706 * 0.01414 / 2 ** .5, rel=1e-3)
    text = accuracy_text(0.145, 200, [0.145])
    assert '+- 0.00%' not in text and 'one seed' in text and 'Wilson' in text


def _row(name, acc, ci=None, n=1, n_eval=None):
    return dict(name=name, valid_acc=acc, valid_acc_ci=ci, n_seeds=n, n_eval=n_eval)


def test_compare_follows_the_numbers_and_both_noises():
    assert compare([_row('A', .6), _row('B', .7)], 'valid_acc')['best'] == 'B'
    one_seed = compare([_row('A', .8), _row('B', .7)], 'valid_acc')
    assert one_seed['significant'] is None and 'One seed only' in one_seed['text']
    clear = compare([_row('A', .80, .01, 2, 1000), _row('B', .70, .02, 2, 1000)], 'valid_acc')
    assert clear['significant'] is True and clear['lead'] == pytest.approx(.1)
    seeds_noisy = compare([_row('A', .80, .06, 2, 10000), _row('B', .76, .04, 2, 10000)], 'valid_acc')
    assert seeds_noisy['significant'] is False and 'inside the 95% seed interval' in seeds_noisy['text']
    small_set = compare([_row('A', .74, .001, 3, 100), _row('B', .70, .001, 3, 100)], 'valid_acc')  # +-8.6 on 100
    assert small_set['significant'] is False and 'within noise' in small_set['text'] and 'Wilson' in small_set['text']
    tie = compare([_row('A', .7), _row('B', .7)], 'valid_acc')  # an exact tie is a tie, even with one seed
    assert tie['decision'] == 'tie' and tie['text'].startswith('A and B both reach') and 'unproven' not in tie['text']
    assert mean_std([1, 3]) == (2.0, pytest.approx(2 ** .5))


def _run(valid, train, final_valid, final_train, min_loss=1.0, final_loss=1.0, epoch=3):
    return dict(best=dict(valid_accuracy=valid, train_accuracy=train), best_epoch=epoch, params=1_000_000,
                final=dict(valid_accuracy=final_valid, train_accuracy=final_train, valid_loss=final_loss),
                min_valid_loss=min_loss, wall_seconds=10.0, n_valid=1000)


def test_rows_and_overfitting_signs():
    row = classifier_row('A', SPEC, [_run(.6, .7, .55, .9, 1.0, 1.4), _run(.7, .8, .65, .95, 1.0, 1.2)])
    assert row.valid_acc == pytest.approx(.65) and row.n_seeds == 2 and row.params_M == 1.0
    assert row.valid_acc_ci == pytest.approx(seed_interval([.6, .7])) and row.n_eval == 1000
    assert row.final_gap == pytest.approx(.325) and row.valid_loss_rise == pytest.approx(.3)
    assert row.config == 'channels=32-64-128-256 blocks=2-2-2-2 act=relu stem=3x3'
    fine = classifier_row('B', SPEC, [_run(.6, .62, .6, .63)])
    text = overfitting_text([row, fine])
    assert 'A: train accuracy 32.5% above valid' in text and 'B: no clear overfitting' in text


def _fake_stage(out, stage, best, recipe, rows):
    folder = out / stage / '20260101-000000'; folder.mkdir(parents=True)
    write_json(folder / 'summary.json', dict(stage=stage, best=best, best_recipe=recipe.to_dict(), rows=rows,
                                             conclusion=f'{best} won', data_key=recipe.data_key(), profile=recipe.profile))


def _stage_row(name, acc):
    return dict(name=name, config='c', params_M=1.0, valid_acc=acc, valid_acc_ci=None, train_acc=acc + .2,
                final_gap=.2 if acc > .5 else .0, best_epoch=2, n_seeds=1)


def test_stage_chaining_hands_over_the_recipe(tmp_path, synthetic_tiny):
    base = resolve_data(scale_to_profile(replace(SPEC, data=str(synthetic_tiny)), 'quick'))
    opts = Options(out=str(tmp_path))
    recipe, reason = stage_choice(opts, 'stage3_1_channels', base)
    assert recipe == base and reason.startswith('default')
    chosen = replace(base, model=dict(base.model, channels=[64, 128, 256], blocks=[2, 2, 2]), lr=0.5)
    _fake_stage(tmp_path, 'stage3_1_channels', 'B', chosen, [_stage_row('A', .4), _stage_row('B', .6)])
    recipe, reason = stage_choice(opts, 'stage3_1_channels', base)
    assert recipe.model == chosen.model and recipe.lr == base.lr and 'B won' in reason  # the model only
    recipe, _ = stage_choice(Options(out=str(tmp_path), model_overrides=dict(act='gelu')), 'stage3_1_channels', base)
    assert recipe.model == dict(chosen.model, act='gelu')  # a model flag given on the command line wins


def test_experiments_table_analysis_follows_the_numbers(tmp_path):
    _fake_stage(tmp_path, 'stage2_baseline', 'baseline', SPEC, [_stage_row('baseline', .3)])
    _fake_stage(tmp_path, 'stage3_1_channels', 'B', SPEC, [_stage_row('A', .4), _stage_row('B', .6)])
    table = experiments_table(tmp_path, tmp_path)
    assert list(table['variant']) == ['Baseline', '3.1-A', '3.1-B']
    md = (tmp_path / 'experiments.md').read_text()
    assert 'Best valid accuracy among the comparisons (spec recipe): 3.1-B' in md and '3.1-B (20.0%)' in md
    assert 'Stages not run yet: stage3_2_blocks, stage3_3_activations, stage4_final' in md
    assert 'WARNING' not in md
    _fake_stage(tmp_path, 'stage3_2_blocks', 'A', replace(SPEC, classes='5'), [_stage_row('A', .5)])
    experiments_table(tmp_path, tmp_path)
    assert 'WARNING: these stages ran on different data' in (tmp_path / 'experiments.md').read_text()
    with pytest.raises(FileNotFoundError, match='no finished stage runs'):
        experiments_table(tmp_path / 'empty', tmp_path)
