"""The paths a CPU never takes, replayed on the CPU: DDP's padded shards, host syncs per batch, fp16's skipped
steps, per-rank RNG on resume, MPS's fallback through fastai's loader copies, the workers macOS really uses."""
import random
import sys
import warnings
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from fastai.callback.fp16 import MixedPrecision
from fastai.data.core import DataLoaders, TfmdDL
from fastai.distributed import DistributedDL
from fastai.optimizer import SGD
from fastai.learner import Learner
from fastai.data.transforms import Transform
from torch.utils.data import TensorDataset

from fastai_lab import checkpoint
from fastai_lab.callbacks import GradientStats
from fastai_lab.data import device as cache
from fastai_lab.ingredients import WeightEMA
from fastai_lab.learner import make_learner
from fastai_lab.models import build_model
from fastai_lab.metrics import DeviceAccuracy, DeviceLoss, IoU
from fastai_lab.recipe import FINAL


# ----- DDP: the padded repeats of fastai's DistributedDL -------------------------------------------------------------

def _shard(rank, n=9, bs=2, world=2):
    "Rank `rank`'s DistributedDL over n items 0..n-1 (the index broadcast replaced: no process group here)."
    dl = TfmdDL(list(range(n)), bs=bs)
    ddl = DistributedDL(dl, rank=rank, world_size=world)
    ddl._broadcast = lambda t, r: t
    return ddl


def _metric_over_shard(metric, ddl, batch_of):
    "Accumulate `metric` as fastai's Recorder does, batch by batch of `ddl`; `batch_of(idx)`: (pred, target)."
    metric.reset()
    loss_func = nn.CrossEntropyLoss()
    for b in ddl:
        pred, y = batch_of(b[0] if isinstance(b, (tuple, list)) else b)
        learn = SimpleNamespace(dl=ddl, pred=pred, yb=(y,), loss_func=loss_func)
        if y.ndim == 1: learn.loss = loss_func(pred, y)
        metric.accumulate(learn)
    return metric


def _classes(idx):
    "Logits for class 0 on item 0, class 1 on the others; targets idx % 3: right on items 0, 1, 4, 7 (4 of 9)."
    return nn.functional.one_hot(torch.where(idx == 0, 0, 1), 3).float(), idx % 3


def test_device_counts_drop_the_padded_repeats_of_the_last_shard():
    seen = [list(map(int, torch.cat(list(_shard(r))))) for r in (0, 1)]
    assert seen == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 0]]  # fastai pads rank 1 with item 0 again
    (c0, n0), (c1, n1) = [_metric_over_shard(DeviceAccuracy(), _shard(r), _classes).totals() for r in (0, 1)]
    assert (n0, n1) == (5, 4) and int(c0) + int(c1) == 4  # summed over the ranks (all_reduce_sum): 4 of 9, not 5 of 10
    losses = [_metric_over_shard(DeviceLoss(), _shard(r), _classes).totals() for r in (0, 1)]
    full = nn.functional.cross_entropy(*_classes(torch.arange(9)), reduction='sum')
    assert float(losses[0][0] + losses[1][0]) == pytest.approx(float(full), rel=1e-6) and losses[1][1] == 4


def test_seg_counts_drop_the_padded_repeats_too():
    "Rock predicted everywhere; the even items are all rock: 5 of them, 20 true-positive pixels (item 0 once)."
    masks = lambda idx: (torch.ones(len(idx), 1, 2, 2), (idx % 2 == 0).float()[:, None, None, None].expand(-1, 1, 2, 2))
    counts = [_metric_over_shard(IoU(), _shard(r), masks).totals()[0] for r in (0, 1)]
    tp, fp, fn, tn = [int(v) for v in counts[0] + counts[1]]
    assert (tp, fp, fn, tn) == (20, 16, 0, 0)


# ----- host syncs per batch ------------------------------------------------------------------------------------------

def _classify_dls(n, bs=4):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
    return DataLoaders.from_dsets(TensorDataset(x, y), TensorDataset(x[:8], y[:8]), bs=bs, device='cpu')


