"""What a long run says while it runs: a few progress lines inside a long epoch, and after the first epoch of a stage
one line estimating the time its remaining runs will take (`scripts/run_all.py` estimates the whole lab the same way).

Host-side clock only: no `.item()`, no device synchronisation per batch. On a GPU the host may run a few batches
ahead of the device, so a rate is right over seconds, not per batch. The estimates are simple and say what they
assume: every remaining epoch costs, per pixel of its training images, what the measured one did (validation
included); runs of a stage's variants differ in cost (channels, blocks), so the figure is "about".
"""
import inspect, time
from dataclasses import dataclass
from pathlib import Path

from fastai.callback.core import Callback
from fastai.torch_core import find_bs

from fastai_lab.data.locate import find_moon
from fastai_lab.data.moon import moon_pairs
from fastai_lab.data.synthetic import make_moon_like
from .distributed import is_rank0
from .io import read_json
from .lookup import latest_stage_summary
from .recipe import Recipe

__all__ = ['PROGRESS_AFTER_S', 'LINES_PER_EPOCH', 'Work', 'work_of', 'duration', 'estimate_line', 'StagePlan',
           'using_plan', 'RunProgress', 'lab_estimate']

PROGRESS_AFTER_S = 10.0  # an epoch running longer than this prints progress lines
LINES_PER_EPOCH = 4      # about this many per epoch at most (and never closer than PROGRESS_AFTER_S)
clock = time.perf_counter  # the host clock (tests replace it)

_plan = None  # the StagePlan of the runs this process is training (`using_plan`), or None


@dataclass(frozen=True)
class Work:
    "A run still to train: its epochs left, training images per epoch and image size (px); cost ~ epochs x images x px^2."
    name: str
    epochs: int
    images: int
    size: int

    @property
    def pixels(self): return self.epochs * self.images * self.size ** 2


def work_of(name, recipe, n_train, n_valid, epochs_done=0):
    "The Work of `recipe` on data of `n_train` training and `n_valid` valid images (train + valid for the final model)."
    return Work(name, max(0, recipe.epochs - epochs_done), n_train + (n_valid if recipe.train_on_valid else 0),
                recipe.size)


def duration(seconds):
    "'40 s', '14 min', '3 h 10 min'."
    if seconds < 90: return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def estimate_line(name, todo, pixels_per_s, size, jobs=1, assumes='every epoch as fast per pixel as the first'):
    """'<name>: 6 runs x 25 epochs left, about 14 min at 1,230 img/s (...)' for the Work items `todo` at
    `pixels_per_s` (images/s shown at `size` px), `jobs` runs at a time; None when nothing is left."""
    todo = [w for w in todo if w.epochs]
    if not todo or pixels_per_s <= 0: return None
    epochs = {w.epochs for w in todo}
    def n(count, word): return f"{count} {word}{'s' if count != 1 else ''}"
    what = (f"{n(len(todo), 'run')} x {n(epochs.pop(), 'epoch')}" if len(epochs) == 1 else
            f"{n(len(todo), 'run')}, {n(sum(w.epochs for w in todo), 'epoch')}")
    seconds = sum(w.pixels for w in todo) / (pixels_per_s * jobs)
    at_once = f", {jobs} at a time" if jobs > 1 else ''
    return (f"{name}: {what} left, about {duration(seconds)} at {pixels_per_s / size ** 2:,.0f} img/s{at_once} "
            f"({assumes})")


