"""Cheap fastai callbacks that record per-layer gradient, weight and activation statistics (plotted by `lab.stat_plots`).

Both callbacks are meant to ride along every training run: they record only every `every`-th training batch,
reduce each layer's tensors to a few numbers *on the device* (no per-batch copy or `.item()` sync), move them
to the CPU in one transfer per `flush_every` records, and keep at most `max_records` records. When that cap
is reached, every other record is dropped and the recording stride doubles, so the history always spans the
whole of training at an even spacing and memory stays bounded however long the run is.

Steps count training batches seen by the callback, across successive `fit` calls (so a freeze/unfreeze
`fine_tune` gives one continuous history); `reset()` starts over.
"""
import math

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from fastai.callback.core import Callback
from fastai.callback.hook import Hooks

__all__ = ['WEIGHTED_TYPES', 'ACTIVATION_TYPES', 'resolve_modules', 'GradientStats', 'ActivationStatsLite',
           'backward_probe']

WEIGHTED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish)


def resolve_modules(model, modules=None, default_types=WEIGHTED_TYPES):
    "`(name, module)` pairs for `modules` (modules or dotted names; None: every weighted layer of `default_types`)."
    if modules is None: return [(n, m) for n, m in model.named_modules() if isinstance(m, default_types)]
    named = dict(model.named_modules())
    names = {id(m): n for n, m in named.items()}
    out = []
    for m in modules:
        if isinstance(m, str):
            if m not in named: raise KeyError(f"the model has no module named {m!r}")
            out.append((m, named[m]))
        elif id(m) in names: out.append((names[id(m)], m))
        else: raise ValueError(f"{type(m).__name__} module is not part of the model")
    return out


class _Recorder(Callback):
    "Bounded, thinned storage of per-step rows of per-module statistics (the shared half of both callbacks)."
    stat_names = ()

    def __init__(self, modules=None, every=1, max_records=1000, flush_every=32):
        if every < 1 or max_records < 2: raise ValueError("need every >= 1 and max_records >= 2")
        self.modules, self.every, self.max_records, self.flush_every = modules, every, max_records, flush_every
        self.reset()

    def reset(self):
        "Forget every record (the modules are resolved again at the next fit)."
        self.names, self._mods, self._seen, self.stride = None, None, 0, self.every
        self._pending, self._steps, self._rows = [], [], []

    def _resolve(self, model):
        if self._mods is None:
            pairs = resolve_modules(model, self.modules, self.default_types)
            self.names, self._mods = [n for n, _ in pairs], [m for _, m in pairs]

    def _due(self): return self._seen % self.stride == 0

    def _push(self, step, row):
        "Queue one `(n_modules, n_stats)` device tensor; copy the queue to the CPU in one go when it is long."
        self._pending.append((step, row))
        if len(self._pending) >= self.flush_every: self._flush()

    def _flush(self):
        if not self._pending: return
        steps, rows = zip(*self._pending)
        self._pending = []
        block = torch.stack(rows).float().cpu().numpy()
        self._steps.extend(steps); self._rows.extend(block)
        while len(self._steps) > self.max_records:   # thin: keep the even-spaced half, record half as often
            self.stride *= 2
            keep = [i for i, s in enumerate(self._steps) if s % self.stride == 0]
            self._steps = [self._steps[i] for i in keep]; self._rows = [self._rows[i] for i in keep]

    def after_batch(self):
        if self.training: self._seen += 1

    def after_epoch(self): self._flush()
    def after_fit(self): self._flush()

    @property
    def steps(self):
        "Training-batch index of each record."
        self._flush(); return np.asarray(self._steps, dtype=np.int64)

    def _stat(self, name):
        self._flush()
        k = self.stat_names.index(name)
        if not self._rows: return np.zeros((0, len(self.names or ())))
        return np.stack(self._rows)[:, :, k]

    def to_frame(self):
        "Long table: one row per (step, module) with every statistic; ready for `to_csv`."
        self._flush()
        data = {'step': np.repeat(self.steps, len(self.names or ())), 'layer': list(self.names or ()) * len(self._steps)}
        return pd.DataFrame({**data, **{s: self._stat(s).ravel() for s in self.stat_names}})

    def state(self):
        "What a resumed run needs to continue this history (tensors and numbers: a weights-only checkpoint holds it)."
        self._flush()
        rows = torch.as_tensor(np.stack(self._rows)) if self._rows else torch.zeros(0)
        return dict(names=list(self.names or ()), seen=self._seen, stride=self.stride,
                    steps=torch.as_tensor(self._steps, dtype=torch.long), rows=rows)

    def load_state(self, state):
        "Continue the history saved by `state()` (before the resumed fit; the modules are resolved again)."
        self._seen, self.stride = int(state['seen']), int(state['stride'])
        self._steps, self._rows = [int(s) for s in state['steps']], list(state['rows'].numpy())
        return self

    @classmethod
    def from_frame(cls, frame):
        "The records of a saved `to_frame()` table (e.g. a run's CSV), for plotting; no model needed."
        stats = cls()
        stats.names = list(dict.fromkeys(frame['layer']))
        steps = list(dict.fromkeys(frame['step']))
        values = frame[list(cls.stat_names)].to_numpy().reshape(len(steps), len(stats.names), len(cls.stat_names))
        stats._steps, stats._rows = [int(s) for s in steps], list(values)
        return stats

    def to_dict(self):
        "JSON-ready `{names, steps, <stat>: steps x layers lists}`."
        return {'names': list(self.names or ()), 'steps': self.steps.tolist(),
                **{s: self._stat(s).tolist() for s in self.stat_names}}


