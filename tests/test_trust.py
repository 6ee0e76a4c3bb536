"""Trust: the same seed gives the same numbers, no finished run is lost, verdicts rest on the right runs, errors are
one line. Every training script runs in this process through its `main(argv)` on tiny generated data (16 px)."""
import importlib, json, os, re, shutil, signal, subprocess, sys, time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from fastai_lab.data.moon import check_pair_sizes, moon_pairs
from fastai_lab.data.synthetic import make_moon_like
from fastai_lab.data.tiny_imagenet import load_tiny_imagenet
from fastai_lab import stage as jobs, train
from fastai_lab.lookup import latest_stage_summary
from fastai_lab.io import read_json
from fastai_lab.models import load_checkpoint, load_run_model

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
    monkeypatch.setenv('LAB_FIGURES', 'beside')  # A's summary waits for its figures, drawn while B trains
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
    monkeypatch.setenv('LAB_FIGURES', 'beside')
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
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, LAB_FIGURES='beside'))  # its drawing process dies with it
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


def test_two_jobs_give_the_numbers_of_one(tiny_cli, tmp_path, monkeypatch, capsys):
    # No OMP_NUM_THREADS: a run takes every core whether it runs alone or beside others (CPU float sums depend on
    # the thread count, so --jobs must not change it)
    monkeypatch.delenv('OMP_NUM_THREADS')
    main, before = main_of('stage3_1_channels'), torch.get_num_threads()
    try:
        main(tiny_cli('--out', tmp_path / 'one', '--jobs', '1'))
        main(tiny_cli('--out', tmp_path / 'two', '--jobs', '2'))
    finally: torch.set_num_threads(before)  # as conftest set it for the other tests
    for run in ('A-seed0', 'B-seed0'):
        one, = run_dirs(tmp_path / 'one', 'stage3_1_channels', run)
        two, = run_dirs(tmp_path / 'two', 'stage3_1_channels', run)
        threads = [read_json(d / 'config.json')['environment']['torch_threads'] for d in (one, two)]
        assert threads == [os.cpu_count()] * 2 and metrics(one) == metrics(two)
    assert f'each with {os.cpu_count()} torch thread(s), as alone' in capsys.readouterr().out


def test_a_job_has_the_environment_of_its_stage_not_of_the_job_server(monkeypatch):
    "--jobs processes fork from a server started once per process: each still gets the stage's environment of now."
    from concurrent.futures import ProcessPoolExecutor
    from fastai_lab import progress
    from fastai_lab.machine import selected_device
    monkeypatch.delenv('OMP_WAIT_POLICY', raising=False)
    ctx = jobs._job_context()
    assert os.environ['OMP_WAIT_POLICY'] == 'PASSIVE'  # on a CPU: runs that share the cores do not spin while idle
    monkeypatch.setenv('LAB_TEST_JOB_ENV', 'when the server started')
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        assert pool.submit(os.getpid).result() != os.getpid()  # the server runs (if no stage had started it)
        server_pid = pool.submit(os.getppid).result()
    monkeypatch.setenv('LAB_TEST_JOB_ENV', 'now')
    monkeypatch.delenv('OMP_NUM_THREADS')
    clock = progress.StageClock('stage', {}, 1, quiet=True)
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=jobs._init_worker,
                             initargs=(ctx.Value('i', 0), selected_device(), clock, dict(os.environ))) as pool:
        assert pool.submit(os.getenv, 'LAB_TEST_JOB_ENV').result() == 'now'
        assert pool.submit(os.getenv, 'OMP_NUM_THREADS').result() is None
        assert pool.submit(os.getppid).result() == server_pid  # a fork of the same server, not a new interpreter
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:  # what the initializer is for
        assert pool.submit(os.getenv, 'LAB_TEST_JOB_ENV').result() != 'now'


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


# ----- every image checked before the first epoch; no saved result says more than its data allows -------------------

def _truncate(path):
    path.write_bytes(path.read_bytes()[:200])
    return path


def on_data(argv, data):
    "A `tiny_cli` command line on another data folder."
    return [str(data) if i == 1 else a for i, a in enumerate(argv)]


@pytest.mark.parametrize('name, extra', [('stage4_final', ['--no-ablation']),
                                         ('task3_classifier128', ['--stem', '3x3s2', '--no-tta'])])
