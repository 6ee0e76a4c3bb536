"""One training run from its recipe: `train_run(recipe, run_dir)` writes the run folder (D7) and returns its record.

A run is a pure function of its recipe: it seeds Python, NumPy and torch, then builds its DataLoaders (whose
shuffling and augmentation draw from those seeds), its model and its Learner, so that the same recipe gives the same
numbers (bit for bit on a CPU at the same thread count). Each epoch writes a row of metrics.csv, the best checkpoint
(model.pth, with the recipe inside) and last.pth (model, optimiser, RNG states): a run stopped by anything, SIGKILL
included, continues from its last finished epoch with the numbers it would have had. The folder holds:
config.json (recipe, data, environment), model.txt (fastai's `learn.summary()` and the model), metrics.csv,
model.pth, export.pkl (`learn.export()`, for scripts/predict.py), curves, with --tensorboard TensorBoard's event
files (`lab.tensorboard`) and, last of all, summary.json: a run folder without it is unfinished.

Train-set metrics are fastai's `Recorder(train_metrics=True)`: accumulated over the epoch's training batches, with
augmentation (and CutMix) on, while the weights move; the train loss is fastai's smoothed loss at the epoch's end.
"""
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.mixup import CutMix, MixUp
from fastai.torch_core import get_model

from fastai_lab.arch.layers import count_params
from .caveats import run_caveats
from .cost import measure_model, run_cost
from .checkpoint import Checkpoints, read_checkpoint, resume
from .data.loaders import build_data
from .distributed import evaluating_alone, is_rank0
from .evaluate import evaluate_run
from .figures import then
from .ingredients import TRAINING_ONLY, WeightEMA
from .io import read_json, write_json, write_text, writing
from .learner import fit_recipe, make_learner, model_summary, setup_torch
from .models import build_model
from .machine import environment_info, machine_info, seed_everything
from .progress import RunProgress
from .record import RunRecord, data_counts
from .recipe import describe_model
from .tables import plot_curves
from .tensorboard import TensorBoardLog

__all__ = ['RunOptions', 'train_run', 'MetricsCSV', 'EpochLog', 'load_history']


@dataclass(frozen=True)
class RunOptions:
    "What a run does besides training (nothing here changes its numbers)."
    test: bool = False       # evaluate the kept checkpoint on the test set (per-class table, confusion matrix...)
    figures: bool = True     # show_results and test figures (PNG); every run draws its curves
    stats: bool = False      # record per-layer activation and gradient statistics (lab.callbacks)
    export: bool = True      # learn.export() -> export.pkl, for scripts/predict.py
    real_pair: bool = False  # segmentation: also score the real Kaggle frame(s) of a known place (sim-to-real)
    tensorboard: bool = False  # TensorBoard events in the run folder (lab.tensorboard), statistics recorded for them


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
        with writing(self.path): pd.DataFrame([row]).to_csv(self.path, mode='a', header=not self.path.exists(), index=False)


class EpochLog(Callback):
    """One line per epoch, named after the run (several runs may print at once with --jobs). Epochs count from 0, as
    in fastai's logs and metrics.csv: 'epoch 0 (1 of 2)' is the first of two."""
    order = 51
    def __init__(self, run_name): self.run_name = run_name
    def before_fit(self):
        names = [n for n in self.recorder.metric_names if n not in ('epoch', 'time')]
        def log(values):
            if not is_rank0() or len(values) < 2: return
            pairs = ', '.join(f'{n} {v:.4f}' for n, v in zip(names, values[1:]) if isinstance(v, (int, float)))
            print(f"{self.run_name} epoch {values[0]} ({values[0] + 1} of {self.n_epoch}): {pairs} ({values[-1]})",
                  flush=True)
        self.learn.logger = log


def load_history(run_dir):
    "A run's metrics.csv as a frame."
    return pd.read_csv(Path(run_dir) / 'metrics.csv')


