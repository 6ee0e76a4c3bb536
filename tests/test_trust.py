"""Trust: the same seed gives the same numbers, no finished run is lost, verdicts rest on the right runs, errors are
one line. Every training script runs in this process through its `main(argv)` on tiny generated data (16 px)."""
import importlib, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from data.moon import check_pair_sizes, moon_pairs
from data.tiny_imagenet import load_tiny_imagenet
from lab import jobs, train
from lab.lookup import latest_stage_summary
from lab.io import read_json
from lab.learner import load_checkpoint, load_run_model

ROOT = Path(__file__).resolve().parents[1]


def main_of(name): return importlib.import_module(f'scripts.{name}').main


def run_dirs(out, stage, run):
    return sorted((Path(out) / stage).glob(f'*/{run}'))


def metrics(run_dir):
    "A run's metrics.csv without its wall-clock column: every number the run computed, as written (bit for bit)."
    return pd.read_csv(Path(run_dir) / 'metrics.csv', dtype=str).drop(columns='seconds').to_csv(index=False)


def test_same_seed_same_numbers_and_config_rerun(tiny_cli, tmp_path):
    main = main_of('stage2_baseline')
    main(tiny_cli()); main(tiny_cli())
    first, second = run_dirs(tmp_path / 'out', 'stage2_baseline', 'baseline-seed0')
    assert metrics(first) == metrics(second)  # bit-identical, training and valid numbers
    assert len(pd.read_csv(first / 'metrics.csv')) == 2
    # --config reruns that run exactly, into <out>/rerun/, outside the chain of stage choices
    main(['--config', str(first / 'config.json'), '--out', str(tmp_path / 'again')])
    rerun, = run_dirs(tmp_path / 'again', 'rerun', 'baseline-seed0')
    assert metrics(rerun) == metrics(first)
    assert latest_stage_summary(tmp_path / 'again', 'stage2_baseline') is None
    # another seed: other numbers
    main(tiny_cli('--seeds', '1,'))  # a list of one seed
    other, = run_dirs(tmp_path / 'out', 'stage2_baseline', 'baseline-seed1')
    assert metrics(other) != metrics(first)


def test_config_records_the_provenance_and_the_checkpoint_its_recipe(tiny_cli, tmp_path, tiny3):
    main_of('stage2_baseline')(tiny_cli())
    run, = run_dirs(tmp_path / 'out', 'stage2_baseline', 'baseline-seed0')
    config = json.loads((run / 'config.json').read_text())
    recipe = config['recipe']
    wnids = load_tiny_imagenet(tiny3, n_classes=3).wnids
    assert recipe['data'] == str(tiny3.resolve()) and recipe['classes'] == ','.join(wnids)
    assert (recipe['split_seed'], recipe['valid_pct'], recipe['size'], recipe['augment'], recipe['profile']) == \
           (42, 0.2, 16, 'flip', 'quick')
    assert (recipe['epochs'], recipe['bs'], recipe['opt'], recipe['lr'], recipe['wd'], recipe['schedule'], recipe['seed']) == \
           (2, 8, 'adam', 1e-3, 0.0, 'constant', 0)
    env = config['environment']
    assert env['git_commit'] and env['git_dirty'] in (True, False) and env['torch'] == torch.__version__ and env['fastai']
    assert config['data']['wnids'] == wnids and config['data']['source'] == 'synthetic'
    stage = latest_stage_summary(tmp_path / 'out', 'stage2_baseline')
    assert stage['data_key']['classes'] == recipe['classes'] and stage['profile'] == 'quick'
    # the checkpoint rebuilds its own model from the recipe stored in it
    model, saved = load_checkpoint(run / 'model.pth')
    assert saved.to_dict() == recipe and model.channels == (4, 8, 8, 16) and model.head[-1].out_features == 3
    state = torch.load(run / 'model.pth', weights_only=True)['model']
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not (run / 'last.pth').exists()  # the resume state goes once the run is finished


