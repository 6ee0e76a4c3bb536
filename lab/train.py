"""Fit helpers: a Learner for a custom model and one training run written to its own folder (D7).

Train-set metrics are fastai's `Recorder(train_metrics=True)`: accuracy (or IoU...) accumulated over all
training batches of the epoch, in train mode with augmentation on, while the weights still move; the train
loss is fastai's smoothed training loss at the end of the epoch. Valid metrics are computed after the epoch.
"""
import time
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.tracker import SaveModelCallback
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.optimizer import Adam, SGD
from fastai.torch_core import set_seed

from arch.layers import count_params
from .report import plot_curves
from .runs import environment_info, write_json

__all__ = ['OPTIMIZERS', 'make_learner', 'fit_run', 'MetricsCSV', 'load_history']

# Plain Adam (no weight decay) is the spec's optimiser (T2.5); AdamW is fastai's Adam with decoupled decay.
OPTIMIZERS = {
    'adam': lambda wd: partial(Adam, wd=wd, decouple_wd=False),
    'adamw': lambda wd: partial(Adam, wd=wd, decouple_wd=True),
    'sgd': lambda wd: partial(SGD, mom=0.9, wd=wd),
}


class MetricsCSV(Callback):
    "Append one row per epoch to `metrics.csv` (epoch, losses, metrics, seconds) as soon as the epoch ends."
    order = 60  # after the Recorder (50) has logged the epoch

    def __init__(self, path): self.path = Path(path)
    def before_fit(self):
        self.path.unlink(missing_ok=True)
        self.names = [n for n in self.recorder.metric_names if n != 'time']
    def before_epoch(self): self.t0 = time.perf_counter()
    def after_epoch(self):
        row = dict(zip(self.names, [self.epoch, *self.recorder.values[-1]]))
        row['seconds'] = round(time.perf_counter() - self.t0, 3)
        pd.DataFrame([row]).to_csv(self.path, mode='a', header=not self.path.exists(), index=False)


def load_history(run_dir):
    "A run's metrics.csv as a frame."
    return pd.read_csv(Path(run_dir) / 'metrics.csv')


def make_learner(model, dls, splitter, loss_func=None, metrics=(accuracy,), opt='adam', wd=0.0, cbs=(), train_bn=True,
                 bf16=None):
    """A fastai Learner for a custom model: the splitter is required (without it `freeze()` does nothing),
    train metrics are recorded next to the valid ones, and the optimiser is chosen by name (adam, adamw, sgd).
    `bf16`: bfloat16 mixed precision (fastai `MixedPrecision`); None means on a GPU that supports it."""
    if opt not in OPTIMIZERS: raise ValueError(f"--opt {opt!r}: expected one of {', '.join(OPTIMIZERS)}")
    if bf16 is None: bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cbs = list(cbs) + ([MixedPrecision(amp_mode='bf16')] if bf16 else [])
    learn = Learner(dls, model, loss_func=loss_func or CrossEntropyLossFlat(), opt_func=OPTIMIZERS[opt](wd),
                    metrics=list(metrics), splitter=splitter, cbs=cbs, train_bn=train_bn)
    learn.recorder.train_metrics = True
    return learn


def fit_run(learn, run_dir, epochs, lr, config, monitor='valid_accuracy', schedule='constant', seed=0,
            plot_metrics=('loss', 'accuracy')):
    """Train `learn` into `run_dir` and return its summary.

    Writes config.json (config, seed, parameter counts, environment), model.txt (`print(model)`), metrics.csv
    (one row per epoch), the checkpoint of the best epoch by `monitor` (model.pth, reloaded at the end, so the
    learner holds the best weights afterwards), one curve PNG per metric, and summary.json.
    `schedule`: 'constant' (`learn.fit`) or 'one_cycle' (`fit_one_cycle`); `lr` may be a slice.
    """
    run_dir = Path(run_dir); run_dir.mkdir(parents=True, exist_ok=True)
    learn.path, learn.model_dir = run_dir, '.'
    n_params, n_trainable = count_params(learn.model), count_params(learn.model, trainable_only=True)
    precision = 'bf16 mixed' if any(isinstance(cb, MixedPrecision) for cb in learn.cbs) else 'fp32'
    write_json(run_dir / 'config.json', dict(config=config, seed=seed, epochs=epochs, lr=str(lr), schedule=schedule,
                                             monitor=monitor, params=n_params, precision=precision,
                                             environment=environment_info()))
    (run_dir / 'model.txt').write_text(f'{learn.model}\n\nparameters: {n_params:,}\n')
    cbs = [SaveModelCallback(monitor=monitor, fname='model'), MetricsCSV(run_dir / 'metrics.csv')]
    set_seed(seed)
    start = time.perf_counter()
    if schedule == 'one_cycle': learn.fit_one_cycle(epochs, lr, cbs=cbs)
    elif schedule == 'constant': learn.fit(epochs, lr, cbs=cbs)
    else: raise ValueError(f"schedule {schedule!r}: expected 'constant' or 'one_cycle'")
    wall = time.perf_counter() - start
    history = load_history(run_dir)
    plot_curves(history, run_dir, plot_metrics)
    best = int(history[monitor].idxmax() if 'loss' not in monitor else history[monitor].idxmin())
    final = history.iloc[-1].to_dict()
    summary = dict(best_epoch=int(history.loc[best, 'epoch']), best={k: float(v) for k, v in history.loc[best].items()},
                   final={k: float(v) for k, v in final.items()}, min_valid_loss=float(history['valid_loss'].min()),
                   monitor=monitor, params=n_params,
                   trainable_params=n_trainable, epochs=epochs, seed=seed, wall_seconds=round(wall, 2),
                   run=run_dir.name, checkpoint='model.pth')  # relative: the stage folder is renamed when done
    write_json(run_dir / 'summary.json', summary)
    return summary