def test_a_bad_test_image_stops_the_stage_before_training_naming_it(tiny3, tiny_cli, tmp_path, capsys, name, extra):
    data = shutil.copytree(tiny3, tmp_path / 'tiny')
    bad = _truncate(sorted((data / 'val' / 'images').glob('*.JPEG'))[1])
    with pytest.raises(SystemExit) as stop: main_of(name)(on_data(tiny_cli(*extra, epochs=1), data))
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert stop.value.code == 2 and f"{bad}: not a readable image (" in err, err
    assert len(err.splitlines()) == 1 and 'epoch 0' not in captured.out  # nothing trained
    assert not any((tmp_path / 'out').glob(f'{name}/*'))


def test_a_bad_first_train_image_is_named_and_stage2_prints_no_model_first(tiny3, tiny_cli, tmp_path, capsys):
    data = shutil.copytree(tiny3, tmp_path / 'tiny')
    first = load_tiny_imagenet(data, n_classes=3).train[0][0]  # fastai's setup decodes it before anything else
    _truncate(first)
    with pytest.raises(SystemExit) as stop: main_of('stage2_baseline')(on_data(tiny_cli(), data))
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert stop.value.code == 2 and err.startswith(f"error: {first}: not a readable image") and len(err.splitlines()) == 1
    assert 'ResNet(' not in captured.out  # the architecture is printed once the data passed, not before the error
    assert not any((tmp_path / 'out').glob('stage2_baseline/*'))


def test_data_read_file_by_file_is_checked_whole_once(tiny3, tmp_path, monkeypatch):
    "Data too big for memory is not cached, but every image of it is decoded once all the same, before training."
    from fastai_lab.data import cache as device_data
    from fastai_lab.data.loaders import build_data, resolve_data
    from fastai_lab.recipe import SPEC, scale_to_profile
    data = shutil.copytree(tiny3, tmp_path / 'tiny', ignore=shutil.ignore_patterns('.lab-cache'))  # no caches yet
    recipe = resolve_data(replace(scale_to_profile(SPEC, 'quick'), data=str(data), classes='3', size=16, bs=8))
    bad = _truncate(load_tiny_imagenet(data, n_classes=3).valid[2][0])
    with pytest.raises(ValueError, match=f"^{re.escape(str(bad))}: not a readable image"):
        build_data(recipe, in_memory=False, say=False).check()
    shutil.copy(tiny3 / bad.relative_to(data), bad)
    checked = build_data(recipe, in_memory=False, say=False).check()
    assert checked.info['data_path'].startswith('file') and checked.caveats == []
    marks = list(device_data.cache_dir_for(data).glob('*.checked'))
    assert len(marks) == 3 and not list(device_data.cache_dir_for(data).glob('*.pt'))  # train, valid, test; no cache
    monkeypatch.setattr(device_data, '_do_item', lambda dl, i: pytest.fail('decoded again'))
    build_data(recipe, in_memory=False, say=False).check()  # the marks stand for the decode
    monkeypatch.undo()
    import random
    data = build_data(recipe, say=False)  # in memory: the check decodes (and caches) the test images
    before = random.getstate(), torch.get_rng_state()
    data.check()
    assert random.getstate() == before[0] and torch.equal(torch.get_rng_state(), before[1])  # no run's numbers move


def test_a_bad_real_frame_is_named_before_a_unet_trains(synthetic_moon, tmp_path, monkeypatch, capsys):
    "The real Kaggle frame every U-Net run is scored on after training (sim-to-real) is decoded up front too."
    from fastai_lab.data import loaders as lab_data
    real = shutil.copytree(synthetic_moon, tmp_path / 'real')
    render, ground = moon_pairs(real)[0]
    _truncate(render)
    monkeypatch.setattr(lab_data, 'real_moon_pair', lambda: (real, [(render, ground)]))
    with pytest.raises(SystemExit) as stop:
        main_of('task3_unet')(['--data', str(synthetic_moon), '--out', str(tmp_path / 'out'), '--quick', '--size', '16'])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and f"{render}: not a readable image" in err and len(err.splitlines()) == 1
    assert not any((tmp_path / 'out').glob('task3_unet/*'))


def test_a_one_frame_moon_set_says_it_is_not_held_out_in_every_result(tmp_path, capsys):
    moon = make_moon_like(tmp_path / 'moon', n=1, width=48, height=32)
    out = tmp_path / 'out'
    main_of('task3_unet')(['--data', str(moon), '--out', str(out), '--quick', '--epochs', '1', '--size', '32',
                           '--base', '8'])
    assert capsys.readouterr().out.count('WARNING: only 1 frame') == 1  # said once, up front
    stage = latest_stage_summary(out, 'task3_unet')
    folder = Path(stage['path'])
    assert any('NOT held out' in c for c in stage['caveats']) and 'held-out' not in stage['conclusion']
    assert 'NOT held out' in stage['conclusion']
    run = read_json(folder / 'unet-seed0' / 'summary.json')
    assert any('NOT held out' in c for c in run['caveats'])
    config = read_json(folder / 'unet-seed0' / 'config.json')['data']
    assert config['held_out'] is False and 'shared by train, valid and test' in config['split']
    table = (folder / 'table.md').read_text()
    assert '**Caveat:** only 1 frame' in table and 'held-out' not in table
    main_of('report')(['--out', str(out)])
    unet = (out / 'REPORT.md').read_text().split('### Task 3.2')[1].split('### Task 3.3')[0]
    assert '> **Caveat:** only 1 frame' in unet and 'one frame, shared by train, valid and test' in unet
    assert '1/1/1 train/valid/test' not in unet and 'held-out' not in unet


