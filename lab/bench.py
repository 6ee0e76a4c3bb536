"""The machinery of `scripts/benchmark.py`: what a training epoch costs on three paths (a plain PyTorch loop, the
lab's path, fastai's default file path; see that script's docstring), and the cost table of every architecture the
lab builds (`models_table`, from `lab.cost`). Device timings synchronise the device at each mark."""
from pathlib import Path
import contextlib, os, tempfile, time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.torch_core import find_bs
from fastai.vision.all import imagenet_stats

from fastai_lab.data.cache import item_cache
from .checkpoint import Checkpoints
from .cost import _sync, measure_model
from .data.loaders import build_data
from .learner import TORCH_OPTIMIZERS, fit_recipe, make_learner, precision_callbacks
from .models import build_model
from .losses import seg_loss
from .machine import loader_workers, seed_everything
from .recipe import BACKBONE_UNET, CLASSIFIER_128, FINAL, SPEC, UNET, describe_model, scale_to_profile
from .train import EpochLog, MetricsCSV

__all__ = ['WARMUP_EPOCHS', 'plain_loop', 'train_tensors', 'EpochMeter', 'lab_path', 'fastai_default_path',
           'pixel_accuracy', 'peak_reset', 'peak_mib', 'device_words', 'lab_models', 'models_table']

WARMUP_EPOCHS = 1


def _now(device):
    _sync(device)
    return time.perf_counter()


def _plain_loss(recipe):
    "The recipe's loss as plain PyTorch (the Learner of b uses fastai's flat wrappers of the same functions)."
    if recipe.task == 'classify':
        return lambda out, y: F.cross_entropy(out, y, label_smoothing=recipe.label_smoothing)
    return seg_loss(recipe.loss)


# ----- a: the plain loop ---------------------------------------------------------------------------------------------

def train_tensors(data, device, channels_last):
    "The lab's decoded train set as float tensors on `device`: images normalised like the lab's loader; masks (N,1,H,W)."
    dl = data.dls.train
    tensors = getattr(dl, 'tensors', None) or item_cache(dl, data.root)
    x, y = (t.as_subclass(Tensor).to(device) for t in tensors)
    mean, std = (torch.tensor(s, device=device).view(1, 3, 1, 1) for s in imagenet_stats)
    x = (x.float() / 255 - mean) / std
    if channels_last: x = x.contiguous(memory_format=torch.channels_last)
    y = y.long() if y.ndim == 1 else y.float().unsqueeze(1)  # class labels, or masks as the loss's float targets
    return x, y


def plain_loop(recipe, data, device, precision, epochs):
    """(images/s, training images per epoch) of a bare training loop over the train set held on the device, in
    `precision` (bf16 or fp16 autocast, fp16 with torch's GradScaler; fp32)."""
    cl = device.type == 'cuda'  # channels_last on a GPU, as make_learner does
    x, y = train_tensors(data, device, channels_last=cl)
    seed_everything(recipe.seed, recipe.deterministic)
    model = build_model(recipe).to(device, memory_format=torch.channels_last if cl else torch.contiguous_format)
    model.train()
    fused = dict(fused=True) if device.type == 'cuda' and recipe.opt != 'sgd' else {}
    opt = TORCH_OPTIMIZERS[recipe.opt](model.parameters(), lr=recipe.lr, weight_decay=recipe.wd, **fused)
    loss_fn, bs, n = _plain_loss(recipe), data.dls.train.bs, len(x)
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == 'fp16')  # fp16's range needs loss scaling
    steps = n // bs  # like the lab's train loader, which drops its last partial batch

    def epoch():
        perm = torch.randperm(n, device=device)
        for i in range(steps):
            idx = perm[i * bs:(i + 1) * bs]
            xb = x[idx].contiguous(memory_format=torch.channels_last) if cl else x[idx]  # no copy when it already is
            with torch.autocast(device.type, dtype or torch.bfloat16, enabled=dtype is not None):
                loss = loss_fn(model(xb), y[idx])
            scaler.scale(loss).backward(); scaler.step(opt); scaler.update(); opt.zero_grad(set_to_none=True)
        return steps * bs

    for _ in range(WARMUP_EPOCHS): epoch()
    t0 = _now(device)
    images = [epoch() for _ in range(epochs)]
    seconds = _now(device) - t0
    return dict(images_per_s=sum(images) / seconds, train_images=images[0])