def _interrupt_after_first_epoch_of(run_name, monkeypatch):
    "Make the first epoch of `run_name` end in a KeyboardInterrupt, after its checkpoints are written (Ctrl-C)."
    after_epoch = train.Checkpoints.after_epoch
    def interrupting(self):
        after_epoch(self)
        if self.run_dir.name == run_name and self.epoch == 0: raise KeyboardInterrupt
    monkeypatch.setattr(train.Checkpoints, 'after_epoch', interrupting)


def test_ctrl_c_keeps_finished_runs_and_resume_continues(tiny_cli, tmp_path, monkeypatch, capsys):
    stage = main_of('stage3_1_channels')
    main = lambda argv: stage([*argv, '--schedule', 'one_cycle'])  # one-cycle: numpy lrs in the optimiser state
    main(tiny_cli('--out', tmp_path / 'whole'))  # the same stage, never interrupted
    _interrupt_after_first_epoch_of('B-seed0', monkeypatch)
    with pytest.raises(SystemExit) as stop: main(tiny_cli())
    assert stop.value.code == 130 and 'rerun the same command with --resume' in capsys.readouterr().err
    folder, = (tmp_path / 'out' / 'stage3_1_channels').iterdir()
    state = read_json(folder / 'stage.json')
    assert state['status'] == 'interrupted' and not (folder / 'summary.json').exists()
    assert (folder / 'A-seed0' / 'summary.json').is_file() and (folder / 'B-seed0' / 'last.pth').is_file()
    assert latest_stage_summary(tmp_path / 'out', 'stage3_1_channels') is None  # never read as finished
    torch.load(folder / 'B-seed0' / 'last.pth', weights_only=True)  # plain numbers and tensors only
    a_mtime = (folder / 'A-seed0' / 'model.pth').stat().st_mtime_ns
    monkeypatch.undo()
    main(tiny_cli('--resume'))
    assert 'resuming' in capsys.readouterr().out
    assert (folder / 'A-seed0' / 'model.pth').stat().st_mtime_ns == a_mtime  # A was not trained again
    assert read_json(folder / 'stage.json')['status'] == 'finished' and (folder / 'summary.json').is_file()
    whole, = (tmp_path / 'whole' / 'stage3_1_channels').iterdir()
    for run in ('A-seed0', 'B-seed0'):  # B continued from its first epoch with the numbers it would have had
        assert metrics(folder / run) == metrics(whole / run)
    main(tiny_cli('--resume'))
    assert 'already finished' in capsys.readouterr().out


def test_a_failed_run_keeps_the_others(tiny_cli, tmp_path, monkeypatch, capsys):
    real = jobs.train_run
    def failing(recipe, run_dir, options):
        if Path(run_dir).name == 'A-seed0': raise RuntimeError('out of luck')
        return real(recipe, run_dir, options)
    monkeypatch.setattr(jobs, 'train_run', failing)
    with pytest.raises(SystemExit) as stop: main_of('stage3_1_channels')(tiny_cli())
    err = capsys.readouterr().err
    assert stop.value.code == 2 and 'A-seed0: RuntimeError: out of luck' in err and len(err.strip().splitlines()) == 3
    folder, = (tmp_path / 'out' / 'stage3_1_channels').iterdir()
    assert (folder / 'B-seed0' / 'summary.json').is_file() and read_json(folder / 'stage.json')['status'] == 'failed'


def test_sigterm_keeps_finished_runs(tiny_cli, tmp_path, monkeypatch):
    after_epoch = train.Checkpoints.after_epoch
    def terminated(self):  # as `kill <pid>` during B's first epoch
        after_epoch(self)
        if self.run_dir.name == 'B-seed0': os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(train.Checkpoints, 'after_epoch', terminated)
    with pytest.raises(SystemExit) as stop: main_of('stage3_1_channels')(tiny_cli())
    folder, = (tmp_path / 'out' / 'stage3_1_channels').iterdir()
    assert stop.value.code == 130 and read_json(folder / 'stage.json')['status'] == 'interrupted'
    assert (folder / 'A-seed0' / 'summary.json').is_file() and (folder / 'B-seed0' / 'last.pth').is_file()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is the CLI's only while it runs


