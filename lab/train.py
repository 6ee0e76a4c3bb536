"""One training run from its recipe: `train_run(recipe, run_dir)` writes the run folder (D7) and returns its summary.

A run is a pure function of its recipe: it seeds Python, NumPy and torch, then builds its DataLoaders (whose
shuffling and augmentation draw from those seeds), its model and its Learner, so that the same recipe gives the same
numbers (bit for bit on a CPU at the same thread count). Each epoch writes a row of metrics.csv, the best checkpoint
(model.pth, with the recipe inside) and last.pth (model, optimiser, RNG states): a run stopped by anything, SIGKILL
included, continues from its last finished epoch with the numbers it would have had. The folder holds:
config.json (recipe, data, environment), model.txt, metrics.csv, model.pth, export.pkl (`learn.export()`, for
scripts/predict.py), curves and, last of all, summary.json: a run folder without it is unfinished.

Train-set metrics are fastai's `Recorder(train_metrics=True)`: accumulated over the epoch's training batches, with
augmentation (and CutMix) on, while the weights move; the train loss is fastai's smoothed loss at the epoch's end.
"""
import os, random, time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback, CancelEpochException
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.mixup import CutMix, MixUp
from fastai.callback.progress import ProgressCallback
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat
from fastai.optimizer import OptimWrapper
from fastai.torch_core import get_model

from arch.layers import count_params
from arch.resnet import ResNet, resnet_splitter
from arch.unet import BackboneUNet, UNet, unet_splitter
from .metrics import DeviceAccuracy, seg_loss, seg_metrics
from .profile import cpu_threads, use_bf16
from .recipe import Recipe, describe_model
from .report import plot_curves
from .runs import environment_info, is_distributed, is_rank0, read_json, write_json

__all__ = ['RunOptions', 'train_run', 'build_model', 'make_learner', 'load_checkpoint', 'load_run_model',
           'MetricsCSV', 'load_history', 'LabLearner', 'seed_everything', 'setup_torch', 'n_classes_of', 'lr_of',
           'fit_recipe']


@dataclass(frozen=True)
class RunOptions:
    "What a run does besides training (nothing here changes its numbers)."
    test: bool = False       # evaluate the kept checkpoint on the test set (per-class table, confusion matrix...)
    figures: bool = True     # curves, show_results and test figures (PNG)
    stats: bool = False      # record per-layer activation and gradient statistics (lab.callbacks)
    export: bool = True      # learn.export() -> export.pkl, for scripts/predict.py
    real_pair: bool = False  # segmentation: also score the real Kaggle frame(s) of a known place (sim-to-real)
    jobs: int = 1            # runs sharing this machine's cores (sets the torch threads on a CPU)


def seed_everything(seed, deterministic=False):
    "Seed Python, NumPy and torch (all devices); `deterministic`: cuDNN's deterministic kernels, else its autotuner."
    random.seed(seed); np.random.seed(seed % 2 ** 32); torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, not deterministic
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not deterministic


def setup_torch(jobs=1):
    "Torch threads for one of `jobs` runs sharing this machine (see `lab.profile.cpu_threads`)."
    if not torch.cuda.is_available(): torch.set_num_threads(cpu_threads(jobs))


def n_classes_of(recipe):
    "Classes of a classifier recipe: the length of its wnid list, or its count."
    text = str(recipe.classes)
    return len([w for w in text.split(',') if w.strip()]) if ',' in text else int(text.split('@')[0])


def build_model(recipe):
    "The recipe's model, initialised from `recipe.init` when it names a checkpoint."
    m = dict(recipe.model)
    if recipe.arch == 'resnet': model = ResNet(**m, n_classes=n_classes_of(recipe))
    elif recipe.arch == 'unet': model = UNet(**m)
    else:
        encoder = m.pop('encoder')
        model = BackboneUNet(ResNet(**encoder), **m)
    if recipe.init: _load_init(model, recipe.init)
    return model


def _load_init(model, path):
    "A whole model's weights, or (for a backbone U-Net) a classifier's stem and stages."
    from arch.unet import load_encoder_from_classifier
    state = _read_checkpoint(path)
    if isinstance(model, BackboneUNet) and not any(k.startswith('encoder.') for k in state['model']):
        return load_encoder_from_classifier(model, path)
    try: model.load_state_dict(state['model'])
    except RuntimeError as e: raise ValueError(f"{path} does not fit the model: {str(e).splitlines()[0]}") from None
    return model


