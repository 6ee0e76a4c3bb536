"""What a long run says while it runs: a few progress lines inside a long epoch, and after the first epoch of a stage
one line estimating the time its known runs will take (`scripts/run_all.py` estimates the rest of the lab from the
runs each script declares).

`RunProgress` is a fastai callback that measures the run it sits in, from the host clock only: no `.item()`, no
device synchronisation per batch (on a GPU the host may run a few batches ahead, so a rate is right over seconds, not
per batch). The stage estimate assumes what it says: every epoch left lasts as long as the one measured, validation
included; variants of different sizes cost differently, so the figure is "about".
"""
import time

from fastai.callback.core import Callback
from fastai.torch_core import find_bs

from .distributed import is_rank0

__all__ = ['PROGRESS_AFTER_S', 'LINES_PER_EPOCH', 'duration', 'estimate_line', 'StageClock', 'RunProgress']

PROGRESS_AFTER_S = 10.0  # an epoch running longer than this prints progress lines
LINES_PER_EPOCH = 4      # about this many per epoch at most (and never closer than PROGRESS_AFTER_S)
clock = time.perf_counter  # the host clock (tests replace it)


def duration(seconds):
    "'40 s', '14 min', '3 h 10 min'."
    if seconds < 90: return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _n(count, word): return f"{count} {word}{'s' if count != 1 else ''}"


def estimate_line(name, epochs_left, seconds_per_epoch, jobs=1, images_per_s=None,
                  assumes='every epoch as long as the first'):
    """'<name>: 6 runs x 25 epochs left, about 14 min at 1,230 img/s (...)' for runs with `epochs_left` (one number
    per run) at `seconds_per_epoch`, `jobs` runs at a time; None when nothing is left."""
    left = [e for e in epochs_left if e > 0]
    if not left or seconds_per_epoch <= 0: return None
    what = (f"{_n(len(left), 'run')} x {_n(left[0], 'epoch')}" if len(set(left)) == 1 else
            f"{_n(len(left), 'run')}, {_n(sum(left), 'epoch')}")
    at_once = f", {jobs} at a time" if jobs > 1 else ''
    speed = f" at {images_per_s:,.0f} img/s" if images_per_s else ''
    return f"{name}: {what} left, about {duration(sum(left) * seconds_per_epoch / jobs)}{speed}{at_once} ({assumes})"


class StageClock:
    """The runs one stage trains in this call (run name -> epochs), and its one estimate line, said after the first
    epoch that finishes. Under --jobs it goes to every worker with a shared flag (`said`, a multiprocessing Value),
    so that only the first epoch anywhere speaks; `quiet`: said already for this stage."""
    def __init__(self, stage, epochs, jobs=1, said=None, quiet=False):
        self.stage, self.epochs, self.jobs, self.said, self.quiet = stage, dict(epochs), jobs, said, quiet

    def _first(self):
        "True once: for the first epoch to finish (in any process sharing `said`)."
        if self.quiet: return False
        if self.said is None:
            self.quiet = True
            return True
        with self.said.get_lock():
            first, self.said.value = not self.said.value, 1
        return first

    def epoch_done(self, run, epochs_done, seconds, images):
        "Print the stage's estimate after the first epoch that finishes (`run` has trained `epochs_done`, `images`)."
        if run not in self.epochs or not self._first(): return
        left = [e - (epochs_done if name == run else 0) for name, e in self.epochs.items()]
        line = estimate_line(self.stage, left, seconds, self.jobs, images / max(seconds, 1e-9),
                             assumes=f"every epoch as long as {run}'s first, validation included")
        if line: print(line, flush=True)


_clock = None  # the StageClock of the runs this process is training, or None


def set_clock(stage_clock):
    "This process's StageClock from now on (None: none); returns the one it replaces."
    global _clock
    before, _clock = _clock, stage_clock
    return before


class RunProgress(Callback):
    """Progress lines inside an epoch that runs longer than PROGRESS_AFTER_S (batches done, images/s), a few per
    epoch, and the stage's estimate after the first epoch (`StageClock`)."""
    order = 52  # after EpochLog (51): the estimate follows the first epoch's line

    def __init__(self, run_name): self.run_name = run_name

    def before_epoch(self):
        self.t0 = clock()
        self.last, self.images, self.lines = self.t0, 0, 0

    def after_batch(self):
        if not self.training: return
        self.images += find_bs(self.learn.yb)  # a shape: no device read
        now = clock()
        elapsed, done, total = now - self.t0, self.iter + 1, self.n_iter
        if elapsed < PROGRESS_AFTER_S or done >= total or not is_rank0(): return
        gap = max(PROGRESS_AFTER_S, elapsed * total / done / LINES_PER_EPOCH)  # the epoch's projected length / 4
        if self.lines and now - self.last < gap: return
        self.last, self.lines = now, self.lines + 1
        print(f"{self.run_name} epoch {self.epoch} ({self.epoch + 1} of {self.n_epoch}): {done}/{total} batches, "
              f"{self.images / elapsed:,.0f} img/s", flush=True)

    def after_epoch(self):
        if _clock is not None and is_rank0() and self.images:
            _clock.epoch_done(self.run_name, self.epoch + 1, clock() - self.t0, self.images)