def test_sigkill_keeps_finished_runs_and_resume_completes(tiny_cli, tmp_path):
    proc = subprocess.Popen([sys.executable, str(ROOT / 'scripts' / 'stage3_1_channels.py'), *tiny_cli(epochs=15)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list((tmp_path / 'out').glob('stage3_1_channels/*/A-seed0/summary.json')) and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler runs, stage.json still says 'running' for a process that is gone
    err = proc.communicate(timeout=60)[1]
    folder, = (tmp_path / 'out' / 'stage3_1_channels').iterdir()
    assert (folder / 'A-seed0' / 'summary.json').is_file() and not (folder / 'summary.json').exists(), err
    assert read_json(folder / 'stage.json')['status'] == 'running'
    main_of('stage3_1_channels')(tiny_cli('--resume', epochs=15))
    assert (folder / 'summary.json').is_file() and (folder / 'B-seed0' / 'summary.json').is_file()


def test_two_jobs_give_the_numbers_of_one(tiny_cli, tmp_path, monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')  # CPU float sums depend on the thread count: hold it equal
    main = main_of('stage3_1_channels')
    main(tiny_cli('--out', tmp_path / 'one', '--jobs', '1'))
    main(tiny_cli('--out', tmp_path / 'two', '--jobs', '2'))
    for run in ('A-seed0', 'B-seed0'):
        one, = run_dirs(tmp_path / 'one', 'stage3_1_channels', run)
        two, = run_dirs(tmp_path / 'two', 'stage3_1_channels', run)
        assert metrics(one) == metrics(two)


def test_a_stage_on_other_classes_is_not_reused(tiny_cli, tmp_path, capsys):
    main_of('stage3_2_blocks')(tiny_cli('--classes', '2', epochs=1))
    assert latest_stage_summary(tmp_path / 'out', 'stage3_2_blocks')['classes'].count(',') == 1
    capsys.readouterr()
    main_of('stage3_3_activations')(tiny_cli(epochs=1))
    printed = capsys.readouterr().out
    assert 'is not used: it ran on other data, classes' in printed and 'no finished stage3_2_blocks run on this data' in printed
    stage = latest_stage_summary(tmp_path / 'out', 'stage3_3_activations')
    assert stage['chosen_from'].startswith('default')
    folder = Path(stage['path'])  # the statistics of every run, and the four side by side
    assert (folder / 'statistics_per_layer.png').is_file() and (folder / 'gradients_over_training.png').is_file()
    grads = pd.read_csv(folder / 'D-seed0' / 'gradient_stats.csv')
    assert {'step', 'layer', 'grad_norm', 'weight_norm'} <= set(grads.columns)
    assert grads[grads.step == grads.step.max()]['grad_norm'].gt(0).all()
    assert pd.read_csv(folder / 'A-seed0' / 'activation_stats.csv')['dead'].between(0, 1).all()
    assert all(0 < r['dead_share'] < 1 and r['grad_first_over_last'] > 0 for r in stage['rows'])
    for label, act in zip('ABCD', ('relu', 'leakyrelu', 'elu', 'gelu')):  # the activation names, not the config text
        assert f'\n{label} {act}: valid ' in printed


@pytest.mark.parametrize('flags, message', [
    (['--epochs', '0'], "--epochs 0: expected a whole number >= 1"),
    (['--epochs', '-3'], "--epochs -3: expected a whole number >= 1"),
    (['--seeds', '0,0'], "--seeds '0,0': each seed may appear once"),
    (['--seeds', ','], "--seeds ',': expected at least one seed"),
    (['--seeds', 'two'], "--seeds 'two': expected a count like 2"),
    (['--bs', '0'], "--bs 0: expected a whole number >= 1"),
    (['--opt', 'rmsprop'], "--opt 'rmsprop': expected one of adam, adamw, sgd"),
    (['--classes', '7'], "--classes '7':"),
    (['--augment', 'wild'], "--augment 'wild': expected one of"),
    (['--jobs', '0'], "--jobs '0': expected a whole number >= 1 or auto"),
    (['--lr', 'fast'], "argument --lr: invalid float value: 'fast'"),
    (['--config', 'nowhere/config.json'], "nowhere/config.json: no such file"),
])
def test_bad_flags_give_one_line_and_leave_nothing(tiny_cli, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as stop: main_of('stage2_baseline')(tiny_cli(*flags))
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not any((tmp_path / 'out').glob('stage2_baseline/*'))


def test_debug_shows_the_traceback(tiny_cli, capsys):
    with pytest.raises(ValueError, match='--epochs 0'): main_of('stage2_baseline')(tiny_cli('--epochs', '0', '--debug'))


def test_a_bad_image_stops_the_run_up_front_naming_it(tiny3, tmp_path, capsys):
    data = shutil.copytree(tiny3, tmp_path / 'tiny')
    bad = sorted((data / 'train').glob('*/images/*.JPEG'))[3]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    (bad.parent / '._n90000000_0.JPEG').write_bytes(b'\0\5\26\7 AppleDouble')  # macOS litter: skipped, not an error
    with pytest.raises(SystemExit):
        main_of('stage2_baseline')(['--data', str(data), '--out', str(tmp_path / 'out'), '--quick', '--size', '16',
                                    '--classes', '3', '--channels', '4,8,8,16', '--blocks', '1,1,1,1'])
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and len(err.splitlines()) == 1
    assert not any((tmp_path / 'out').glob('stage2_baseline/*'))  # nothing was trained: nothing is left


def test_appledouble_files_are_not_images(tiny3, tmp_path):
    data = shutil.copytree(tiny3, tmp_path / 'tiny')
    folder = next((data / 'train').glob('*/images'))
    (folder / f'._{next(folder.iterdir()).name}').write_bytes(b'\0\5\26\7')
    assert len(load_tiny_imagenet(data, n_classes=3).train) == len(load_tiny_imagenet(tiny3, n_classes=3).train)


def test_a_mask_of_another_aspect_is_refused(synthetic_moon, tmp_path):
    root = shutil.copytree(synthetic_moon, tmp_path / 'moon')
    render, ground = moon_pairs(root)[2]
    Image.open(ground).resize((64, 64)).save(ground)  # the renders are 96x64
    with pytest.raises(ValueError, match=f"{ground}: mask of 64x64 px for a render of 96x64 px"):
        check_pair_sizes(moon_pairs(root))


def test_a_corrupt_checkpoint_is_named_without_unsafe_advice(tmp_path):
    bad = tmp_path / 'model.pth'
    bad.write_bytes(b'not a checkpoint at all')
    with pytest.raises(ValueError) as e: load_checkpoint(bad)
    assert str(bad) in str(e.value) and 'not a readable checkpoint' in str(e.value) and 'weights_only' not in str(e.value)
    with pytest.raises(FileNotFoundError, match='no such run folder'): load_run_model(tmp_path / 'missing')


def test_every_training_script_lists_the_same_common_flags():
    common = ['--data', '--classes', '--size', '--augment', '--no-augment', '--opt', '--lr', '--wd', '--bs', '--epochs',
              '--seeds', '--jobs', '--resume', '--config', '--from', '--lr-find', '--out', '--quick', '--full',
              '--label-smoothing', '--schedule', '--precision', '--debug']
    for name in ('stage2_baseline', 'stage3_1_channels', 'stage3_2_blocks', 'stage3_3_activations', 'stage4_final',
                 'task3_classifier128', 'task3_unet', 'task3_unet_backbone', 'run_all'):
        text = main_of(name).parser().format_help()
        missing = [f for f in common if f'{f} ' not in text and f'{f},' not in text and f'{f}\n' not in text]
        assert not missing, (name, missing)
