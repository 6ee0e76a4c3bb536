"Shared machinery: result folders, the run-folder contract, seeds, stage chaining and computed conclusions."
import json

import pandas as pd
import pytest
import torch
from fastai.data.core import DataLoaders
from torch.utils.data import TensorDataset

from arch.resnet import ResNet, resnet_splitter
from lab.report import compare, mean_std
from lab.runs import latest_stage_summary, parse_seeds, stage_dir, write_json
from lab.stages import BASELINE, aggregate_runs, experiments_table, overfitting_text, previous_choice
from lab.train import fit_run, make_learner


def test_stage_dir_publishes_on_success_and_leaves_nothing_on_failure(tmp_path):
    with stage_dir(tmp_path, 'stage') as a: (a / 'x').write_text('1')
    with stage_dir(tmp_path, 'stage') as b: (b / 'x').write_text('2')
    done = sorted(p.name for p in (tmp_path / 'stage').iterdir())
    assert len(done) == 2 and not any(n.startswith('.') for n in done)  # the second run did not overwrite the first
    with pytest.raises(RuntimeError):
        with stage_dir(tmp_path, 'stage') as c:
            (c / 'half').write_text('written'); raise RuntimeError('boom')
    assert sorted(p.name for p in (tmp_path / 'stage').iterdir()) == done


def test_latest_stage_summary_reads_the_newest_finished_run(tmp_path):
    assert latest_stage_summary(tmp_path, 'stage3_1_channels') is None
    for stamp, best in (('20260101-000000', 'A'), ('20260102-000000', 'B')):
        (tmp_path / 'stage3_1_channels' / stamp).mkdir(parents=True)
        write_json(tmp_path / 'stage3_1_channels' / stamp / 'summary.json', dict(best=best))
    (tmp_path / 'stage3_1_channels' / '.20260103-000000.partial').mkdir()
    write_json(tmp_path / 'stage3_1_channels' / '.20260103-000000.partial' / 'summary.json', dict(best='C'))
    assert latest_stage_summary(tmp_path, 'stage3_1_channels')['best'] == 'B'


def test_write_json_cleans_values(tmp_path):
    write_json(tmp_path / 'a.json', dict(x=float('nan'), t=torch.tensor(1.5), p=tmp_path))
    assert json.loads((tmp_path / 'a.json').read_text()) == dict(x=None, t=1.5, p=str(tmp_path))


def test_parse_seeds():
    assert parse_seeds('2') == [0, 1] and parse_seeds('3,5') == [3, 5] and parse_seeds([1]) == [1]
    with pytest.raises(ValueError, match='--seeds'): parse_seeds('two')
    with pytest.raises(ValueError, match='--seeds'): parse_seeds('0')


def _tiny_dls(n=16, classes=3):
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, classes, (n,), generator=g))
    return DataLoaders.from_dsets(ds, ds, bs=8)