class StagePlan:
    """The runs one stage still trains (run name -> resolved Recipe, in order, then those it will train `later`), and
    its one estimate line, said after the first epoch that finishes. Under --jobs the plan goes to every worker
    process with a shared flag (`said`, a multiprocessing Value), so that only the first epoch anywhere speaks."""
    def __init__(self, stage, runs, later=(), jobs=1, said=None, quiet=False):
        self.stage, self.runs, self.later, self.jobs = stage, list(runs), list(later), jobs
        self.said, self.quiet = said, quiet

    def _first(self):
        "True once: for the first epoch to finish (in any process sharing `said`)."
        if self.quiet: return False
        if self.said is None:
            self.quiet = True
            return True
        with self.said.get_lock():
            first, self.said.value = not self.said.value, 1
        return first

    def epoch_done(self, run, epochs_done, seconds, images, size, n_train, n_valid):
        "Print the stage's estimate after the first epoch that finishes (`run` trained `images` at `size` px)."
        if run not in [name for name, _ in self.runs] or not self._first(): return
        todo = [work_of(name, r, n_train, n_valid, epochs_done if name == run else 0)
                for name, r in self.runs + self.later]
        line = estimate_line(self.stage, todo, images * size ** 2 / max(seconds, 1e-9), size, self.jobs,
                             assumes=f"every epoch as fast per pixel as {run}'s first, validation included")
        if line: print(line, flush=True)


class using_plan:
    "Context manager: this process trains the runs of `plan` (None: no plan) until it exits."
    def __init__(self, plan): self.plan = plan
    def __enter__(self):
        global _plan
        self.before, _plan = _plan, self.plan
        return self.plan
    def __exit__(self, *exc):
        global _plan
        _plan = self.before


def set_plan(plan):
    "This process's plan from now on (a --jobs worker's, for its life)."
    global _plan
    _plan = plan


class RunProgress(Callback):
    """Progress lines inside an epoch that runs longer than PROGRESS_AFTER_S (batches done, images/s), a few per
    epoch, and the stage's estimate after the first epoch (`StagePlan`). `data_info`: the run's `Data.info` (its
    train/valid counts)."""
    order = 52  # after EpochLog (51): the estimate follows the first epoch's line

    def __init__(self, run_name, recipe, data_info):
        self.run_name, self.size = run_name, recipe.size
        self.n_train, self.n_valid = data_info['n_train'], data_info['n_valid']

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
        if _plan is not None and is_rank0() and self.images:
            _plan.epoch_done(self.run_name, self.epoch + 1, clock() - self.t0, self.images, self.size, self.n_train,
                             self.n_valid)


def _moon_counts(moon, recipe):
    "About how many (train, valid) frames a U-Net recipe will see: the moon data found, or the set it will generate."
    try: n = len(moon_pairs(find_moon(moon, generate=False, quiet=True)[0]))
    except (FileNotFoundError, ValueError): n = inspect.signature(make_moon_like).parameters['n'].default
    n = min(n, recipe.max_items or n)
    n_valid = max(1, round(recipe.valid_pct * n))
    return max(1, n - n_valid - (max(1, round(recipe.test_pct * n)) if recipe.test_pct else 0)), n_valid


def lab_estimate(out, measured, planned, seeds, moon=None):
    """One line: the time the runs `planned` (script -> the recipes it trains per seed) will take for `seeds`, at the
    speed per pixel of the newest finished stage `measured` under `out` (the median epoch of its runs, validation
    included), one run after another; None without the numbers. `moon`: the U-Net scripts' data folder."""
    summary = latest_stage_summary(out, measured, say=False)
    runs = [read_json(p) for p in sorted(Path(summary['path']).glob('*/summary.json'))] if summary else []
    if not runs or not planned: return None
    speeds = [work_of(r['run'], Recipe.from_dict(r['recipe']), r['n_train'], r['n_valid']).images
              * r['recipe']['size'] ** 2 / r['epoch_seconds'] for r in runs if r.get('epoch_seconds')]
    if not speeds: return None
    todo = []
    for name, recipes in planned.items():
        for r in recipes:
            n_train, n_valid = ((runs[0]['n_train'], runs[0]['n_valid']) if r.task == 'classify' else
                                _moon_counts(moon, r))
            todo += [work_of(f'{name} seed{s}', r, n_train, n_valid) for s in seeds]
    return estimate_line(f"run_all, {len(planned)} training script{'s' if len(planned) > 1 else ''} after {measured}",
                         todo, sum(speeds) / len(speeds), runs[0]['recipe']['size'],
                         assumes=f"training epochs only, each as fast per pixel as {measured}'s with its validation; "
                                 f"one run after another")