def test_masks_without_rock_have_no_iou_and_say_so(tmp_path, capsys):
    moon = make_moon_like(tmp_path / 'moon', n=6, width=48, height=32)
    for ground in (moon / 'images' / 'ground').iterdir():  # every mask black: ground, no rock anywhere
        Image.new('RGB', Image.open(ground).size).save(ground)
    out = tmp_path / 'out'
    main_of('task3_unet')(['--data', str(moon), '--out', str(out), '--quick', '--epochs', '2', '--size', '16',
                           '--base', '8'])
    printed = capsys.readouterr().out
    for split in ('train', 'valid', 'test'):
        assert printed.count(f'WARNING: no mask of the {split} split contains rock') == 1, split
    stage = latest_stage_summary(out, 'task3_unet')
    row, folder = stage['rows'][0], Path(stage['path'])
    assert row['iou'] is None and row['dice'] is None and row['test_iou'] is None  # undefined, not 1.000
    assert 0 <= row['pixel_acc'] <= 1
    assert 'valid IoU undefined (no rock pixels)' in stage['conclusion'] and '1.000' not in stage['conclusion']
    run = read_json(folder / 'unet-seed0' / 'summary.json')
    assert run['best_epoch'] == 1 and run['monitor'] == 'last epoch (valid_iou undefined)'
    assert pd.read_csv(folder / 'unet-seed0' / 'metrics.csv')['valid_iou'].isna().all()
    table = (folder / 'table.md').read_text()
    header, _, cells = table.splitlines()[2:5]
    cells = dict(zip(header.strip('|').split('|'), cells.strip('|').split('|')))
    assert cells[' iou '] == cells[' dice '] == cells[' test_iou '] == '  ' and 'no rock pixels' in table
    main_of('report')(['--out', str(out)])
    unet = (out / 'REPORT.md').read_text().split('### Task 3.2')[1].split('### Task 3.3')[0]
    assert 'An empty IoU or Dice cell: no rock pixels' in unet and '| 1.000 |' not in unet
    # data read file by file (too big for memory) finds the same, from its one decode of every frame
    from fastai_lab.data.loaders import build_data
    from fastai_lab.recipe import Recipe
    recipe = Recipe.from_dict(read_json(folder / 'unet-seed0' / 'config.json')['recipe'])
    assert len(build_data(recipe, in_memory=False, say=False).check(say=False).caveats) == 3


def test_a_batch_larger_than_the_train_set_is_recorded_as_used(tiny_cli, tmp_path, capsys):
    main_of('stage2_baseline')(tiny_cli('--bs', '100000', epochs=1))
    printed = capsys.readouterr().out
    run, = run_dirs(tmp_path / 'out', 'stage2_baseline', 'baseline-seed0')
    config = read_json(run / 'config.json')
    n_train = config['data']['n_train']
    assert config['data']['bs'] == n_train == 24 and config['recipe']['bs'] == 100000  # asked for, and used
    assert read_json(run / 'summary.json')['bs'] == 24
    assert printed.count('capped at the 24 training images') == 1  # said once, up front


def _unet_config(tmp_path):
    from fastai_lab.recipe import UNET
    path = tmp_path / 'unet-run' / 'config.json'
    path.parent.mkdir()
    path.write_text(json.dumps(dict(recipe=UNET.to_dict(), run='unet-seed0')))
    return path


