"""The recipe ingredients that fastai has no part for: a weight EMA, mixing for the first part of training only, and
multi-view test-time augmentation; plus the fastai optimisers the lab uses as they are (`ranger`).

Each one is a recipe field (lab/recipe.py, with its source) that `lab.learner.make_learner` and `lab.evaluate` read:
- `ema`: `WeightEMA`, an exponential moving average of the weights, validated, checkpointed and exported;
- `mix_until`: `MixUntil`, which switches fastai's `MixUp`/`CutMix` off for the last epochs;
- `tta_views`: `multi_view_logits`, logits averaged over fixed views (the image, its flip, shifted copies and their
  flips), in one pass over the data.
"""
from functools import partial

import torch
from fastai.callback.core import Callback
from fastai.callback.mixup import MixHandler
from fastai.optimizer import ranger
from fastai.torch_core import get_model

from fastai_lab.data.augment import shift_images

__all__ = ['FASTAI_OPTIMIZERS', 'WeightEMA', 'ema_decay', 'MixUntil', 'mixing_epochs', 'TRAINING_ONLY', 'tta_views',
           'apply_view', 'multi_view_logits', 'view_words']

# fastai's own optimisers, used as they are (the rest are torch's, through fastai's OptimWrapper: lab.learner)
FASTAI_OPTIMIZERS = {'ranger': partial(ranger, mom=0.9, sqr_mom=0.99, eps=1e-6)}  # fastai's Imagenette example


# ----- weight EMA ---------------------------------------------------------------------------------------------------

def ema_decay(decay, step):
    """The decay of optimiser step `step` (1, 2, ...): `decay`, warmed up like TensorFlow's ExponentialMovingAverage
    (num_updates), min(decay, (1 + step) / (10 + step)): early on the average follows the weights closely, later it
    spans up to 1 / (1 - decay) steps (0.999: about 1000 steps, the 35 epochs of the full profile hold about 1100)."""
    return min(decay, (1 + step) / (10 + step))


class WeightEMA(Callback):
    """An exponential moving average of the model's weights, used to validate, checkpoint and export.

    After every optimiser step t = 1, 2, ...: avg = d_t * avg + (1 - d_t) * w, with d_t = `ema_decay(decay, t)` and avg
    starting from the weights the fit starts from. BatchNorm statistics are averaged the same way (every floating-point
    tensor of the state dict, parameters and buffers, as torch's `AveragedModel(use_buffers=True)` does), so the
    averaged weights come with matching running means and variances; integer buffers (BatchNorm's batch counter) are
    copied. Each epoch's validation runs on the averaged weights: they are swapped into the model before validation and
    swapped back after the epoch's checkpoints (order 70, after `Checkpoints` at 65), so metrics.csv, the best epoch
    and model.pth are the averaged model's, and so is everything evaluated and exported from model.pth. For --resume,
    `state()` (saved in last.pth beside the statistics callbacks') holds the average, the live weights and t."""
    order = 70

    def __init__(self, decay):
        if not 0 < decay < 1: raise ValueError(f"WeightEMA(decay={decay}): expected a decay in (0, 1)")
        self.decay, self.avg, self.live, self.steps, self.swapped, self.trained = decay, None, None, 0, False, False

    def _targets(self): return list(get_model(self.learn.model).state_dict().values())  # share the model's storage

    def _start(self):
        self.targets = self._targets()
        if self.avg is None: self.avg = [t.detach().clone() for t in self.targets]
        self.live = [t.detach().clone() for t in self.targets]
        self.floats = [i for i, t in enumerate(self.targets) if t.is_floating_point()]
        self.ints = [i for i, t in enumerate(self.targets) if not t.is_floating_point()]

    def before_fit(self): self._start()
    def before_train(self): self.trained = True  # a training epoch: its validation is the averaged weights'

    def before_step(self): self.cancelled = False
    def after_cancel_step(self): self.cancelled = True  # fp16: the scaler skipped the step (overflow); nothing moved

    def after_step(self):
        "Average in the weights this optimiser step made."
        if not self.training or getattr(self, 'cancelled', False): return
        self.steps += 1
        d = ema_decay(self.decay, self.steps)
        torch._foreach_lerp_([self.avg[i] for i in self.floats], [self.targets[i] for i in self.floats], 1 - d)
        for i in self.ints: self.avg[i].copy_(self.targets[i])

    def before_validate(self):
        # not in validate(), get_preds or tta (they send before_fit too, but no training epoch precedes them)
        if not self.trained or self.swapped: return
        for live, t, a in zip(self.live, self.targets, self.avg): live.copy_(t); t.copy_(a)
        self.swapped = True

    def _swap_back(self):
        if not self.swapped: return
        for t, live in zip(self.targets, self.live): t.copy_(live)
        self.swapped = False

    def after_epoch(self):
        self._swap_back()
        self.trained = False

    def after_cancel_fit(self): self._swap_back()
    def after_fit(self): self._swap_back()

    def state(self):
        "What --resume needs (the model itself holds the averaged weights while the checkpoints are written)."
        live = self.live if self.swapped else self._targets()
        return dict(avg=[a.detach() for a in self.avg], live=[t.detach() for t in live], steps=self.steps)

    def load_state(self, state):
        "Put back the average and the live weights of a resumed run (after the model was loaded from last.pth)."
        targets = self._targets()
        for t, live in zip(targets, state['live']): t.copy_(live)
        self.avg = [t.detach().clone() for t in targets]
        for a, s in zip(self.avg, state['avg']): a.copy_(s)
        self.steps = state['steps']