class GradientStats(_Recorder):
    """Record, after `backward`, each layer's weight-gradient L2 norm, mean |grad| and weight L2 norm.

    `modules`: modules or dotted names (default: every Conv/Linear). Gradients are read from `weight.grad` in
    `after_backward`, before any clipping or optimiser step; under fastai's fp16 `MixedPrecision` they are
    divided by the loss scale. A layer without a gradient (frozen) records NaN. Arrays are `steps x layers`.
    For a single backward pass outside a Learner use `GradientStats.snapshot(model)`.
    """
    order = 15   # after MixedPrecision (10) has set up its scaler
    run_valid = False
    stat_names = ('grad_norm', 'grad_mean_abs', 'weight_norm')
    default_types = WEIGHTED_TYPES

    def before_fit(self): self._resolve(self.learn.model)

    def after_backward(self):
        if not self._due(): return
        scaler = getattr(self.learn, 'scaler', None)
        scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else 1.0
        self._push(self._seen, self._measure(scale))

    @torch.no_grad()
    def _measure(self, scale=1.0):
        "One `(layers, 3)` device tensor: grad L2 norm, grad mean |g|, weight L2 norm."
        rows = []
        for m in self._mods:
            w, g = m.weight, m.weight.grad
            if g is None: gn = gm = torch.tensor(math.nan, device=w.device)
            else:
                g = g.float() / scale   # vector norms: one pass, no temporary |g| tensor
                gn, gm = torch.linalg.vector_norm(g), torch.linalg.vector_norm(g, 1) / g.numel()
            rows.append(torch.stack([gn, gm, torch.linalg.vector_norm(w.float())]))
        return torch.stack(rows)

    @classmethod
    def snapshot(cls, model, modules=None):
        "The statistics of the gradients currently held by `model` (call after one `loss.backward()`), as one record."
        stats = cls(modules=modules)
        stats._resolve(model)
        stats._push(0, stats._measure())
        return stats

    @property
    def grad_norms(self): "Weight-gradient L2 norms, steps x layers."; return self._stat('grad_norm')
    @property
    def grad_mean_abs(self): "Mean |weight gradient|, steps x layers."; return self._stat('grad_mean_abs')
    @property
    def weight_norms(self): "Weight L2 norms (before the step), steps x layers."; return self._stat('weight_norm')


class ActivationStatsLite(_Recorder):
    """Lean `ActivationStats`: per-module output mean, std and dead fraction (share of values <= 0).

    Forward hooks on `modules` (modules or dotted names; default: every activation module, else every
    Conv/Linear) compute on the device, on training batches only, every `every`-th batch; a module called
    several times in one forward keeps its last call. Unlike fastai's `ActivationStats` (one `.item()` per
    module per batch, and a list that grows with every batch) the cost and memory are bounded.
    """
    order = -20
    run_valid = False
    stat_names = ('mean', 'std', 'dead')
    default_types = ACTIVATION_TYPES

    def before_fit(self):
        self._resolve(self.learn.model)
        if not self._mods:   # a model without activation modules (functional F.relu): watch its weighted layers
            self.default_types = WEIGHTED_TYPES; self._mods = None; self._resolve(self.learn.model)
        self._remove()
        self.hooks, self._active = Hooks(self._mods, self._hook, is_forward=True, detach=True, cpu=False), False

    def _hook(self, module, inp, out):
        if not self._active or not isinstance(out, torch.Tensor): return None
        o = out.float()
        std, mean = torch.std_mean(o)
        return torch.stack([mean, std, (o <= 0).sum() / o.numel()])

    def before_batch(self):
        self._active = self.training and self._due()
        if self._active:
            for h in self.hooks: h.stored = None

    def after_batch(self):
        if self._active:
            nan = torch.full((3,), math.nan, device=next(self.learn.model.parameters()).device)
            self._push(self._seen, torch.stack([nan if h.stored is None else h.stored for h in self.hooks]))
        self._active = False
        super().after_batch()

    def _remove(self):
        if getattr(self, 'hooks', None) is not None: self.hooks.remove(); self.hooks = None

    def after_fit(self):
        self._remove(); super().after_fit()

    @property
    def means(self): "Output means, steps x modules."; return self._stat('mean')
    @property
    def stds(self): "Output stds, steps x modules."; return self._stat('std')
    @property
    def dead(self): "Share of outputs <= 0, steps x modules."; return self._stat('dead')


def backward_probe(model, x, target=None, loss_func=None, modules=None):
    """One forward and one `backward()` of `model` on `x`: its `GradientStats` snapshot and a per-layer frame.

    The frame adds, per weighted layer, the RMS of the layer's input (forward signal) and of the loss gradient
    at its output (backward signal), whose product sets the size of the weight gradient. `target` defaults to
    a standard normal tensor shaped like the output and `loss_func` to the mean squared error.
    """
    pairs = resolve_modules(model, modules)
    signal = {n: {} for n, _ in pairs}
    rms = lambda t: (torch.linalg.vector_norm(t.detach().float()) / math.sqrt(t.numel())).item()
    def hook(name):
        def fwd(m, inp, out):
            signal[name]['input_rms'] = rms(inp[0])
            out.register_hook(lambda g: signal[name].__setitem__('out_grad_rms', rms(g)))
        return fwd
    handles = [m.register_forward_hook(hook(n)) for n, m in pairs]
    try:
        model.zero_grad(set_to_none=True)
        out = model(x)
        if target is None: target = torch.randn_like(out)
        (loss_func or nn.functional.mse_loss)(out, target).backward()
    finally:
        for h in handles: h.remove()
    stats = GradientStats.snapshot(model, [m for _, m in pairs])
    frame = stats.to_frame().drop(columns='step')
    frame['input_rms'] = [signal[n].get('input_rms', math.nan) for n in stats.names]
    frame['out_grad_rms'] = [signal[n].get('out_grad_rms', math.nan) for n in stats.names]
    return stats, frame
