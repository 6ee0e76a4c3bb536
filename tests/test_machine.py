"""Device and precision (lab.machine) with the accelerators mocked, the MPS fallbacks, and the progress and time
estimate lines of a run whose epochs are slow (lab.progress; a fake host clock makes every batch last a second)."""
import importlib, itertools, json, re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fastai.callback.fp16 import AMPMode, MixedPrecision
from fastai.data.core import DataLoaders
from fasttransform import Transform
from torch.utils.data import TensorDataset

from fastai_lab.arch.resnet import ResNet
from fastai_lab import machine, progress, stage as jobs
from fastai_lab.data import device as device_data
from fastai_lab.learner import make_learner
from fastai_lab.recipe import SPEC, pick_profile
from fastai_lab.progress import duration, estimate_line

CARDS = {'T4': ('Tesla T4', 7, 5), 'V100': ('Tesla V100-SXM2-16GB', 7, 0), 'A100': ('NVIDIA A100-SXM4-80GB', 8, 0),
         'H200': ('NVIDIA H200', 9, 0)}


@pytest.fixture
def accelerators(monkeypatch):
    """`accelerators(*cards, mps=False)`: this machine seen with those CUDA cards (keys of CARDS) and/or Apple's MPS.
    The process's device choice, what it has said and fastai's default device are restored afterwards."""
    import fastai.torch_core
    monkeypatch.setattr(machine, '_selected', 'auto')
    monkeypatch.setattr(machine, '_said', set())
    monkeypatch.setattr(fastai.torch_core.defaults, 'use_cuda', fastai.torch_core.defaults.use_cuda)

    def mock(*cards, mps=False):
        def props(device=None):
            index = device if isinstance(device, int) else (torch.device(device).index if device is not None else 0)
            name, major, minor = CARDS[cards[index or 0]]
            return SimpleNamespace(name=name, major=major, minor=minor, total_memory=16 * 2**30)
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: bool(cards))
        monkeypatch.setattr(torch.cuda, 'device_count', lambda: len(cards))
        monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
        monkeypatch.setattr(torch.cuda, 'set_device', lambda device: None)
        monkeypatch.setattr(torch.cuda, 'get_device_properties', props)
        monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: mps)
    return mock


def learner_on(device, monkeypatch, precision='auto'):
    "make_learner for a tiny ResNet on loaders that say they are on `device` (nothing is moved: no real GPU here)."
    monkeypatch.setattr(torch.nn.Module, 'to', lambda self, *a, **k: self)
    ds = TensorDataset(torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,)))
    dls = DataLoaders.from_dsets(ds, ds, bs=4)
    dls.device = torch.device(device)
    from dataclasses import replace
    return make_learner(replace(SPEC, precision=precision), ResNet((8, 16, 32), (1, 1, 1), n_classes=3), dls)


def mixed_precision(learn):
    "The learner's MixedPrecision callback, set up as at the start of a fit (its GradScaler made), or None."
    cb = next((cb for cb in learn.cbs if isinstance(cb, MixedPrecision)), None)
    if cb is not None: cb.before_fit()
    return cb


# ----- device and precision ---------------------------------------------------------------------------------------

def test_capability_7_5_gives_fp16_with_a_loss_scaler(accelerators, monkeypatch, capsys):
    accelerators('T4')
    assert machine.select_device() == torch.device('cuda', 0) and machine.has_gpu()
    info = machine.announce()
    assert (info['precision'], info['precision_words']) == ('fp16', 'fp16 mixed (loss scaling)')
    assert 'no native bf16 (compute capability 7.5 < 8.0)' in info['precision_reason']
    assert 'Tesla T4' in capsys.readouterr().out
    learn = learner_on('cuda:0', monkeypatch)
    cb = mixed_precision(learn)
    assert cb.amp_mode == AMPMode.FP16 and learn.scaler.is_enabled()  # fp16 needs loss scaling: the scaler is on
    assert learn.opt_func.keywords['opt'].keywords == dict(fused=True)  # torch's fused Adam on CUDA