def _read_checkpoint(path):
    "{'model': state dict, 'recipe': dict or None, ...} from a lab checkpoint or a bare state dict; errors name the file."
    from arch.unet import read_torch_file
    path = Path(path)
    if not path.is_file(): raise FileNotFoundError(f"{path}: no such checkpoint")
    try: raw = read_torch_file(path)
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}; expected a model.pth written "
                         f"by the lab or torch.save(state_dict))") from None
    if isinstance(raw, dict) and 'model' in raw: return raw
    if isinstance(raw, dict): return {'model': raw}
    raise ValueError(f"{path}: not a model checkpoint (expected a state dict)")


def load_checkpoint(path):
    "(model, recipe) from a lab checkpoint: the model is rebuilt from the recipe stored with it, then loaded."
    state = _read_checkpoint(path)
    if not state.get('recipe'):
        raise ValueError(f"{path}: no recipe inside (a bare state dict); load it into a model you build yourself")
    recipe = Recipe.from_dict(state['recipe'], source=str(path))
    model = build_model(replace(recipe, init=None))
    model.load_state_dict(state['model'])
    return model, recipe


def load_run_model(run_dir):
    "(model, recipe) of a finished run folder (its model.pth), in eval mode."
    run_dir = Path(run_dir)
    if not run_dir.is_dir(): raise FileNotFoundError(f"{run_dir}: no such run folder")
    model, recipe = load_checkpoint(run_dir / 'model.pth')
    return model.eval(), recipe


def _plain(o):
    "`o` with fastai's tensor subclasses made plain tensors and numpy scalars Python numbers, for weights-only loading."
    if isinstance(o, torch.Tensor): return o.as_subclass(torch.Tensor)
    if isinstance(o, np.generic): return o.item()  # one-cycle puts numpy floats in the optimiser's param groups
    if isinstance(o, dict): return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)): return type(o)(_plain(v) for v in o)
    return o


def _atomic_save(obj, path):
    tmp = Path(path).with_name(f'.{Path(path).name}.{os.getpid()}.tmp')
    torch.save(_plain(obj), tmp)
    os.replace(tmp, path)


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
}


def make_learner(recipe, model, dls, cbs=()):
    "A LabLearner for `recipe`: loss, metrics, optimiser, precision, mixing, splitter (and a frozen encoder) from it."
    if recipe.task == 'classify':
        loss = LabelSmoothingCrossEntropyFlat(eps=recipe.label_smoothing) if recipe.label_smoothing else CrossEntropyLossFlat()
        metrics, splitter = [DeviceAccuracy()], resnet_splitter
    else: loss, metrics, splitter = seg_loss(recipe.loss), seg_metrics(), unet_splitter
    fused = dict(fused=True) if torch.cuda.is_available() and recipe.opt != 'sgd' else {}
    opt_func = partial(OptimWrapper, opt=partial(TORCH_OPTIMIZERS[recipe.opt], **fused))
    if recipe.precision == 'bf16' and not torch.cuda.is_available():
        raise ValueError("--precision bf16: needs a GPU (fastai's MixedPrecision autocasts CUDA only); use fp32")
    cbs = list(cbs) + ([MixedPrecision(amp_mode='bf16')] if use_bf16(recipe.precision) else [])
    cbs += {'mixup': [MixUp()], 'cutmix': [CutMix()], 'none': []}[recipe.mix]
    learn = LabLearner(dls, model, loss_func=loss, opt_func=opt_func, metrics=metrics, splitter=splitter, cbs=cbs,
                       wd=recipe.wd, train_bn=not recipe.freeze)
    learn.remove_cb(ProgressCallback)  # its per-batch loss display syncs the GPU every batch; EpochLog says enough
    learn.recorder.train_metrics = True
    # On the data's device now, not at fit: an optimiser state loaded for resuming must land next to its parameters
    if getattr(dls, 'device', None) is not None: learn.model.to(dls.device)
    if torch.cuda.is_available(): learn.model.to(memory_format=torch.channels_last)
    if recipe.freeze: learn.freeze()
    return learn


def lr_of(recipe):
    "The learning rate to fit with: a slice (encoder, rest) when the encoder has its own."
    return slice(recipe.encoder_lr, recipe.lr) if recipe.encoder_lr else recipe.lr


