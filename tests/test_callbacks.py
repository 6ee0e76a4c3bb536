"GradientStats and ActivationStatsLite: exact numbers against hand-computed ones, and bounded memory."
import copy
import warnings
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
from fastai.data.core import DataLoaders
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback  # noqa: F401 (adds Learner.no_bar)
from fastai.learner import Learner
from fastai.optimizer import SGD
from torch.utils.data import TensorDataset

from fastai_lab.callbacks import ActivationStatsLite, GradientStats
from fastai_lab.stat_plots import plot_activation_stats, plot_layer_norms, plot_norms_over_steps


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(3 * 5 * 5, 2))


def tiny_dls(n=8, bs=8):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 2, 5, 5, generator=g), torch.randn(n, 2, generator=g)
    ds = TensorDataset(x, y)
    return DataLoaders.from_dsets(ds, TensorDataset(x[:2], y[:2]), bs=bs, device='cpu'), x, y


def fit(model, cbs, n=8, bs=8, epochs=1):
    dls, x, y = tiny_dls(n, bs)
    learn = Learner(dls, model, loss_func=nn.MSELoss(), opt_func=SGD, lr=0.1, cbs=cbs)
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('error')   # e.g. a callback attribute shadowing a Learner one
        learn.fit(epochs)
    return learn, x, y


def test_gradient_stats_equal_hand_computed_norms_after_one_fastai_step():
    model = tiny_model()
    before = copy.deepcopy(model)
    stats = GradientStats()
    fit(model, [stats])   # one batch holding all 8 samples: one backward, one step
    _, x, y = tiny_dls()
    nn.MSELoss()(before(x), y).backward()
    layers = [before[0], before[2], before[5]]
    assert stats.names == ['0', '2', '5'] and stats.steps.tolist() == [0]
    assert stats.grad_norms.shape == stats.weight_norms.shape == (1, 3)
    np.testing.assert_allclose(stats.grad_norms[0], [m.weight.grad.norm().item() for m in layers], rtol=1e-5)
    np.testing.assert_allclose(stats.grad_mean_abs[0], [m.weight.grad.abs().mean().item() for m in layers], rtol=1e-5)
    np.testing.assert_allclose(stats.weight_norms[0], [m.weight.norm().item() for m in layers], rtol=1e-6)
    # the step did happen after the record: the recorded weights are the pre-step ones
    assert not torch.equal(model[0].weight, before[0].weight)


class FixedLossScale(Callback):
    "Scale the loss by 8 before backward and expose `learn.scaler`, as fastai's fp16 `MixedPrecision` does."
    order = 10
    def before_fit(self): self.learn.scaler = SimpleNamespace(is_enabled=lambda: True, get_scale=lambda: 8.0)
    def before_backward(self): self.learn.loss_grad = self.learn.loss_grad * 8
    def after_fit(self): self.learn.scaler = None


def test_gradient_stats_undo_the_loss_scale_of_mixed_precision():
    model, before = tiny_model(), tiny_model()
    plain, scaled = GradientStats(), GradientStats()
    fit(before, [plain])
    fit(model, [scaled, FixedLossScale()])
    np.testing.assert_allclose(scaled.grad_norms, plain.grad_norms, rtol=1e-5)


def test_gradient_stats_snapshot_every_and_named_modules():
    model = tiny_model()
    nn.MSELoss()(model(torch.randn(3, 2, 5, 5)), torch.zeros(3, 2)).backward()
    snap = GradientStats.snapshot(model, modules=['2', model[5]])
    assert snap.names == ['2', '5']
    np.testing.assert_allclose(snap.grad_norms[0], [model[2].weight.grad.norm().item(), model[5].weight.grad.norm().item()], rtol=1e-6)
    stats = GradientStats(every=3)
    fit(tiny_model(), [stats], n=16, bs=2, epochs=2)   # 8 batches per epoch, 16 in all
    assert stats.steps.tolist() == [0, 3, 6, 9, 12, 15]
    frame = stats.to_frame()
    assert list(frame.columns) == ['step', 'layer', 'grad_norm', 'grad_mean_abs', 'weight_norm'] and len(frame) == 6 * 3
    assert frame.loc[frame.step == 9, 'grad_norm'].tolist() == stats.grad_norms[3].tolist()


def test_activation_stats_match_hand_computed_and_are_floats():
    model = tiny_model()
    before = copy.deepcopy(model)
    stats = ActivationStatsLite()
    fit(model, [stats])
    _, x, _ = tiny_dls()
    h = before[1](before[0](x))
    o = before[3](before[2](h))
    assert stats.names == ['1', '3']   # the activation modules
    assert isinstance(stats.means, np.ndarray) and stats.means.dtype == np.float32
    np.testing.assert_allclose(stats.means[0], [h.mean().item(), o.mean().item()], rtol=1e-5)
    np.testing.assert_allclose(stats.stds[0], [h.std().item(), o.std().item()], rtol=1e-5)
    np.testing.assert_allclose(stats.dead[0], [(h <= 0).float().mean().item(), (o <= 0).float().mean().item()], rtol=1e-6)
    assert stats.hooks is None   # hooks are removed after fit


def test_activation_stats_memory_stays_bounded_over_many_batches(tmp_path):
    stats = ActivationStatsLite(max_records=8, flush_every=4)
    fit(tiny_model(), [stats], n=200, bs=1)   # 200 training batches
    assert len(stats._pending) == 0 and len(stats._rows) <= 8
    # thinned to an even grid that still spans the whole run: stride 32 -> steps 0, 32, ..., 192
    assert stats.stride == 32 and stats.steps.tolist() == list(range(0, 200, 32))
    assert stats.means.shape == (7, 2)
    grads = GradientStats(max_records=5)
    fit(tiny_model(), [grads], n=40, bs=1)
    assert len(grads.steps) <= 5 and grads.steps[0] == 0
    for plot, obj in ((plot_layer_norms, grads), (plot_norms_over_steps, grads), (plot_activation_stats, stats)):
        path = plot(obj, tmp_path / f'{plot.__name__}.png')
        assert path.stat().st_size > 1000
