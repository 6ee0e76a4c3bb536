"""Losses of the lab's segmentation runs (T3.2-T3.3): BCE, soft Dice and their mix, for 1-channel logits.

Targets may be fastai `TensorMask`s (B, H, W) of {0, 1} or float masks (B, 1, H, W); logits are (B, 1, H, W).
The classifier's losses are fastai's own (`CrossEntropyLossFlat`, `LabelSmoothingCrossEntropyFlat`).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .metrics import align_masks

__all__ = ['soft_dice_loss', 'BCEDiceLoss', 'SEG_LOSSES', 'seg_loss']


def soft_dice_loss(logits, target, smooth=1.0):
    "1 - soft Dice of sigmoid(logits), summed over the whole batch; `smooth` keeps empty masks at loss 0, not 0/0."
    logits, target = align_masks(logits, target)
    prob = torch.sigmoid(logits)
    return 1 - (2 * (prob * target).sum() + smooth) / (prob.sum() + target.sum() + smooth)


class BCEDiceLoss(nn.Module):
    """`bce_weight` * BCEWithLogits + (1 - `bce_weight`) * `soft_dice_loss`, for 1-channel logits.

    Args:
        bce_weight: 1 gives pure BCEWithLogits, 0 pure soft Dice, 0.5 the usual mix.
        smooth: Dice smoothing term.
        threshold: probability above which `decodes` predicts foreground.
    Like fastai's own losses it has `activation` (sigmoid) and `decodes` (probabilities -> (B, H, W) 0/1 mask),
    which `get_preds(with_decoded=True)`, `predict` and `show_results` use.
    """
    def __init__(self, bce_weight=0.5, smooth=1.0, threshold=0.5):
        super().__init__()
        if not 0 <= bce_weight <= 1: raise ValueError(f"bce_weight={bce_weight}: expected a value in [0, 1]")
        self.bce_weight, self.smooth, self.threshold = bce_weight, smooth, threshold

    def forward(self, logits, target):
        logits, target = align_masks(logits, target)
        loss = 0.
        if self.bce_weight > 0: loss = self.bce_weight * F.binary_cross_entropy_with_logits(logits, target)
        if self.bce_weight < 1: loss = loss + (1 - self.bce_weight) * soft_dice_loss(logits, target, self.smooth)
        return loss

    def activation(self, x): return torch.sigmoid(x)

    # fastai calls `decodes` on the output of `activation`, so `x` holds probabilities here.
    def decodes(self, x): return (x > self.threshold).long().squeeze(1)

    def extra_repr(self): return f'bce_weight={self.bce_weight}, smooth={self.smooth}, threshold={self.threshold}'


SEG_LOSSES = {'bce': 1.0, 'dice': 0.0, 'bce_dice': 0.5}


def seg_loss(name='bce_dice', **kwargs):
    "A `BCEDiceLoss` by name: 'bce', 'dice' or 'bce_dice' (0.5 + 0.5); `kwargs` go to `BCEDiceLoss`."
    if name not in SEG_LOSSES: raise ValueError(f"unknown loss {name!r}: expected one of {', '.join(SEG_LOSSES)}")
    return BCEDiceLoss(bce_weight=SEG_LOSSES[name], **kwargs)
