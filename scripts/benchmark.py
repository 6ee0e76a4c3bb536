#!/usr/bin/env python
"""What a training epoch really costs (training images per second), measured three ways in one run.

Two workloads: the baseline ResNet (`SPEC`: 32-64-128-256 x [2,2,2,2], 64 px, Tiny ImageNet) and the U-Net (`UNET`:
base 32, 128 px, moon data). Each is trained the same way on each path: the same recipe, model and initial weights,
batch size and precision, one warm-up epoch, then `--epochs` timed epochs. `--precision` (default auto: bf16 on a
GPU with native bf16, fp16 mixed with loss scaling on older CUDA GPUs, fp32 on MPS and the CPU; see `lab.machine`)
and `--device` choose them as for a training script; the table and config.json record the precision used.

  a  plain PyTorch loop, the ceiling: the whole train set as one float tensor on the device (decoded and normalised
     once), a random permutation per epoch, batches by indexing, no augmentation, no metrics, no validation; the
     recipe's torch optimiser (Adam/AdamW, fused on a GPU), the recipe's loss, autocast (bf16, or fp16 with torch's
     GradScaler) + channels_last on a CUDA GPU.
  b  the lab's path end to end, as a stage run trains: `build_data(recipe)` (images decoded once into a cached uint8
     tensor, gathered and augmented on the device) + `make_learner` + `fit_recipe` (the recipe's fit or one-cycle
     schedule) with the stage callbacks that write metrics.csv and the checkpoints (into a temporary folder), i.e.
     augmentation, device-side metrics and validation included.
  c  fastai's default file path: the same DataBlock without `to_device_dls` (each image opened and decoded per item,
     every epoch, `loader_workers()` worker processes), fastai's own `Learner` defaults: fastai's Adam, a per-batch
     `AvgMetric` (`accuracy`; pixel accuracy for the 1-logit U-Net), the progress bar (kept: its per-batch
     `smooth_loss.item()` and bar updates; its output goes to /dev/null), mixed precision through fastai's
     `MixedPrecision` on a CUDA GPU, the model in the default memory format (no channels_last). Same loss, lr, wd and
     schedule as b.

Columns: `*_images_per_s` = training images of the timed epochs / their wall time; for b and c an epoch is counted
from the end of the previous epoch to the end of this one (training, validation, metrics, callbacks, loader start-up),
`*_train_images_per_s` the training phase alone (before_train..after_train). `b_over_a` and `b_over_c` are quotients
of the images/s columns. `*_train_images` = training images each path saw per epoch (counted, not computed).
`b_epoch_s`, `b_train_s`, `b_valid_s` (and c's) = mean seconds of a timed epoch, of its training phase and of its
validation phase; what is left of an epoch is the callbacks' epoch work (b: metrics.csv and two checkpoint writes).
`peak_mem_*_mib` = torch.cuda.max_memory_allocated during each path, the data it holds on the device included
('-' on a CPU).

Data: --data (Tiny ImageNet: the recipe's first 10 classes, all when fewer) and --moon; without them the lab's known
places, else a generated stand-in (said, and marked in the `data_source` column).

Quick mode (the default on a CPU): the quick profile (few images, quarter-size images, small batches), 1 timed epoch; its
numbers only show that the paths run. Full mode (the default on a GPU): full data, batch 128 (ResNet) / 16 (U-Net),
2 timed epochs. Numbers compare only within one run of this script (one machine, one moment): other runs, machines or
loads give other numbers.
"""
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
from fastai_lab.data.locate import find_tiny_imagenet
from fastai_lab.data.tiny_imagenet import read_wnids
from fastai_lab.cli import script
from fastai_lab.data.loaders import build_data, resolve_data
from fastai_lab.losses import seg_loss
from fastai_lab.machine import DEVICE_HELP, announce, loader_workers, resolve_precision, select_device
from fastai_lab.recipe import PRECISIONS, SPEC, UNET, pick_profile, scale_to_profile
from fastai_lab.tables import markdown_table, write_table
from fastai_lab.machine import environment_info, seed_everything
from fastai_lab.results import stage_dir
from fastai_lab.io import write_json
from fastai_lab.learner import TORCH_OPTIMIZERS, fit_recipe, make_learner, precision_callbacks, setup_torch
from fastai_lab.models import build_model
from fastai_lab.checkpoint import Checkpoints
from fastai_lab.train import EpochLog, MetricsCSV

WORKLOADS = {'resnet': ('ResNet', SPEC), 'unet': ('U-Net', UNET)}
WARMUP_EPOCHS = 1


def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)
    elif device.type == 'mps': torch.mps.synchronize()


def _now(device):
    _sync(device)
    return time.perf_counter()


# ----- the workloads' recipes -----------------------------------------------------------------------------------------

def workload_recipe(kind, profile, data):
    """The recipe of workload `kind` scaled to `profile`, its data found (a wrong path raises here, before any timing).
    Tiny ImageNet: the recipe's 10 classes, or all of them when the folder has fewer (small test sets)."""
    recipe = scale_to_profile(replace(WORKLOADS[kind][1], data=data), profile)
    if kind == 'resnet':
        root, _ = find_tiny_imagenet(data, quiet=True)
        recipe = replace(recipe, classes=str(min(int(recipe.classes), len(read_wnids(root)))))
    return resolve_data(recipe, say=True)


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


# ----- one workload, three paths -----------------------------------------------------------------------------------------

def _peak_reset(device):
    if device.type == 'cuda':
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(device)


def _peak(device):
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == 'cuda' else '-'