@pytest.mark.parametrize('card', ['A100', 'H200'])
def test_capability_8_and_9_give_bf16(card, accelerators, monkeypatch):
    accelerators(card)
    assert machine.resolve_precision('auto')[0] == 'bf16'
    info = machine.announce()
    assert info['precision_words'] == 'bf16 mixed' and f'compute capability {CARDS[card][1]}.0' in info['device_name']
    learn = learner_on('cuda:0', monkeypatch)
    cb = mixed_precision(learn)
    assert cb.amp_mode == AMPMode.BF16 and not learn.scaler.is_enabled()  # bf16 has fp32's range: no scaling
    # fp16 may still be asked for on these cards (the GPU check measures its scaler path on an H200)
    assert mixed_precision(learner_on('cuda:0', monkeypatch, 'fp16')).amp_mode == AMPMode.FP16


def test_mps_gives_mps_in_fp32_and_the_full_profile(accelerators, monkeypatch, capsys):
    accelerators(mps=True)
    assert machine.select_device() == torch.device('mps') and machine.has_gpu() and machine.n_gpus() == 0
    info = machine.announce()
    assert (info['device'], info['precision']) == ('mps', 'fp32') and 'MPS' in info['device_reason']
    assert pick_profile() == 'full' and "Apple's MPS GPU: the full profile runs" in capsys.readouterr().out
    assert jobs.resolve_jobs('auto', 4) == 1  # several runs per GPU is for CUDA
    learn = learner_on('mps', monkeypatch)
    assert mixed_precision(learn) is None and learn.opt_func.keywords['opt'].keywords == {}


def test_no_accelerator_gives_the_cpu_in_fp32_and_the_quick_profile(accelerators, capsys):
    accelerators()
    assert machine.select_device() == torch.device('cpu') and not machine.has_gpu()
    info = machine.announce()
    assert (info['device'], info['precision'], info['device_reason']) == ('cpu', 'fp32', 'auto: no CUDA or MPS GPU')
    assert pick_profile() == 'quick' and 'no GPU in use' in capsys.readouterr().out
    machine.announce()
    assert capsys.readouterr().out == ''  # said once per process


def test_cuda_choices_and_the_gpus_jobs_spread_over(accelerators, monkeypatch):
    accelerators('T4', 'A100')
    machine.select_device('cuda')
    assert machine.n_gpus() == 2 and machine.resolve_precision()[0] == 'fp16'  # this process's GPU: cuda:0
    assert machine.select_device('cuda:1') == torch.device('cuda', 1) and machine.n_gpus() == 1
    assert machine.resolve_precision()[0] == 'bf16' and machine.machine_info()['device_reason'] == '--device cuda:1'
    assert machine.select_device('cpu') == torch.device('cpu') and machine.n_gpus() == 0 and not machine.has_gpu()
    assert machine.resolve_precision()[0] == 'fp32'
    monkeypatch.setenv('WORLD_SIZE', '2')  # torchrun: each process has its own GPU
    with pytest.raises(ValueError, match="--device cuda:1: under torchrun each process takes its LOCAL_RANK's GPU"):
        machine.select_device('cuda:1')