def train_run(recipe, run_dir, options=RunOptions()):
    """Train `recipe` (resolved: see `lab.data.resolve_data`) into `run_dir`; return its `RunRecord`.

    A finished run (summary.json present) is not trained again; an interrupted one continues from last.pth. Inside a
    stage the run's figures are drawn beside the next run (`lab.figures`): its summary.json is written once they are."""
    run_dir = Path(run_dir)
    if (run_dir / 'summary.json').is_file(): return RunRecord.read(run_dir)
    setup_torch()
    seed_everything(recipe.seed, recipe.deterministic)
    data = build_data(recipe, say=False).check(say=False)  # the stage checked and said which data it is
    model = build_model(recipe)
    stats = _stats_callbacks(data.dls, recipe.epochs) if options.stats or options.tensorboard else []
    learn = make_learner(recipe, model, data.dls, cbs=stats)
    learn.path, learn.model_dir = run_dir, '.'
    if is_rank0(): run_dir.mkdir(parents=True, exist_ok=True)
    n_params, n_trainable = count_params(model), count_params(model, trainable_only=True)
    machine = machine_info(recipe.precision, getattr(data.dls, 'device', None))  # where and in what precision, and why
    device = next(learn.model.parameters()).device
    cost = measure_model(learn.model, recipe, data.info['bs'], device, machine['precision'], key=str(run_dir.parent))
    config = dict(recipe=recipe.to_dict(), run=run_dir.name, model=describe_model(recipe), data=data.info,
                  params=n_params, trainable_params=n_trainable, precision=machine['precision_words'], machine=machine,
                  environment=environment_info(), caveats=run_caveats(recipe, data.source, data.caveats), cost=cost)
    summary_text = model_summary(learn, recipe.size)  # on every rank: under DDP its get_preds gathers (all_gather)
    if is_rank0():
        if (run_dir / 'config.json').exists():
            if read_json(run_dir / 'config.json').get('recipe') != recipe.to_dict():
                raise ValueError(f"{run_dir}: holds a run of another recipe; it is not overwritten")
        else: write_json(run_dir / 'config.json', config)
        write_text(run_dir / 'model.txt', f'{summary_text}\nparameters: {n_params:,} ({n_trainable:,} trainable)\n')
    # what last.pth keeps besides weights; not the statistics recorded only for --tensorboard, a runtime option that
    # a resumed run may add or drop
    kept_states = (stats if options.stats else []) + [cb for cb in learn.cbs if isinstance(cb, WeightEMA)]
    start, best, extra = resume(learn, run_dir, recipe, kept_states)
    learn.first_epoch = start
    monitor = None if recipe.train_on_valid else recipe.monitor
    cbs = [MetricsCSV(run_dir / 'metrics.csv'), EpochLog(run_dir.name), RunProgress(run_dir.name),
           Checkpoints(run_dir, recipe, monitor, best, kept_states), *extra]
    if options.tensorboard: cbs.append(TensorBoardLog(run_dir, stats))
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)  # the run's own peak, not the timing's
    t0 = time.perf_counter()
    fit_recipe(learn, recipe, cbs)
    wall = time.perf_counter() - t0
    learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, TRAINING_ONLY)])  # EMA, mix switch: training only
    if not is_rank0(): return None
    kept = read_checkpoint(run_dir / 'model.pth')
    get_model(learn.model).load_state_dict(kept['model'])  # the best epoch by valid (T2.11), or the last one
    history = load_history(run_dir)
    record = _summary(history, recipe, monitor, kept['epoch'], n_params, n_trainable, wall, run_dir.name)
    record.update(**data_counts(data.info), data_path=data.info['data_path'], bs=data.info['bs'],
                  caveats=run_caveats(recipe, data.source, data.caveats))
    record.update(cost=run_cost(cost, history, len(data.dls.train) * data.dls.train.bs, device,
                                torch.cuda.max_memory_allocated(device) if device.type == 'cuda' else None))
    write_json(run_dir / 'config.json', dict(read_json(run_dir / 'config.json'), cost=record.cost))
    if options.stats: record.update(**_save_stats(stats, run_dir, f"{run_dir.name} ({recipe.model.get('act')})"))
    plot_curves(history, run_dir, ('loss', 'accuracy') if recipe.task == 'classify' else ('loss', 'iou', 'dice', 'pixel_acc'))
    seed_everything(recipe.seed)  # evaluation draws augmentations (TTA) and samples: the same ones every time
    with evaluating_alone():
        record.update(**evaluate_run(learn, data, recipe, run_dir, options.test, options.figures, options.real_pair))
        if options.export: _export(learn)
    def finish():  # once its figures are on disk too: then the run is finished and its resume state not needed
        record.write(run_dir)
        (run_dir / 'last.pth').unlink(missing_ok=True)
    then(finish, run_dir.name)
    return record


def _summary(history, recipe, monitor, kept_epoch, n_params, n_trainable, wall, name):
    row = lambda i: {k: float(v) for k, v in history.iloc[i].items()}
    kept = int(np.flatnonzero(history['epoch'].to_numpy() == kept_epoch)[0])
    if monitor and np.isnan(history[monitor].iloc[kept]): monitor = f'last epoch ({monitor} undefined)'
    return RunRecord(best_epoch=int(kept_epoch), best=row(kept), final=row(-1),
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
    from .stat_plots import plot_activation_stats, plot_norms_over_steps
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