@pytest.mark.parametrize('name, flags, message', [
    ('stage2_baseline', ['--from', '/nonexistent'],
     "--from /nonexistent: stage2_baseline.py reads no earlier stage (it trains its own recipe)"),
    ('stage3_1_channels', ['--from', '/nonexistent'], "--from /nonexistent: stage3_1_channels.py reads no earlier stage"),
    ('task3_unet', ['--classes', '5'], "--classes: not used by the U-Net (unet, from the script's recipe): it applies "
                                       "to classifiers (Tiny ImageNet) only"),
    ('stage2_baseline', ['--test-pct', '0.2'], "--test-pct: not used by the ResNet classifier"),
    ('stage2_baseline', ['--arch', 'unet', '--loss', 'bce_dice'],
     "--channels: not a model flag of the U-Net (unet, from --arch unet); its model flags are --act"),
    ('stage3_1_channels.', ['--arch', 'unet', '--loss', 'bce_dice'], "--arch unet: the model config {'channels': [32"),
    ('stage2_baseline', ['--config', 'UNET', '--channels', '32,64,128,256'],
     "--channels: not a model flag of the U-Net (unet, from CONFIG); its model flags are --base, --depth, --down, "
     "--up, --act"),
    ('stage4_final', ['--config', 'UNET', '--no-ablation'], "--ablation: not used with --config"),
    ('stage3_2_blocks', ['--config', 'UNET', '--from', '/somewhere'], "--from /somewhere: --config retrains"),
    ('run_all', ['--from', '/nonexistent'], "--from: run_all.py does not take it"),
])
def test_a_flag_the_invocation_would_ignore_is_refused(tiny_cli, tmp_path, capsys, name, flags, message):
    config = _unet_config(tmp_path)
    flags = [str(config) if f == 'UNET' else f for f in flags]
    plain = not name.startswith('stage') or name.endswith('.')  # else tiny_cli's command line, with ResNet model flags
    argv = ['--out', str(tmp_path / 'out'), '--quick', *flags] if plain else tiny_cli(*flags)
    name = name.rstrip('.')
    with pytest.raises(SystemExit) as stop: main_of(name)(argv)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and message.replace('CONFIG', str(config)) in err and len(err.splitlines()) == 1, err
    assert not [p for p in (tmp_path / 'out').rglob('*') if p.is_file()]


def test_from_a_run_folder_says_what_it_is(tiny_cli, tmp_path, capsys):
    run = tmp_path / 'stage3_1_channels' / '20260101-000000' / 'A-seed0'
    run.mkdir(parents=True)
    (run / 'summary.json').write_text(json.dumps(dict(run='A-seed0', best_epoch=1)))
    (run / 'config.json').write_text('{}')
    with pytest.raises(SystemExit): main_of('stage3_2_blocks')(tiny_cli('--from', run))
    err = capsys.readouterr().err
    assert f"--from {run}: one training run (a variant and seed) of the stage in {run.parent}, not a stage folder; " \
           f"expected a finished stage3_1_channels folder" in err and 'None' not in err


def test_an_interrupt_says_ctrl_c(tiny_cli, monkeypatch, capsys):
    _interrupt_after_first_epoch_of('baseline-seed0', monkeypatch)
    with pytest.raises(SystemExit): main_of('stage2_baseline')(tiny_cli())
    assert 'interrupted (Ctrl-C): finished runs are kept' in capsys.readouterr().err


def test_evaluate_of_a_corrupt_checkpoint_leaves_no_folder(tmp_path, capsys):
    run = tmp_path / 'stage' / '20260101-000000' / 'baseline-seed0'
    run.mkdir(parents=True)
    for name in ('config.json', 'summary.json'): (run / name).write_text('{}')
    (run / 'model.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(SystemExit) as stop: main_of('evaluate')([str(run)])
    assert stop.value.code == 2 and 'not a readable checkpoint' in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ['config.json', 'model.pth', 'summary.json']  # no evaluation/


def test_epochs_count_from_0_on_the_console_in_tables_and_in_the_report(tiny_cli, tmp_path, capsys):
    main_of('stage2_baseline')(tiny_cli('--lr', '1e-9'))  # a learning rate that changes nothing: epoch 0 stays best
    printed = capsys.readouterr().out
    assert 'baseline-seed0 epoch 0 (1 of 2):' in printed and 'baseline-seed0 epoch 1 (2 of 2):' in printed
    run, = run_dirs(tmp_path / 'out', 'stage2_baseline', 'baseline-seed0')
    best = read_json(run / 'summary.json')['best_epoch']
    assert f"at epoch {best} (epochs count from 0" in printed
    table = pd.read_csv(run.parent / 'table.csv')
    assert table['best_epoch'].iloc[0] == best and 'epochs count from 0' in (run.parent / 'table.md').read_text()
    main_of('report')(['--out', str(tmp_path / 'out')])
    base = (tmp_path / 'out' / 'REPORT.md').read_text().split('### Stage 2')[1].split('### Stage 3.1')[0]
    row = next(line for line in base.splitlines() if line.startswith('| baseline |')).split('|')
    assert row[7].strip() == str(best) and 'epochs count from 0' in base