def test_fit_run_writes_the_run_folder_contract(tmp_path):
    model = ResNet((8, 16, 32), (1, 1, 1), n_classes=3)
    learn = make_learner(model, _tiny_dls(), resnet_splitter)
    with learn.no_bar():
        summary = fit_run(learn, tmp_path / 'run', epochs=3, lr=1e-2, config=dict(name='tiny'), seed=7)
    run = tmp_path / 'run'
    for f in ('config.json', 'metrics.csv', 'summary.json', 'model.pth', 'model.txt', 'accuracy.png', 'loss.png'):
        assert (run / f).is_file(), f
    history = pd.read_csv(run / 'metrics.csv')
    assert list(history.columns) == ['epoch', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy', 'seconds']
    assert list(history['epoch']) == [0, 1, 2] and (history['seconds'] > 0).all()
    config = json.loads((run / 'config.json').read_text())
    assert config['seed'] == 7 and config['config'] == dict(name='tiny') and 'torch' in config['environment']
    assert config['precision'] == ('bf16 mixed' if torch.cuda.is_available() else 'fp32')
    assert summary['best_epoch'] == int(history['epoch'][history['valid_accuracy'].idxmax()])
    assert summary['best']['valid_accuracy'] == pytest.approx(history['valid_accuracy'].max())
    assert summary['min_valid_loss'] == pytest.approx(history['valid_loss'].min())
    assert summary['params'] == model.n_params and summary['checkpoint'] == 'model.pth'
    assert json.loads((run / 'summary.json').read_text())['final']['epoch'] == 2
    assert 'parameters: ' in (run / 'model.txt').read_text()


def test_make_learner_precision_and_optimiser_choice():
    from fastai.callback.fp16 import MixedPrecision
    model = ResNet((8, 16, 32), (1, 1, 1), n_classes=3)
    has_mp = lambda learn: any(isinstance(cb, MixedPrecision) for cb in learn.cbs)
    assert has_mp(make_learner(model, _tiny_dls(), resnet_splitter, bf16=True))
    assert not has_mp(make_learner(model, _tiny_dls(), resnet_splitter, bf16=False))
    with pytest.raises(ValueError, match="--opt 'rmsprop'"):
        make_learner(model, _tiny_dls(), resnet_splitter, opt='rmsprop')


def _row(name, acc, std=0.0, n=1):
    return dict(name=name, valid_acc=acc, valid_acc_std=std, n_seeds=n)


def test_compare_follows_the_numbers_and_the_noise():
    assert compare([_row('A', .6), _row('B', .7)], 'valid_acc')['best'] == 'B'
    assert compare([_row('A', .8), _row('B', .7)], 'valid_acc')['best'] == 'A'
    one_seed = compare([_row('A', .8), _row('B', .7)], 'valid_acc')
    assert one_seed['significant'] is None and 'One seed only' in one_seed['text']
    clear = compare([_row('A', .80, .01, 2), _row('B', .70, .02, 2)], 'valid_acc')
    assert clear['significant'] is True and clear['lead'] == pytest.approx(.1)
    noisy = compare([_row('A', .72, .05, 2), _row('B', .70, .04, 2)], 'valid_acc')
    assert noisy['significant'] is False and 'not distinguishable' in noisy['text']
    assert mean_std([1, 3]) == (2.0, pytest.approx(2 ** .5))
    assert compare([_row('A', .7), _row('B', .7)], 'valid_acc')['text'].startswith('Tie: A and B')


def _run(valid, train, final_valid, final_train, min_loss=1.0, final_loss=1.0, epoch=3):
    return dict(best=dict(valid_accuracy=valid, train_accuracy=train), best_epoch=epoch, params=1_000_000,
                final=dict(valid_accuracy=final_valid, train_accuracy=final_train, valid_loss=final_loss),
                min_valid_loss=min_loss, wall_seconds=10.0)


def test_aggregate_and_overfitting_signs():
    row = aggregate_runs('A', BASELINE, [_run(.6, .7, .55, .9, 1.0, 1.4), _run(.7, .8, .65, .95, 1.0, 1.2)])
    assert row['valid_acc'] == pytest.approx(.65) and row['n_seeds'] == 2 and row['params_M'] == 1.0
    assert row['final_gap'] == pytest.approx(.325) and row['valid_loss_rise'] == pytest.approx(.3)
    fine = aggregate_runs('B', BASELINE, [_run(.6, .62, .6, .63)])
    text = overfitting_text([row, fine])
    assert 'A: train accuracy 32.5% above valid' in text and 'B: no clear overfitting' in text


def _fake_stage(out, stage, best, cfg, rows):
    folder = out / stage / '20260101-000000'; folder.mkdir(parents=True)
    write_json(folder / 'summary.json', dict(stage=stage, best=best, best_config=cfg, rows=rows, conclusion=f'{best} won',
                                             data_source='real', profile='quick'))


def _stage_row(name, acc):
    return dict(name=name, config='c', params_M=1.0, valid_acc=acc, valid_acc_std=0.0, train_acc=acc + .2,
                final_gap=.2 if acc > .5 else .0, best_epoch=2, n_seeds=1)


def test_stage_chaining_reads_the_previous_choice(tmp_path):
    cfg, reason = previous_choice(tmp_path, 'stage3_1_channels', BASELINE)
    assert cfg == BASELINE and reason.startswith('default')
    chosen = dict(BASELINE, channels=[64, 128, 256], blocks=[2, 2, 2])
    _fake_stage(tmp_path, 'stage3_1_channels', 'B', chosen, [_stage_row('A', .4), _stage_row('B', .6)])
    cfg, reason = previous_choice(tmp_path, 'stage3_1_channels', BASELINE)
    assert cfg == chosen and 'B won' in reason


def test_experiments_table_analysis_follows_the_numbers(tmp_path):
    _fake_stage(tmp_path, 'stage2_baseline', 'baseline', BASELINE, [_stage_row('baseline', .3)])
    _fake_stage(tmp_path, 'stage3_1_channels', 'B', BASELINE, [_stage_row('A', .4), _stage_row('B', .6)])
    table = experiments_table(tmp_path, tmp_path)
    assert list(table['variant']) == ['Baseline', '3.1-A', '3.1-B']
    md = (tmp_path / 'experiments.md').read_text()
    assert 'Best valid accuracy: 3.1-B' in md and 'Overfitting signs' in md and '3.1-B (20.0%)' in md
    assert 'Stages not run yet: stage3_2_blocks, stage3_3_activations, stage4_final' in md
    with pytest.raises(FileNotFoundError, match='no finished stage runs'):
        experiments_table(tmp_path / 'empty', tmp_path)