def _syncs_in_fit(monkeypatch, n, recipe):
    calls = {'n': 0}
    for name in ('item', 'cpu', 'tolist'):
        real = getattr(torch.Tensor, name)
        def counted(self, *a, _real=real, **k):
            calls['n'] += 1
            return _real(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    torch.manual_seed(0)
    learn = make_learner(recipe, build_model(recipe), _classify_dls(n))
    with learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit(1, 0.01)
    monkeypatch.undo()
    return calls['n'], learn.recorder.values[-1]


def test_training_reads_nothing_on_the_host_per_batch(monkeypatch):
    "The losses and the accuracy stay on the device until the epoch ends: as many host reads for 2 batches as for 8."
    recipe = replace(FINAL, mix='none', opt='sgd', precision='fp32', label_smoothing=0.0, classes=3,
                     model=dict(FINAL.model, channels=[4, 4, 8], blocks=[1, 1, 1]))
    few, few_values = _syncs_in_fit(monkeypatch, 8, recipe)
    many, _ = _syncs_in_fit(monkeypatch, 32, recipe)
    assert few == many and all(isinstance(v, float) for v in few_values)


# ----- fp16: steps the scaler skips ----------------------------------------------------------------------------------

class _OverflowScaler:
    "A GradScaler stand-in (on the CPU): scales the loss by 1024, and by inf (an overflow) on the chosen steps."
    def __init__(self, overflow_at): self.overflow_at, self.n = set(overflow_at), 0
    def is_enabled(self): return True
    def get_scale(self): return 1024.0
    def scale(self, loss): return loss * (float('inf') if self.n in self.overflow_at else 1024.0)
    def step(self, opt):
        "GradScaler.step: the optimiser steps (unscaled) unless a gradient is inf or nan."
        grads = [p.grad for g in opt.param_groups for p in g['params'] if p.grad is not None]
        if all(torch.isfinite(g).all() for g in grads):
            for g in grads: g.div_(1024.0)
            opt.step()
    def update(self): self.n += 1


class _FakeFp16(MixedPrecision):
    "fastai's MixedPrecision (its before_step and fake optimiser) around the stand-in scaler, without CUDA autocast."
    def __init__(self, overflow_at): super().__init__(); self.overflow_at = overflow_at
    def before_fit(self):
        from contextlib import nullcontext
        self.autocast, self.learn.scaler, self.scales = nullcontext(), _OverflowScaler(self.overflow_at), []


def test_a_step_the_fp16_scaler_skips_is_not_recorded_nor_counted():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 4, generator=g), torch.randn(24, 2, generator=g)
    dls = DataLoaders.from_dsets(TensorDataset(x, y), TensorDataset(x[:4], y[:4]), bs=4, device='cpu')  # 6 steps
    torch.manual_seed(0)
    stats, ema = GradientStats(), WeightEMA(0.9)
    learn = Learner(dls, nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), loss_func=nn.MSELoss(),
                    opt_func=SGD, lr=0.1, cbs=[_FakeFp16(overflow_at={1, 4}), stats, ema])
    with learn.no_logging(): learn.fit(1)
    assert learn.scaler is None  # fastai's MixedPrecision cleaned up after fit
    assert np.isfinite(stats.grad_norms).all() and len(stats.steps) == 4  # 6 batches, 2 skipped
    assert list(stats.steps) == [0, 1, 2, 3] and ema.steps == 4


# ----- resume: every rank's generators -------------------------------------------------------------------------------

def test_each_rank_resumes_its_own_rng(monkeypatch):
    learn = SimpleNamespace(dls=SimpleNamespace(loaders=[]))
    states, draws = [], []
    for seed in (10, 11):  # what rank 0 and rank 1 had drawn when the checkpoint was written
        random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
        states.append(checkpoint._rng_state(learn))
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(1))))
    saved = dict(rng=states[0], rng_ranks=states)  # what Checkpoints writes (rank 0's alone before)
    monkeypatch.setattr(checkpoint, 'world_size', lambda: 2)
    for rank in (1, 0):
        monkeypatch.setattr(checkpoint, 'dist_rank', lambda: rank)
        random.seed(99); np.random.seed(99); torch.manual_seed(99)
        checkpoint._set_rng_state(learn, checkpoint._own_rng(saved))
        assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws[rank]
    monkeypatch.setattr(checkpoint, 'world_size', lambda: 3)  # resumed on another number of processes: rank 0's
    assert checkpoint._own_rng(saved) is states[0]


def test_the_mps_generator_is_saved_and_restored(monkeypatch):
    kept = {}
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: True)
    monkeypatch.setattr(torch.mps, 'get_rng_state', lambda: torch.tensor([7, 8], dtype=torch.uint8))
    monkeypatch.setattr(torch.mps, 'set_rng_state', lambda s: kept.setdefault('mps', s))
    learn = SimpleNamespace(dls=SimpleNamespace(loaders=[]))
    state = checkpoint._rng_state(learn)
    checkpoint._set_rng_state(learn, state)
    assert torch.equal(kept['mps'], torch.tensor([7, 8], dtype=torch.uint8))


