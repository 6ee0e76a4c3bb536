"""`--tensorboard`: a run's epochs as TensorBoard events in its own folder, so `tensorboard --logdir results/` shows
every run of a stage side by side (each run folder is one TensorBoard run).

Per epoch: the values metrics.csv holds (losses, metrics, seconds) as scalars, and the activation and gradient
statistics (`lab.callbacks`) of that epoch's records as histograms over the layers. Written with torch's
`SummaryWriter`, not fastai's `TensorBoardCallback`: that one logs the smoothed loss and the hyper-parameters every
batch (a `.item()` device sync per batch) and has no place for the lab's statistics.
"""
import time
from pathlib import Path

import numpy as np
from fastai.callback.core import Callback

from .distributed import is_rank0

__all__ = ['require_tensorboard', 'TensorBoardLog']

MISSING = "--tensorboard: the tensorboard package is not installed (pip install tensorboard)"


def require_tensorboard():
    "torch's SummaryWriter class; a one-line ImportError naming the flag when tensorboard is missing."
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it, and says so less plainly)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError: raise ImportError(MISSING) from None
    return SummaryWriter


class TensorBoardLog(Callback):
    "Per epoch: metrics.csv's values as scalars, the statistics callbacks' records of the epoch as histograms."
    order = 61  # after MetricsCSV (60): the same values, once the Recorder has logged the epoch

    def __init__(self, run_dir, stats=()):
        self.run_dir, self.stats, self.writer = Path(run_dir), list(stats), None

    def before_fit(self):
        if not is_rank0(): return
        self.writer = require_tensorboard()(log_dir=str(self.run_dir))
        self.names = [n for n in self.recorder.metric_names if n not in ('epoch', 'time')]
        # the last step already written (a resumed run has records); by step, as the recorders thin their records
        self.last = {id(s): (int(s.steps[-1]) if len(s.steps) else -1) for s in self.stats}

    def before_epoch(self): self.t0 = time.perf_counter()

    def after_epoch(self):
        if self.writer is None: return
        values = self.recorder.values[-1]
        for name, v in zip(self.names, values):
            if isinstance(v, (int, float, np.floating)): self.writer.add_scalar(name, float(v), self.epoch)
        self.writer.add_scalar('seconds', time.perf_counter() - self.t0, self.epoch)
        for s in self.stats:
            new = s.steps > self.last[id(s)]
            for stat in s.stat_names:
                block = s._stat(stat)[new]  # this epoch's records, steps x layers
                block = block[np.isfinite(block)]  # a frozen layer records NaN gradients
                if block.size: self.writer.add_histogram(f'{type(s).__name__}/{stat}', block, self.epoch)
            if new.any(): self.last[id(s)] = int(s.steps[-1])
        self.writer.flush()

    def after_fit(self):
        if self.writer is not None: self.writer.close(); self.writer = None