class MetricsCSV(Callback):
    "One row per epoch in metrics.csv (epoch, losses, metrics, seconds), written as soon as the epoch ends."
    order = 60  # after the Recorder (50) has logged the epoch

    def __init__(self, path): self.path = Path(path)
    def before_fit(self):
        self.names = [n for n in self.recorder.metric_names if n != 'time']
        if self.path.exists() and is_rank0():  # resuming: keep the finished epochs' rows, drop any later ones
            rows = pd.read_csv(self.path)
            rows[rows['epoch'] < self.learn.first_epoch].to_csv(self.path, index=False)
    def before_epoch(self): self.t0 = time.perf_counter()
    def after_epoch(self):
        if not is_rank0(): return
        row = dict(zip(self.names, [self.epoch, *self.recorder.values[-1]]))
        row['seconds'] = round(time.perf_counter() - self.t0, 3)
        pd.DataFrame([row]).to_csv(self.path, mode='a', header=not self.path.exists(), index=False)


class EpochLog(Callback):
    "One line per epoch, named after the run (several runs may print at once with --jobs)."
    order = 51
    def __init__(self, run_name): self.run_name = run_name
    def before_fit(self):
        names = [n for n in self.recorder.metric_names if n not in ('epoch', 'time')]
        def log(values):
            if not is_rank0() or len(values) < 2: return
            pairs = ', '.join(f'{n} {v:.4f}' for n, v in zip(names, values[1:]) if isinstance(v, (int, float)))
            print(f"{self.run_name} epoch {values[0] + 1}/{self.n_epoch}: {pairs} ({values[-1]})", flush=True)
        self.learn.logger = log


class Checkpoints(Callback):
    """The best epoch's weights (model.pth, by `monitor`; the last epoch when `monitor` is None) and the resume state
    of the last finished epoch (last.pth: model, optimiser, RNG states, smoothed loss, statistics), both written
    atomically, so a kill mid-write leaves the previous file whole.

    Replaces fastai's SaveModelCallback: that one writes weights only, in place, and forgets the best value on resume;
    here the checkpoint carries its recipe, so `load_checkpoint` rebuilds the model without any other file."""
    order = 65  # after MetricsCSV, so that a saved epoch is always in metrics.csv

    def __init__(self, run_dir, recipe, monitor, best=None, stats=()):
        self.run_dir, self.recipe, self.monitor, self.stats = Path(run_dir), recipe, monitor, list(stats)
        self.best = best  # (epoch, value) of the best epoch so far, restored on resume

    def before_fit(self):
        if self.monitor: self.idx = list(self.recorder.metric_names[1:]).index(self.monitor)

    def after_epoch(self):
        if not is_rank0(): return
        model = get_model(self.learn.model)
        value = self.recorder.values[-1][self.idx] if self.monitor else None
        if self.monitor is None or self.best is None or (value is not None and value > self.best[1]):
            self.best = (self.epoch, value)
            _atomic_save(dict(model=model.state_dict(), recipe=self.recipe.to_dict(), epoch=self.epoch,
                              monitor=self.monitor, value=value), self.run_dir / 'model.pth')
        _atomic_save(dict(model=model.state_dict(), opt=self.learn.opt.state_dict(), epoch=self.epoch,
                          best=list(self.best), rng=_rng_state(self.learn), recipe=self.recipe.to_dict(),
                          smooth=[self.recorder.smooth_loss.val, self.recorder.smooth_loss.count],
                          stats=[s.state() for s in self.stats]), self.run_dir / 'last.pth')


def _rng_state(learn):
    np_state = np.random.get_state()
    return dict(python=random.getstate(), numpy=[np_state[0], torch.as_tensor(np_state[1].astype(np.int64)),
                                                 *np_state[2:]],
                torch=torch.get_rng_state(), cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                loaders=[_loader(dl).rng.getstate() for dl in learn.dls.loaders])


def _loader(dl): return getattr(dl, 'dl', dl)  # under DDP fastai's DistributedDL wraps the loader that shuffles


def _set_rng_state(learn, state):
    random.setstate(_tuples(state['python']))
    np.random.set_state((state['numpy'][0], state['numpy'][1].numpy().astype(np.uint32), *state['numpy'][2:]))
    torch.set_rng_state(state['torch'])
    if torch.cuda.is_available() and state['cuda']: torch.cuda.set_rng_state_all(state['cuda'])
    for dl, s in zip(learn.dls.loaders, state['loaders']): _loader(dl).rng.setstate(_tuples(s))


def _tuples(o): return tuple(_tuples(v) for v in o) if isinstance(o, (list, tuple)) else o