# ----- b and c: fastai Learners ----------------------------------------------------------------------------------------

class EpochMeter(Callback):
    """Per epoch: seconds from the end of the previous epoch to the end of this one (everything the epoch costs,
    validation and the other callbacks' epoch work included), seconds of the training phase, training images seen.
    Runs after every other callback (order 100); the device is synchronised at each mark."""
    order = 100

    def __init__(self, device): self.device, self.epochs = device, []
    def before_fit(self): self.t_end = _now(self.device)
    def before_epoch(self): self.n = 0
    def before_train(self): self.t_train = _now(self.device)
    def after_batch(self):
        if self.learn.training: self.n += find_bs(self.learn.yb)
    def after_train(self): self.train_s = _now(self.device) - self.t_train
    def before_validate(self): self.t_valid = _now(self.device)
    def after_validate(self): self.valid_s = _now(self.device) - self.t_valid
    def after_epoch(self):
        t = _now(self.device)
        self.epochs.append(dict(seconds=t - self.t_end, train_seconds=self.train_s, valid_seconds=self.valid_s,
                                images=self.n))
        self.t_end = t

    def result(self):
        """Images/s over the timed epochs (the warm-up ones left out), whole epochs and training phases, and the mean
        seconds of an epoch, its training phase and its validation phase (the rest: the callbacks' epoch work)."""
        timed = self.epochs[WARMUP_EPOCHS:]
        if not timed: raise RuntimeError("benchmark: no timed epoch finished")
        images = sum(e['images'] for e in timed)
        if len({e['images'] for e in timed}) != 1:
            raise RuntimeError(f"benchmark: training images per epoch changed: {[e['images'] for e in timed]}")
        mean = lambda k: sum(e[k] for e in timed) / len(timed)
        return dict(images_per_s=images / sum(e['seconds'] for e in timed),
                    train_images_per_s=images / sum(e['train_seconds'] for e in timed), train_images=timed[0]['images'],
                    epoch_s=mean('seconds'), train_s=mean('train_seconds'), valid_s=mean('valid_seconds'))


@contextlib.contextmanager
def _silenced(debug):
    "stdout to /dev/null while fitting (fastai's progress bar, epoch lines), unless --debug."
    if debug: yield; return
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null): yield


def lab_path(recipe, data, device, epochs, debug):
    "b: `make_learner` + `fit_recipe` on `build_data`'s loaders, with a stage run's per-epoch callbacks."
    seed_everything(recipe.seed, recipe.deterministic)
    learn = make_learner(recipe, build_model(recipe), data.dls)
    meter = EpochMeter(device)
    with tempfile.TemporaryDirectory(prefix='benchmark-') as tmp:
        run_dir = Path(tmp)
        learn.path, learn.model_dir = run_dir, '.'
        fit = replace(recipe, epochs=WARMUP_EPOCHS + epochs)
        cbs = [MetricsCSV(run_dir / 'metrics.csv'), EpochLog('benchmark b'), Checkpoints(run_dir, fit, recipe.monitor),
               meter]
        with _silenced(debug): fit_recipe(learn, fit, cbs)
    return dict(meter.result(), callbacks=_cb_names(learn, cbs))


def pixel_accuracy(inp, targ):
    "Pixel accuracy of 1-logit masks, as a plain function: fastai makes it an AvgMetric (a CPU read per batch)."
    return ((inp.as_subclass(Tensor) > 0).squeeze(1).long() == targ.as_subclass(Tensor).long()).float().mean()


