"Threshold metrics and losses for 1-channel segmentation logits, against hand-computed values."
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.torch_core import TensorImage, TensorMask

from fastai_lab.metrics import (seg_stats, iou_score, dice_score, pixel_accuracy, score_text, IoU, DiceScore, PixelAccuracy,
                         seg_metrics)
from fastai_lab.losses import soft_dice_loss, BCEDiceLoss, seg_loss

# 4x4 target with 4 foreground pixels; the prediction hits 3, misses 1 and adds 1: tp 3, fp 1, fn 1, tn 11.
TARGET = torch.tensor([[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [0, 0, 0, 0],
                       [0, 0, 0, 0]])
PRED = torch.tensor([[0, 0, 1, 1],
                     [0, 0, 1, 0],
                     [0, 1, 0, 0],
                     [0, 0, 0, 0]])
EMPTY = torch.zeros(4, 4, dtype=torch.long)


def logits_of(mask):
    "Confident 1-channel logits (1, 1, H, W) predicting `mask`."
    return (mask.float() * 40 - 20)[None, None]


def scores(pred, target):
    stats = seg_stats(logits_of(pred), TensorMask(target[None]))
    return [f(*stats.tolist()) for f in (iou_score, dice_score, pixel_accuracy)]


def run_metric(metric, batches):
    "Accumulate `metric` over (logits, target) batches the way a fastai Learner does."
    metric.reset()
    for pred, target in batches: metric.accumulate(SimpleNamespace(pred=pred, yb=(target,)))
    return metric.value


def test_seg_stats_counts():
    assert seg_stats(logits_of(PRED), TARGET[None]).tolist() == [3, 1, 1, 11]
    # A float (B, 1, H, W) target counts the same as a (B, H, W) long mask.
    assert seg_stats(logits_of(PRED), TARGET[None, None].float()).tolist() == [3, 1, 1, 11]


def test_scores_by_hand():
    assert scores(PRED, TARGET) == [3 / 5, 6 / 8, 14 / 16]


NAN = math.nan


@pytest.mark.parametrize('pred, target, expected', [
    (EMPTY, EMPTY, [NAN, NAN, 1.0]),       # no rock to find: IoU and Dice undefined, not perfect
    (EMPTY, TARGET, [0.0, 0.0, 12 / 16]),  # everything missed
    (TARGET, EMPTY, [NAN, NAN, 12 / 16]),  # no rock to find: only pixel accuracy sees the false alarms
])
def test_empty_masks(pred, target, expected):
    assert scores(pred, target) == pytest.approx(expected, nan_ok=True)


def test_no_pixels():
    assert math.isnan(pixel_accuracy(0, 0, 0, 0)) and math.isnan(iou_score(0, 0, 0, 0))
    assert score_text(iou_score(0, 0, 0, 5)) == 'undefined (no rock pixels)' == score_text(None)
    assert score_text(iou_score(3, 1, 1, 11)) == '0.600'


def test_threshold():
    logits = torch.logit(torch.tensor([[0.9, 0.6], [0.3, 0.1]]))[None, None]
    target = torch.tensor([[[1, 1], [0, 1]]])
    assert seg_stats(logits, target).tolist() == [2, 0, 1, 1]
    assert seg_stats(logits, target, threshold=0.75).tolist() == [1, 0, 2, 1]
    metric = IoU(threshold=0.75)
    assert run_metric(metric, [(logits, target)]) == 1 / 3


def test_accumulation_is_over_pixels_not_batch_means():
    batches = [(logits_of(PRED), TARGET[None]), (logits_of(EMPTY), EMPTY[None])]
    whole = (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    for metric, expected in [(IoU(), 3 / 5), (DiceScore(), 6 / 8), (PixelAccuracy(), 30 / 32)]:
        assert run_metric(metric, batches) == run_metric(metric, [whole]) == expected
    # The mean of the per-batch IoUs would be (0.6 + 1.0) / 2.
    assert [m.name for m in seg_metrics()] == ['iou', 'dice', 'pixel_acc']


def test_metrics_in_a_learner_cover_the_whole_valid_set():
    "fastai's validate() over uneven batches (3 + 2 items) equals the counts of all predictions at once."
    torch.manual_seed(0)
    x, y = torch.randn(5, 3, 8, 8), (torch.rand(5, 8, 8) > 0.5).long()
    ds = list(zip(TensorImage(x), TensorMask(y)))
    dls = DataLoaders(DataLoader(ds, bs=3), DataLoader(ds, bs=3))
    learn = Learner(dls, nn.Conv2d(3, 1, 1), loss_func=BCEDiceLoss(), metrics=seg_metrics())
    with learn.no_logging(): loss, iou, dice, acc = learn.validate()
    with torch.no_grad(): stats = seg_stats(learn.model(x), y).tolist()
    assert (iou, dice, acc) == pytest.approx((iou_score(*stats), dice_score(*stats), pixel_accuracy(*stats)), abs=1e-12)

    probs, _, decoded = learn.get_preds(with_decoded=True)
    assert decoded.shape == (5, 8, 8) and torch.equal(decoded, (probs > 0.5).long().squeeze(1))


def test_bce_weight_one_is_bce_with_logits():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 4, 4), (torch.rand(2, 4, 4) > 0.5).long()
    expected = F.binary_cross_entropy_with_logits(logits, target[:, None].float())
    assert torch.equal(BCEDiceLoss(bce_weight=1)(TensorImage(logits), TensorMask(target)), expected)
    assert torch.equal(seg_loss('bce')(logits, target), expected)


def test_loss_values_by_hand():
    # Logits 0: every probability is 0.5; 4 of 16 target pixels set, so Dice = (2 * 2 + 1) / (8 + 4 + 1).
    logits, target = torch.zeros(1, 1, 4, 4), TARGET[None]
    dice = 1 - 5 / 13
    assert soft_dice_loss(logits, target).item() == pytest.approx(dice)
    assert seg_loss('dice')(logits, target).item() == pytest.approx(dice)
    assert seg_loss('bce_dice')(logits, target).item() == pytest.approx(0.5 * math.log(2) + 0.5 * dice)
    assert BCEDiceLoss(bce_weight=0.25)(logits, target).item() == pytest.approx(0.25 * math.log(2) + 0.75 * dice)


def test_perfect_logits_have_dice_loss_near_zero():
    for target in (TARGET, EMPTY):
        assert seg_loss('dice')(logits_of(target), target[None]).item() == pytest.approx(0, abs=1e-6)


def test_loss_fastai_hooks():
    loss = BCEDiceLoss()
    logits = TensorImage(logits_of(PRED).repeat(2, 1, 1, 1))
    probs = loss.activation(logits)
    assert torch.equal(probs.as_subclass(torch.Tensor), torch.sigmoid(logits.as_subclass(torch.Tensor)))
    decoded = loss.decodes(probs)
    assert decoded.shape == (2, 4, 4) and torch.equal(decoded.as_subclass(torch.Tensor), PRED.expand(2, 4, 4))


def test_errors():
    with pytest.raises(ValueError, match='unknown loss'): seg_loss('focal')
    with pytest.raises(ValueError, match='bce_weight'): BCEDiceLoss(bce_weight=2)
    with pytest.raises(ValueError, match='does not match'): seg_stats(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 3))