@pytest.mark.parametrize('cards, mps, argv, message', [
    ((), False, ['--device', 'cuda'], "--device cuda: this machine has no CUDA GPU"),
    ((), False, ['--device', 'mps'], "--device mps: Apple's MPS GPU is not available here"),
    (('T4', 'T4'), False, ['--device', 'cuda:2'], "--device cuda:2: only 2 CUDA GPU(s) visible here"),
    ((), False, ['--device', 'tpu'], "--device 'tpu': expected auto, cpu, cuda, cuda:N"),
    (('T4',), False, ['--precision', 'bf16'], "--precision bf16: the Tesla T4 (compute capability 7.5) has no native bf16"),
    (('V100',), False, ['--precision', 'bf16'], "--precision bf16: the Tesla V100-SXM2-16GB (compute capability 7.0)"),
    ((), False, ['--precision', 'fp16'], "--precision fp16: needs a GPU with CUDA (fastai's MixedPrecision autocasts "
                                         "CUDA only), and this run is on the CPU"),
    ((), True, ['--precision', 'bf16'], "--precision bf16: needs a GPU with CUDA (fastai's MixedPrecision autocasts "
                                        "CUDA only), and this run is on Apple's MPS GPU"),
    (('H200',), False, ['--precision', 'fp8'], "--precision 'fp8': expected one of auto, bf16, fp16, fp32"),
])
def test_a_bad_ask_is_one_line_naming_the_flag_and_card(cards, mps, argv, message, accelerators, tiny_cli, tmp_path,
                                                         capsys):
    accelerators(*cards, mps=mps)
    with pytest.raises(SystemExit) as stop:
        importlib.import_module('scripts.stage2_baseline').main(tiny_cli(*argv))
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / 'out').exists()  # refused before any folder or training


def test_benchmark_takes_device_and_precision_with_the_same_errors(accelerators, tmp_path, capsys):
    from scripts import benchmark
    accelerators()
    for argv, message in ((['--precision', 'fp16'], '--precision fp16: needs a GPU with CUDA'),
                          (['--device', 'cuda:0'], '--device cuda:0: this machine has no CUDA GPU')):
        with pytest.raises(SystemExit) as stop: benchmark.main(argv + ['--quick', '--out', str(tmp_path)])
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / 'benchmark').exists()
    assert '--precision {auto,bf16,fp16,fp32}' in benchmark.main.parser().format_help()


# ----- MPS fallbacks --------------------------------------------------------------------------------------------------

class NeedsMissingOp(Transform):
    "A batch transform (adds 1) whose first call fails like an op MPS lacks."
    order, calls = 50, 0
    def encodes(self, x: torch.Tensor):
        type(self).calls += 1
        if type(self).calls == 1:
            raise NotImplementedError("The operator 'aten::grid_sampler_2d' is not currently implemented for the MPS "
                                      "device.\nIf you want this op to be added in priority...")
        return x + 1


def test_an_op_mps_lacks_runs_that_transform_on_the_cpu_said_once(capsys):
    pipe = device_data.FallbackPipeline([NeedsMissingOp()])
    b = (torch.zeros(2, 3), torch.ones(2))
    for _ in range(3): out = pipe(b)
    assert torch.equal(out[0], torch.ones(2, 3)) and torch.equal(out[1], torch.full((2,), 2.))
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and said[0].startswith('NOTICE: batch transform NeedsMissingOp needs an op cpu lacks') \
        and "'aten::grid_sampler_2d'" in said[0] and pipe.on_cpu == {'NeedsMissingOp'}
    with pytest.raises(ValueError, match='a real bug'):  # other errors are not hidden
        device_data.FallbackPipeline([lambda b: (_ for _ in ()).throw(ValueError('a real bug'))])(b)


def test_where_the_decoded_images_live(monkeypatch):
    GiB = 2**30
    monkeypatch.setattr(torch.mps, 'recommended_max_memory', lambda: 20 * GiB)
    monkeypatch.setattr(torch.mps, 'driver_allocated_memory', lambda: 2 * GiB)
    assert device_data._storage(torch.device('mps'), 4 * GiB) == 'device'
    assert device_data._storage(torch.device('mps'), 9 * GiB) == 'cpu'  # gathered on the CPU, copied per batch
    assert device_data._storage(torch.device('cpu'), 1) == 'cpu'
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda device: (10 * GiB, 16 * GiB))
    assert device_data._storage(torch.device('cuda', 0), 4 * GiB) == 'device'
    assert device_data._storage(torch.device('cuda', 0), 5 * GiB) == 'pinned'


# ----- progress and estimates -----------------------------------------------------------------------------------------