class _RestoreSmoothLoss(Callback):
    "Put back the smoothed training loss of the epoch a run resumes after (the Recorder resets it in before_fit)."
    order = 55
    def __init__(self, val, count): self.val, self.count = val, count
    def before_fit(self):
        sl = self.recorder.smooth_loss
        sl.val, sl.count = torch.as_tensor(self.val).to(sl.val.device if torch.is_tensor(sl.val) else 'cpu'), self.count


def load_history(run_dir):
    "A run's metrics.csv as a frame."
    return pd.read_csv(Path(run_dir) / 'metrics.csv')


def fit_recipe(learn, recipe, cbs=()):
    "`fit` or `fit_one_cycle` as the recipe says, inside fastai's `distrib_ctx` under torchrun (DDP)."
    fit = learn.fit_one_cycle if recipe.schedule == 'one_cycle' else learn.fit
    if is_distributed():
        import fastai.distributed  # adds Learner.distrib_ctx
        fastai.distributed.DistributedDL._broadcast = _broadcast_on_backend
        kw = {} if torch.cuda.is_available() else dict(cpu=True)
        with learn.distrib_ctx(sync_bn=torch.cuda.is_available(), **kw): fit(recipe.epochs, lr_of(recipe), cbs=cbs)
    else: fit(recipe.epochs, lr_of(recipe), cbs=cbs)


def _broadcast_on_backend(self, t, rank):
    "fastai's DistributedDL broadcasts the epoch's shuffled indices on CUDA only; gloo (CPU DDP) needs CPU tensors."
    import torch.distributed as dist
    t = torch.tensor(t, dtype=torch.long, device='cuda' if dist.get_backend() == 'nccl' else 'cpu')
    dist.broadcast(t, rank)
    return t.cpu().tolist()


def _resume(learn, run_dir, recipe, stats):
    "Load last.pth when there is one: (first epoch to run, best so far, callbacks to add)."
    path = Path(run_dir) / 'last.pth'
    if not path.exists(): return 0, None, []
    state = _read_checkpoint(path)
    if state.get('recipe') != recipe.to_dict():
        raise ValueError(f"{path}: a checkpoint of another recipe; remove the run folder {run_dir} to train it anew")
    get_model(learn.model).load_state_dict(state['model'])
    if learn.opt is None: learn.create_opt()
    learn.opt.load_state_dict(state['opt'])
    _set_rng_state(learn, state['rng'])
    for s, st in zip(stats, state['stats']): s.load_state(st)
    print(f"{Path(run_dir).name}: resuming after epoch {state['epoch'] + 1} of {recipe.epochs}")
    return state['epoch'] + 1, tuple(state['best']), [_RestoreSmoothLoss(*state['smooth'])]


def train_run(recipe, run_dir, options=RunOptions()):
    """Train `recipe` (resolved: see `lab.data.resolve_data`) into `run_dir` and return its summary.

    A finished run (summary.json present) is not trained again; an interrupted one continues from last.pth."""
    run_dir = Path(run_dir)
    if (run_dir / 'summary.json').is_file(): return read_json(run_dir / 'summary.json')
    from .data import build_data  # here: lab.data imports the data layer, which the model code does not need
    from .evaluate import evaluate_run
    setup_torch(options.jobs)
    seed_everything(recipe.seed, recipe.deterministic)
    data = build_data(recipe, say=False)  # the stage said which data it is
    model = build_model(recipe)
    stats = _stats_callbacks(data.dls, recipe.epochs) if options.stats else []
    learn = make_learner(recipe, model, data.dls, cbs=stats)
    learn.path, learn.model_dir = run_dir, '.'
    if is_rank0(): run_dir.mkdir(parents=True, exist_ok=True)
    n_params, n_trainable = count_params(model), count_params(model, trainable_only=True)
    precision = 'bf16 mixed' if use_bf16(recipe.precision) else 'fp32'
    config = dict(recipe=recipe.to_dict(), run=run_dir.name, model=describe_model(recipe), data=data.info,
                  params=n_params, trainable_params=n_trainable, precision=precision, environment=environment_info())
    if is_rank0():
        if (run_dir / 'config.json').exists():
            if read_json(run_dir / 'config.json').get('recipe') != recipe.to_dict():
                raise ValueError(f"{run_dir}: holds a run of another recipe; it is not overwritten")
        else: write_json(run_dir / 'config.json', config)
        (run_dir / 'model.txt').write_text(f'{model}\n\nparameters: {n_params:,} ({n_trainable:,} trainable)\n')
    start, best, extra = _resume(learn, run_dir, recipe, stats)
    learn.first_epoch = start
    monitor = None if recipe.train_on_valid else recipe.monitor
    cbs = [MetricsCSV(run_dir / 'metrics.csv'), EpochLog(run_dir.name),
           Checkpoints(run_dir, recipe, monitor, best, stats), *extra]
    t0 = time.perf_counter()
    fit_recipe(learn, recipe, cbs)
    wall = time.perf_counter() - t0
    if not is_rank0(): return None
    kept = _read_checkpoint(run_dir / 'model.pth')
    get_model(learn.model).load_state_dict(kept['model'])  # the best epoch by valid (T2.11), or the last one
    history = load_history(run_dir)
    summary = _summary(history, recipe, monitor, kept['epoch'], n_params, n_trainable, wall, run_dir.name)
    summary.update({k: data.info[k] for k in ('n_train', 'n_valid', 'n_test')}, data_path=data.info['data_path'])
    if options.stats: summary.update(_save_stats(stats, run_dir, f"{run_dir.name} ({recipe.model.get('act')})"))
    if options.figures: plot_curves(history, run_dir, ('loss', 'accuracy') if recipe.task == 'classify' else
                                    ('loss', 'iou', 'dice', 'pixel_acc'))
    seed_everything(recipe.seed)  # evaluation draws augmentations (TTA) and samples: the same ones every time
    with _alone():
        summary.update(evaluate_run(learn, data, recipe, run_dir, options))
        if options.export: _export(learn)
    write_json(run_dir / 'summary.json', summary)
    (run_dir / 'last.pth').unlink(missing_ok=True)  # the resume state is not needed once the run is finished
    return summary