# ----- mixing for the first part of training only -------------------------------------------------------------------

def mixing_epochs(until, n_epoch):
    "The epochs (0-based) that `MixUntil(until)` mixes in: those that end by `until` of the run."
    return [e for e in range(n_epoch) if e + 1 <= until * n_epoch + 1e-9]


class MixUntil(Callback):
    """Switch fastai's MixUp/CutMix callbacks off for the epochs that end after `until` of the run (0.8 of 35 epochs:
    epochs 1-28 mixed, 29-35 on the real images). Decided from the epoch number, so a resumed run mixes as the
    uninterrupted one would. A switched-off MixHandler does not run at all (fastai's `Callback.run`), so it neither
    mixes the batches nor swaps the loss function."""
    def __init__(self, until): self.until = until

    def before_epoch(self):
        if not hasattr(self.learn, 'n_epoch'): return
        on = self.epoch in mixing_epochs(self.until, self.n_epoch)
        for cb in self.learn.cbs:
            if isinstance(cb, MixHandler): cb.run = on


TRAINING_ONLY = (WeightEMA, MixUntil)  # removed once a run is trained (evaluation, export)


# ----- multi-view test-time augmentation -----------------------------------------------------------------------------

def tta_views(n):
    """The first `n` views (dy, dx, flip) of multi-view TTA, as shares of a shift step: the image, its flip, then
    shifted by (+1, +1), (-1, -1), (+1, -1), (-1, +1) steps, each with its flip (at most 10)."""
    views = [(dy, dx, flip) for dy, dx in ((0, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)) for flip in (False, True)]
    if not 1 <= n <= len(views): raise ValueError(f"tta views {n}: expected 1 to {len(views)}")
    return views[:n]


def shift_step(width):
    "The shift of the shifted views: 1/32 of the image width, at least 1 px (2 px at 64 px; padcrop trains with 8)."
    return max(1, width // 32)


def apply_view(x, view):
    "The batch `x` seen through `view` (dy, dx, flip): shifted by (dy, dx) shift steps (reflected), then flipped."
    dy, dx, flip = view
    s = shift_step(x.shape[-1])
    y = shift_images(x, dy * s, dx * s) if dy or dx else x
    return y.flip(-1) if flip else y


def view_words(n):
    "The views of `n`-view TTA in words, e.g. '6 views (the image, its flip, 2 shifted copies and their flips)'."
    if n < 2: return '1 view (the image)'
    copies, flipped = (n - 1) // 2, (n - 2) // 2
    shifted = ('' if not copies else f", {copies} shifted cop{'y' if copies == 1 else 'ies'}"
               + ('' if not flipped else ' and its flip' if flipped == copies == 1 else ' and their flips'
                  if flipped == copies else f" and the flip of {flipped}"))
    return f"{n} views (the image, its flip{shifted}; logits averaged)"


class _Views(Callback):
    "In `get_preds`: the model's logits on every view of each batch; `learn.pred` becomes their mean."
    order = 11  # after MixedPrecision (10): its autocast is still open in after_pred, so the views run in it too

    def __init__(self, views): self.views, self.plain = views, []

    def after_pred(self):
        x, first = self.xb[0], self.pred.float()
        extra = self.views[1:]
        logits = [first]
        if extra:
            out = self.model(torch.cat([apply_view(x, v) for v in extra])).float()
            logits += list(out.split(x.shape[0]))
        self.plain.append(first.detach().cpu())
        self.learn.pred = torch.stack(logits).mean(0)


def multi_view_logits(learn, dl, n_views):
    """(mean logits over `n_views` views, logits of the image alone, targets) of `learn` on the labelled, unshuffled
    `dl`, in one pass: the views of a batch go through the model together (`tta_views` lists them). The learner's own
    callbacks (precision) apply as in `get_preds`."""
    views = tta_views(n_views)
    if views[0] != (0, 0, False): raise ValueError("the first view must be the image itself")
    cb = _Views(views)
    mean, targets = learn.get_preds(dl=dl, act=lambda o: o, cbs=[cb], reorder=False)
    return mean.float(), torch.cat(cb.plain), targets
