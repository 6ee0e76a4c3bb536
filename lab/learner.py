"""A recipe's Learner (its model: `lab.models`): fastai's Learner with the recipe's loss, metrics, optimiser, precision, mixing and splitter, and the fit its schedule asks for.

On a CUDA GPU: mixed precision (bf16, or fp16 with loss scaling on GPUs without native bf16: `lab.machine`),
channels_last, cuDNN's autotuner, and torch's fused optimisers through fastai's `OptimWrapper` (fastai's own
optimisers step every parameter in Python, a dozen kernel launches each).
"""
from functools import partial

import torch
from fastai.callback.core import CancelEpochException
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.mixup import CutMix, MixUp
from fastai.callback.progress import ProgressCallback
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat
from fastai.optimizer import OptimWrapper

from fastai_lab.arch.resnet import resnet_splitter
from fastai_lab.arch.unet import unet_splitter
from .distributed import ddp_context
from .ingredients import FASTAI_OPTIMIZERS, MixUntil, WeightEMA
from .losses import seg_loss
from .machine import cpu_threads, default_device, resolve_precision
from .metrics import DeviceAccuracy, seg_metrics

__all__ = ['setup_torch', 'LabLearner', 'TORCH_OPTIMIZERS', 'precision_callbacks', 'make_learner',
           'lr_of', 'fit_recipe']


def setup_torch():
    "Torch threads of a run off CUDA, the same whatever --jobs is (see `lab.machine.cpu_threads`)."
    if default_device().type != 'cuda': torch.set_num_threads(cpu_threads())


class LabLearner(Learner):
    """fastai's Learner whose epoch loop starts at `first_epoch` (0 unless resuming).

    fastai's own `fit(start_epoch=)` (SkipToEpoch) replays the skipped epochs as empty records, which breaks
    `SaveModelCallback` (IndexError in TrackerCallback.after_epoch) and writes blank rows; here they are not run."""
    first_epoch = 0

    def _do_fit(self):
        for epoch in range(self.first_epoch, self.n_epoch):
            self.epoch = epoch
            self._with_events(self._do_epoch, 'epoch', CancelEpochException)


TORCH_OPTIMIZERS = {  # torch's optimisers (fused on a GPU) through fastai's OptimWrapper: fastai's own step every
    'adam': torch.optim.Adam,      # parameter in Python, a dozen kernel launches each; the spec's plain Adam (T2.5)
    'adamw': torch.optim.AdamW,    # decoupled weight decay
    'sgd': partial(torch.optim.SGD, momentum=0.9),
    'sgd_nesterov': partial(torch.optim.SGD, momentum=0.9, nesterov=True),  # Nesterov momentum (lab/recipe.py)
}


def precision_callbacks(precision):
    "fastai's MixedPrecision for a resolved precision: bf16 autocast, or fp16 with its GradScaler; none for fp32."
    return [] if precision == 'fp32' else [MixedPrecision(amp_mode=precision)]


def make_learner(recipe, model, dls, cbs=()):
    "A LabLearner for `recipe`: loss, metrics, optimiser, precision, mixing, splitter (and a frozen encoder) from it."
    if recipe.task == 'classify':
        loss = LabelSmoothingCrossEntropyFlat(eps=recipe.label_smoothing) if recipe.label_smoothing else CrossEntropyLossFlat()
        metrics, splitter = [DeviceAccuracy()], resnet_splitter
    else: loss, metrics, splitter = seg_loss(recipe.loss), seg_metrics(), unet_splitter
    device = torch.device(getattr(dls, 'device', None) or default_device())
    cuda = device.type == 'cuda'
    fused = dict(fused=True) if cuda and not recipe.opt.startswith('sgd') else {}
    opt_func = FASTAI_OPTIMIZERS.get(recipe.opt) or partial(OptimWrapper, opt=partial(TORCH_OPTIMIZERS[recipe.opt], **fused))
    cbs = list(cbs) + precision_callbacks(resolve_precision(recipe.precision, device)[0])
    cbs += {'mixup': [MixUp()], 'cutmix': [CutMix()], 'none': []}[recipe.mix]
    cbs += ([MixUntil(recipe.mix_until)] if recipe.mix_until < 1 else []) + ([WeightEMA(recipe.ema)] if recipe.ema else [])
    learn = LabLearner(dls, model, loss_func=loss, opt_func=opt_func, metrics=metrics, splitter=splitter, cbs=cbs,
                       wd=recipe.wd, train_bn=not recipe.freeze)
    learn.remove_cb(ProgressCallback)  # its per-batch loss display syncs the GPU every batch; EpochLog says enough
    learn.recorder.train_metrics = True
    # On the data's device now, not at fit: an optimiser state loaded for resuming must land next to its parameters
    if getattr(dls, 'device', None) is not None: learn.model.to(dls.device)
    if cuda: learn.model.to(memory_format=torch.channels_last)
    if recipe.freeze: learn.freeze()
    return learn


def lr_of(recipe):
    "The learning rate to fit with: a slice (encoder, rest) when the encoder has its own."
    return slice(recipe.encoder_lr, recipe.lr) if recipe.encoder_lr else recipe.lr


def fit_recipe(learn, recipe, cbs=()):
    "`fit`, `fit_one_cycle` or `fit_flat_cos` as the recipe says, inside fastai's `distrib_ctx` under torchrun (DDP)."
    fit = {'one_cycle': learn.fit_one_cycle, 'flat_cos': learn.fit_flat_cos}.get(recipe.schedule, learn.fit)
    with ddp_context(learn): fit(recipe.epochs, lr_of(recipe), cbs=cbs)