@contextmanager
def _alone():
    "Rank 0 evaluating by itself after DDP: fastai gathers predictions from every process whenever WORLD_SIZE > 1."
    world = os.environ.get('WORLD_SIZE')
    if world: os.environ['WORLD_SIZE'] = '1'
    try: yield
    finally:
        if world: os.environ['WORLD_SIZE'] = world


def _summary(history, recipe, monitor, kept_epoch, n_params, n_trainable, wall, name):
    row = lambda i: {k: float(v) for k, v in history.iloc[i].items()}
    kept = int(np.flatnonzero(history['epoch'].to_numpy() == kept_epoch)[0])
    return dict(best_epoch=int(kept_epoch), best=row(kept), final=row(-1),
                min_valid_loss=float(history['valid_loss'].min()), monitor=monitor or 'last epoch (train on valid)',
                params=n_params, trainable_params=n_trainable, epochs=recipe.epochs, seed=recipe.seed,
                wall_seconds=round(wall, 2), epoch_seconds=float(history['seconds'].median()), run=name,
                checkpoint='model.pth', recipe=recipe.to_dict())


def _stats_callbacks(dls, epochs):
    from .callbacks import ActivationStatsLite, GradientStats
    every = max(1, len(dls.train) * epochs // 100)  # about 100 records per run, whatever its length
    return [GradientStats(every=every), ActivationStatsLite(every=every)]


def _save_stats(stats, run_dir, title):
    """Write a run's statistics (CSV and PNG) and return their summary: mean share of activations <= 0, last-layer
    activation std, and the ratio of the first to the last layer's weight-gradient norm, averaged over training."""
    from .callbacks import plot_activation_stats, plot_norms_over_steps
    grad, act = stats
    grad.to_frame().to_csv(run_dir / 'gradient_stats.csv', index=False)
    act.to_frame().to_csv(run_dir / 'activation_stats.csv', index=False)
    plot_norms_over_steps(grad, run_dir / 'gradient_norms.png', title=f'{title}: gradients over training')
    plot_activation_stats(act, run_dir / 'activation_stats.png', title=f'{title}: activations over training')
    g = grad.grad_norms.mean(0)
    return dict(dead_share=float(np.nanmean(act.dead)), act_std_last=float(np.nanmean(act.stds[:, -1])),
                grad_first_over_last=float(g[0] / g[-1]))


def _export(learn):
    "learn.export() without the training-only callbacks (mixed precision, mixing, statistics hooks)."
    from .callbacks import ActivationStatsLite, GradientStats
    for cb in [cb for cb in learn.cbs if isinstance(cb, (MixedPrecision, MixUp, CutMix, GradientStats,
                                                          ActivationStatsLite))]:
        learn.remove_cb(cb)
    learn.model.to(memory_format=torch.contiguous_format)
    learn.export('export.pkl')