# ----- MPS: the fallback survives fastai's loader copies -------------------------------------------------------------

class _AddOne(Transform):
    order = 50
    def encodes(self, x: torch.Tensor): return x + 1


def test_the_mps_fallback_survives_new_and_test_dl():
    dls = DataLoaders.from_dsets(TensorDataset(torch.zeros(6, 2)), TensorDataset(torch.zeros(4, 2)), bs=2,
                                 after_batch=[_AddOne()], device='cpu')
    cache.cpu_fallback(dls)
    dls.valid.after_batch.on_cpu.add('_AddOne')  # it failed on the device once: it stays on the CPU in the copies
    copies = [dls.valid.new(), dls.test_dl(torch.zeros(3, 2)), dls.train.new(bs=3).new()]
    for dl in copies:
        assert isinstance(dl.after_batch, cache.FallbackPipeline)
        b = dl.one_batch()
        assert torch.equal(b[0] if isinstance(b, tuple) else b, torch.ones(dl.bs, 2))
    assert 'AddOne' in copies[0].after_batch.on_cpu.pop() and not copies[2].after_batch.on_cpu


def test_workers_are_recorded_as_used_on_macos(monkeypatch, tiny3):
    from fastai_lab.data import loaders
    from fastai_lab.recipe import SPEC
    monkeypatch.setattr(loaders, 'loader_workers', lambda: 4)  # what a GPU machine asks for
    monkeypatch.setattr(sys, 'platform', 'darwin')  # fastai then takes none (spawn start method)
    recipe = loaders.resolve_data(replace(SPEC, data=str(tiny3), classes=3, size=16, bs=8), say=False)
    data = loaders.build_data(recipe, device='cpu', say=False, in_memory=False)
    assert data.dls.train.fake_l.num_workers == 0 and data.info['data_path'] == 'file (0 workers)'


# ----- --jobs: the stage's process keeps no copy of the data on the GPU ----------------------------------------------

def test_the_stage_process_gives_its_data_back_before_the_jobs_train(monkeypatch, tmp_path):
    import weakref
    from fastai_lab import stage
    from fastai_lab.flags import Options

    class FakeData:  # what build_data returns: loaders over decoded images (a tensor here), in a reference cycle
        def __init__(self): self.images, self.me, self.info = torch.zeros(1000), self, dict(n_train=40, bs=8)
        def check(self): return self

    made, seen = [], {}
    def build(recipe, **kw):
        made.append(weakref.ref(data := FakeData()))
        return data
    monkeypatch.setattr(stage, 'build_data', build)
    monkeypatch.setattr(stage, 'resolve_data', lambda recipe, say: recipe)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_initialized', lambda: True)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: seen.setdefault('data alive', made[0]() is not None))
    _, _, info = stage.open_stage(Options(out=str(tmp_path), jobs=4), 'stage2_baseline', FINAL)
    assert info == dict(n_train=40, bs=8)
    assert seen == {'data alive': False}  # freed (its cycle collected), then the allocator's cache given back


# ----- the collective timeout: rank 0 evaluates alone while the others wait ------------------------------------------

def test_dist_timeout_reaches_init_process_group(monkeypatch):
    import datetime
    import torch.distributed as dist
    from fastai_lab import distributed
    asked = {}
    monkeypatch.setenv('WORLD_SIZE', '2'); monkeypatch.setenv('RANK', '0')
    monkeypatch.setattr(dist, 'is_initialized', lambda: False)
    monkeypatch.setattr(dist, 'init_process_group', lambda backend, timeout: asked.update(backend=backend,
                                                                                        timeout=timeout))
    distributed.init_distributed(45)
    assert asked == dict(backend='gloo', timeout=datetime.timedelta(minutes=45))
    distributed.init_distributed()  # the default outlasts a full test report (NCCL's own is 10 minutes)
    assert asked['timeout'] == datetime.timedelta(minutes=distributed.DIST_TIMEOUT_MIN) >= datetime.timedelta(hours=1)


def test_a_dist_timeout_of_nothing_is_refused(tiny_cli, capsys):
    from scripts import stage2_baseline
    with pytest.raises(SystemExit):
        stage2_baseline.main([*tiny_cli(), '--dist-timeout', '0'])
    assert '--dist-timeout 0: expected minutes > 0' in capsys.readouterr().err