def test_estimate_lines_say_runs_epochs_time_and_speed():
    line = estimate_line('stage3_2_blocks', [25] * 6, 4000 / 1230, images_per_s=1230)
    assert line.startswith('stage3_2_blocks: 6 runs x 25 epochs left, about 8 min at 1,230 img/s (')
    assert estimate_line('s', [1, 2], 2.5, jobs=2) == \
        's: 2 runs, 3 epochs left, about 4 s, 2 at a time (every epoch as long as the first)'
    assert estimate_line('s', [0], 1.0) is None  # nothing left: nothing said
    assert [duration(s) for s in (0.2, 89, 600, 7260)] == ['1 s', '89 s', '10 min', '2 h 01 min']


def test_slow_epochs_show_a_few_progress_lines_and_the_estimates(tiny3, tmp_path, monkeypatch, capsys, accelerators):
    """Every batch lasts a second on a fake host clock: 12 batches an epoch, progress after 3 s, a few lines an epoch.
    On the CPU (--device cpu) wherever the tests run; `accelerators` restores the device choice afterwards."""
    monkeypatch.setattr(progress, 'clock', itertools.count().__next__)
    monkeypatch.setattr(progress, 'PROGRESS_AFTER_S', 3.0)
    out = tmp_path / 'out'
    importlib.import_module('scripts.run_all').main([
        '--data', str(tiny3), '--out', str(out), '--quick', '--epochs', '2', '--size', '16', '--classes', '3',
        '--bs', '2', '--only', 'stage2_baseline,stage3_1_channels', '--device', 'cpu'])
    lines = capsys.readouterr().out.splitlines()
    progress_lines = [l for l in lines if re.match(r'\S+ epoch \d \(\d of 2\): \d+/12 batches, [\d,]+ img/s$', l)]
    per_epoch = {}
    for l in progress_lines: per_epoch[l.split(':')[0]] = per_epoch.get(l.split(':')[0], 0) + 1
    # 3 runs x 2 epochs, each with a few lines (not one per batch: 12 batches an epoch), under the stage's name
    assert len(per_epoch) == 6 and all(1 <= n <= progress.LINES_PER_EPOCH for n in per_epoch.values()), per_epoch
    assert len(progress_lines) <= 6 * 12 // 3
    estimates = [l for l in lines if ' left, about ' in l]
    assert [l.split(' left')[0] for l in estimates] == [
        'stage2_baseline: 1 run x 1 epoch',  # after the first epoch of each stage, once
        'run_all: 1 training script and 2 runs',  # after the first training stage: stage3_1's declared runs
        'stage3_1_channels: 2 runs, 3 epochs'], estimates
    assert 'img/s' in estimates[0] and "as long as baseline-seed0's first" in estimates[0]
    assert " s a run (every run as long as stage2_baseline's" in estimates[1]
    first = lines.index(next(l for l in lines if l.startswith('baseline-seed0 epoch 0 (1 of 2): train_loss')))
    assert lines[first + 1] == estimates[0]  # right after the first epoch's line
    # the device, the precision and why: printed once, recorded in every run's config.json
    assert sum(l.startswith('device: ') for l in lines) == 1
    config = json.loads(next(Path(out).glob('stage2_baseline/*/baseline-seed0/config.json')).read_text())
    assert config['precision'] == 'fp32' and config['machine']['device'] == 'cpu'
    assert config['machine']['precision_reason'].startswith('auto on the CPU')
    assert config['machine']['device_reason'] == '--device cpu'


def test_every_training_script_run_all_and_benchmark_take_device():
    for name in ('stage2_baseline', 'stage3_1_channels', 'stage3_2_blocks', 'stage3_3_activations', 'stage4_final',
                 'task3_classifier128', 'task3_unet', 'task3_unet_backbone', 'run_all', 'benchmark'):
        text = importlib.import_module(f'scripts.{name}').main.parser().format_help()
        assert '--device DEVICE' in text and 'cuda:N' in text and '--precision' in text, name