def fastai_default_path(recipe, device, precision, epochs, debug):
    "c: fastai's default Learner on the file-based DataLoaders."
    seed_everything(recipe.seed, recipe.deterministic)
    dls = build_data(recipe, device, say=False, in_memory=False).dls  # the lab's DataBlock, decoded from the files
    seed_everything(recipe.seed, recipe.deterministic)
    model = build_model(recipe)
    classify = recipe.task == 'classify'
    loss = CrossEntropyLossFlat() if classify else seg_loss(recipe.loss)
    meter = EpochMeter(device)
    learn = Learner(dls, model, loss_func=loss, metrics=accuracy if classify else pixel_accuracy, wd=recipe.wd,
                    cbs=precision_callbacks(precision) or None)
    fit = learn.fit_one_cycle if recipe.schedule == 'one_cycle' else learn.fit
    with _silenced(debug): fit(WARMUP_EPOCHS + epochs, recipe.lr, cbs=[meter])
    return dict(meter.result(), callbacks=_cb_names(learn, [meter]), optimizer=f'fastai.optimizer.{learn.opt_func.__name__}')


def _cb_names(learn, fit_cbs):
    "The callbacks a fit ran with: the Learner's own and those given to `fit` (removed again when it returns)."
    return [type(cb).__name__ for cb in learn.cbs] + [f'{type(cb).__name__} (fit)' for cb in fit_cbs]



def peak_reset(device):
    if device.type == 'cuda':
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device):
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == 'cuda' else '-'


def device_words(device):
    if device.type == 'cuda': return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n > 1 else ''})"


# ----- the cost of every architecture --------------------------------------------------------------------------------

def lab_models(profile='full'):
    """name -> Recipe of every architecture the lab builds, at its recipe's size and batch scaled to `profile`: the
    Task 2 variants on the baseline (the stages build them on the previous stage's choice), the final model, the
    128 px classifier and the three U-Nets (T3.3's encoder: the 128 px classifier's, untrained)."""
    m = SPEC.model
    models = {'baseline (2, 3.1-A, 3.2-B, 3.3-A)': SPEC,
              '3.1-B': replace(SPEC, model=dict(m, channels=[2 * c for c in m['channels'][:3]], blocks=m['blocks'][:3])),
              '3.2-A (1 block)': replace(SPEC, model=dict(m, blocks=[1] * len(m['blocks']))),
              '3.2-C (3 blocks)': replace(SPEC, model=dict(m, blocks=[3] * len(m['blocks'])))}
    models.update({f'3.3-{k} ({act})': replace(SPEC, model=dict(m, act=act))
                   for k, act in zip('BCD', ('leakyrelu', 'elu', 'gelu'))})
    models.update({'final (stage 4)': FINAL, 'T3.1 classifier': CLASSIFIER_128, 'T3.2 U-Net': UNET,
                   'T3.3 A (frozen encoder)': replace(BACKBONE_UNET, init=None),
                   'T3.3 B (fine-tuned)': replace(BACKBONE_UNET, init=None, freeze=False)})
    return {k: scale_to_profile(r, profile) for k, r in models.items()}


def models_table(profile, device, precision):
    """One row per architecture of `lab_models`: parameters (total, trainable), GMACs per image, inference images/s
    at its recipe's batch, batch-1 latency, peak CUDA memory of an inference pass ('-' elsewhere, said in the note)."""
    rows = []
    for name, recipe in lab_models(profile).items():
        seed_everything(0)
        model = build_model(recipe).to(device)
        if recipe.freeze: model.encoder.requires_grad_(False)  # what learn.freeze() does with the U-Net's splitter
        if device.type == 'cuda': model.to(memory_format=torch.channels_last)
        c = measure_model(model, recipe, recipe.bs, device, precision, peak=True)
        rows.append(dict(model=name, config=describe_model(recipe), size=recipe.size, batch=recipe.bs,
                         params_M=round(c['params'] / 1e6, 3), trainable_M=round(c['trainable_params'] / 1e6, 3),
                         GMACs=c['gmacs'], infer_images_per_s=c['infer_images_per_s'], latency_ms=c['latency_ms'],
                         peak_mem_mib=c['peak_mem_mib'] if c['peak_mem_mib'] is not None else '-',
                         device=c['device'], precision=precision))
        note = c['peak_mem_note']
    return rows, note