def measure(kind, recipe, device, epochs, debug):
    "The table row of one workload: a, b and c on `recipe`."
    precision = resolve_precision(recipe.precision, device)[0]
    setup_torch()
    data = build_data(recipe, device=device)
    results, peaks = {}, {}
    paths = dict(a=lambda: plain_loop(recipe, data, device, precision, epochs),
                 b=lambda: lab_path(recipe, data, device, epochs, debug),
                 c=lambda: fastai_default_path(recipe, device, precision, epochs, debug))
    for name, run in paths.items():
        _peak_reset(device)
        results[name] = run()
        peaks[name] = _peak(device)
        print(f"{WORKLOADS[kind][0]} {name}: {results[name]['images_per_s']:,.1f} images/s", flush=True)
    speed = {k: round(r['images_per_s'], 1) for k, r in results.items()}
    row = dict(workload=f"{WORKLOADS[kind][0]} {recipe.size} px", device=_device_name(device),
               precision=precision + (' + channels_last' if device.type == 'cuda' else ''),
               batch=data.dls.train.bs,
               n_train=data.info['n_train'], n_valid=data.info['n_valid'], timed_epochs=epochs,
               **{f'{k}_train_images': r['train_images'] for k, r in results.items()},
               **{f'{k}_images_per_s': v for k, v in speed.items()},
               b_train_images_per_s=round(results['b']['train_images_per_s'], 1),
               c_train_images_per_s=round(results['c']['train_images_per_s'], 1),
               b_over_a=round(speed['b'] / speed['a'], 3), b_over_c=round(speed['b'] / speed['c'], 3),
               **{f'{k}_{part}_s': round(results[k][f'{part}_s'], 3) for k in 'bc' for part in ('epoch', 'train', 'valid')},
               **{f'peak_mem_{k}_mib': v for k, v in peaks.items()},
               data_path=data.info['data_path'], c_data_path=f'file ({loader_workers()} workers)',
               data_source=data.info['source'])
    counts = {row[f'{k}_train_images'] for k in 'abc'}
    if len(counts) != 1: print(f"WARNING: {row['workload']}: the paths saw different numbers of training images per "
                               f"epoch ({[row[f'{k}_train_images'] for k in 'abc']}); the speeds are still per image")
    return row, dict(recipe=recipe.to_dict(), data=data.info, precision=row['precision'], paths=results)


def _device_name(device):
    if device.type == 'cuda': return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n > 1 else ''})"


def flags(p):
    p.add_argument('--out', default='results', help='results folder (writes <out>/benchmark/<timestamp>/)')
    p.add_argument('--quick', action='store_true', help='quick profile: few small images, 1 timed epoch (default on a CPU)')
    p.add_argument('--full', action='store_true', help='full data and batches (default on a GPU), 2 timed epochs')
    p.add_argument('--data', default=None, help='Tiny ImageNet folder (default: known places, else generated)')
    p.add_argument('--moon', default=None, help='moon folder (default: known places, else generated)')
    p.add_argument('--epochs', type=int, default=None, help='timed epochs after the warm-up one (default: 1 quick, 2 full)')
    p.add_argument('--only', choices=tuple(WORKLOADS), default=None, help='one workload only')
    p.add_argument('--precision', choices=PRECISIONS, default='auto',
                   help='auto (bf16 on a GPU with native bf16, fp16 mixed with loss scaling on older CUDA GPUs, fp32 on '
                        'MPS and the CPU), bf16, fp16 or fp32; recorded in the table and config.json')
    p.add_argument('--device', default=None, help=DEVICE_HELP + ' (default: auto)')


def run(args):
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs {args.epochs}: expected a whole number >= 1 (timed epochs after the warm-up)")
    device = select_device(args.device)
    profile = pick_profile(args.quick, args.full)
    machine = announce(args.precision)  # a precision the device cannot serve stops here, before anything is timed
    epochs = args.epochs or (2 if profile == 'full' else 1)
    kinds = [args.only] if args.only else list(WORKLOADS)
    # every data folder is found (or refused) before anything is timed
    recipes = {k: replace(workload_recipe(k, profile, args.data if k == 'resnet' else args.moon),
                          precision=args.precision) for k in kinds}
    rows, configs = [], {}
    for kind, recipe in recipes.items():
        row, configs[kind] = measure(kind, recipe, device, epochs, args.debug)
        rows.append(row)
    env = environment_info()
    title = (f"Epoch cost, images/s: a plain loop, b lab path, c fastai default ({env['device']}, "
             f"{machine['precision_words']}, {profile} profile)")
    notes = ("a: plain PyTorch loop on the train set held on the device (no augmentation, metrics or validation). "
             "b: the lab's build_data + make_learner + fit_recipe, whole epochs (augmentation, metrics, validation, "
             "checkpoints). c: fastai's default file DataBlock path and Learner (fastai Adam, AvgMetric, progress bar, "
             "MixedPrecision on a CUDA GPU, no channels_last). *_train_images_per_s: training phase only. "
             f"Precision: {machine['precision_words']} ({machine['precision_reason']}). "
             f"{WARMUP_EPOCHS} warm-up epoch, then {epochs} timed. Compare numbers only within this table.")
    with stage_dir(args.out, 'benchmark') as folder:
        df = write_table(rows, folder, title=title, notes=notes)
        write_json(folder / 'config.json', dict(profile=profile, warmup_epochs=WARMUP_EPOCHS, timed_epochs=epochs,
                                                precision=machine['precision'], machine=machine,
                                                loader_workers=loader_workers(), workloads=configs, environment=env))
        print(f"\n# {title}\n\n{markdown_table(df)}\n{notes}")
    return df


main = script(run, flags)
if __name__ == '__main__': main()
