"""Metrics counted on the device: classification accuracy, and binary segmentation metrics for 1-channel logits
(T3.2, T3.3, D4).

fastai's `Dice`/`JaccardCoeff` take the argmax over channels, which is always 0 for one channel; these
threshold the sigmoid instead. The fastai metrics add up pixel counts over the whole validation set and
score them once at the end (not a mean of per-batch scores).

Targets may be fastai `TensorMask`s (B, H, W) of {0, 1} or float masks (B, 1, H, W); logits are (B, 1, H, W).
"""
import math

import torch
from torch import Tensor
from fastai.learner import AvgSmoothLoss
from fastai.metrics import Metric

from .distributed import all_reduce_sum, real_items

__all__ = ['seg_stats', 'iou_score', 'dice_score', 'is_undefined', 'score_text', 'pixel_accuracy', 'IoU', 'DiceScore',
           'PixelAccuracy', 'seg_metrics', 'DeviceAccuracy', 'DeviceLoss', 'DeviceSmoothLoss',
           'align_masks']


def align_masks(logits, target):
    "Plain float tensors of one shape (B, 1, H, W); fastai's tensor subclasses refuse to mix in arithmetic."
    logits, target = logits.as_subclass(Tensor), target.as_subclass(Tensor)
    if target.ndim == logits.ndim - 1: target = target.unsqueeze(1)
    if target.shape != logits.shape:
        raise ValueError(f"target of shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}; "
                         "expected logits (B, 1, H, W) and a mask (B, H, W) or (B, 1, H, W)")
    return logits.float(), target.float()


def seg_stats(logits, target, threshold=0.5):
    "Pixel counts (tp, fp, fn, tn) as a long tensor of 4, predicting foreground where sigmoid(logits) > `threshold`."
    logits, target = align_masks(logits, target)
    pred, true = torch.sigmoid(logits) > threshold, target > 0.5
    return torch.stack([(pred & true).sum(), (pred & ~true).sum(), (~pred & true).sum(), (~pred & ~true).sum()])


def iou_score(tp, fp, fn, tn):
    """Intersection over union, tp / (tp + fp + fn); nan (undefined) when the target holds no rock pixels (tp + fn
    = 0): with nothing to find, a prediction can be neither right nor wrong about rock (pixel accuracy still scores
    its false alarms)."""
    return tp / (tp + fp + fn) if tp + fn else math.nan


def dice_score(tp, fp, fn, tn):
    "Dice (F1), 2 tp / (2 tp + fp + fn); nan (undefined) when the target holds no rock pixels, as `iou_score`."
    return 2 * tp / (2 * tp + fp + fn) if tp + fn else math.nan


def is_undefined(v):
    "Whether a score is undefined: nan, or None (how JSON keeps a nan)."
    return v is None or (isinstance(v, float) and math.isnan(v))


def score_text(v, digits=3):
    "A segmentation score in words: '0.812', or 'undefined (no rock pixels)' for an IoU or Dice of masks without rock."
    return 'undefined (no rock pixels)' if is_undefined(v) else f"{v:.{digits}f}"


def pixel_accuracy(tp, fp, fn, tn):
    "Share of pixels classified right; nan when there are no pixels."
    n = tp + fp + fn + tn
    return (tp + tn) / n if n else math.nan


class _DeviceCounts(Metric):
    """A fastai metric that adds up counts on the device and reads them once, at the end of the epoch.

    fastai's `AvgMetric` copies every batch's value to the CPU (a host sync per batch, which stalls a GPU whose
    batches take milliseconds); the number of items is counted on the host. Under DDP the padded repeats of fastai's
    `DistributedDL` are dropped (`real_items`) and the counts summed over the processes when read."""
    n_counts = 1

    def reset(self): self.counts, self.n, self.distributed = None, 0, False

    def accumulate(self, learn):
        pred, yb = learn.pred, learn.yb
        k = real_items(getattr(learn, 'dl', None), len(yb[0]))
        if k == 0: return  # a batch of padding only
        if k < len(yb[0]): pred, yb = pred[:k], [y[:k] for y in yb]
        c = self.batch_counts(pred, *yb, learn=learn)
        self.counts = c if self.counts is None else self.counts + c
        self.n += k
        # every process sees its shard only while fastai's DistributedDL feeds it; after DDP each sees everything
        self.distributed = type(getattr(learn, 'dl', None)).__name__ == 'DistributedDL'

    def totals(self):
        "The counts and the number of items, summed over the processes under DDP."
        if self.counts is None: return torch.zeros(self.n_counts, dtype=torch.long), 0
        if not self.distributed: return self.counts, self.n
        n = all_reduce_sum(torch.tensor(self.n, device=self.counts.device))
        return all_reduce_sum(self.counts), int(n)


class DeviceAccuracy(_DeviceCounts):
    "Classification accuracy (argmax), counted on the device; the name 'accuracy' as fastai's."
    name = 'accuracy'

    def batch_counts(self, pred, targ, learn=None): return (pred.argmax(dim=-1) == targ).sum()

    @property
    def value(self):
        correct, n = self.totals()
        return int(correct) / n if n else None


class DeviceLoss(_DeviceCounts):
    """The mean valid loss over the items, as fastai's `AvgLoss` (batch mean x batch size, summed), on the device;
    the loss of a padded last batch under DDP is that of its real items. `Recorder.loss` in `make_learner`."""
    name = 'loss'

    def batch_counts(self, pred, *yb, learn):
        loss = learn.loss if len(yb[0]) == len(learn.yb[0]) else learn.loss_func(pred, *yb)
        return loss.detach().mean().float() * len(yb[0])

    @property
    def value(self):
        total, n = self.totals()
        return total / n if n else None


class DeviceSmoothLoss(AvgSmoothLoss):
    """fastai's `AvgSmoothLoss` kept on the device: the Recorder reads it every batch, and fastai's copies it to the
    CPU each time (a host sync per batch). Under DDP it is the mean over the processes, as fastai's."""
    def accumulate(self, learn):
        self.count += 1
        loss = learn.to_detach(learn.loss.mean(), cpu=False)
        self.val = torch.lerp(loss, self.val.to(loss.device), self.beta)


class _CountMetric(_DeviceCounts):
    "A fastai metric that sums `seg_stats` over the batches (on the device) and scores the totals with `score`."
    score, metric_name, n_counts = None, None, 4

    def __init__(self, threshold=0.5):
        self.threshold = threshold
        self.reset()

    def batch_counts(self, pred, targ, learn=None): return seg_stats(pred, targ, threshold=self.threshold)

    @property
    def value(self): return float(self.score(*self.totals()[0].tolist()))

    @property
    def name(self): return self.metric_name


class IoU(_CountMetric):
    "Dataset-level IoU of the thresholded sigmoid (see `iou_score`)."
    score, metric_name = staticmethod(iou_score), 'iou'


class DiceScore(_CountMetric):
    "Dataset-level Dice of the thresholded sigmoid (see `dice_score`)."
    score, metric_name = staticmethod(dice_score), 'dice'


class PixelAccuracy(_CountMetric):
    "Dataset-level pixel accuracy of the thresholded sigmoid."
    score, metric_name = staticmethod(pixel_accuracy), 'pixel_acc'


def seg_metrics(threshold=0.5):
    "The T3.2 metrics for a Learner: IoU, Dice, pixel accuracy."
    return [IoU(threshold), DiceScore(threshold), PixelAccuracy(threshold)]


