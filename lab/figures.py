"""Every PNG of the lab goes through `save_figure`: laid out (tight_layout), written atomically, closed.

Laying out and rendering is the slow part of a figure (50-600 ms each in matplotlib: a third of the quick run_all
on the 2-core CPU). So inside `drawing_beside` (a script's `main`, a stage, a results folder) a finished figure is
pickled (~10 ms; matplotlib pickles figures whole) and one forked process draws it on another core while this one
trains on. What must follow a run's figures (its summary.json: the mark that the run is finished) goes to `then`,
which runs it as soon as they are on disk; leaving `drawing_beside` waits for all of them, so a stage's summary and
a published folder come after their figures. The PNG is the same byte for byte as one drawn here.
"""
import ctypes, os, pickle, signal, sys, threading, weakref
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from matplotlib.transforms import TransformNode

from .distributed import is_distributed
from .io import atomic_write

__all__ = ['save_figure', 'save_pyplot_figure', 'then', 'drawing_beside', 'FiguresFailed']


class FiguresFailed(Exception):
    "Raised by `drawing_beside` when figures (or what followed them) could not be written: `failures` (name, error)."
    def __init__(self, failures):
        super().__init__('; '.join(f"{name}: {error}" for name, error in failures))
        self.failures = failures


def _draw(fig, path, dpi, tight, savefig_kwargs):
    # Laid out at the dpi it is written at, the layout's text sizes are savefig's own (one renderer, measured once);
    # and without the engine tight_layout leaves behind, savefig draws the figure once, not twice: ~25% faster.
    fig.set_dpi(dpi)
    if tight: fig.tight_layout(); fig.set_layout_engine(None)
    path = Path(path)
    try:
        with atomic_write(path) as tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix[1:] or 'png', **savefig_kwargs)
    finally: plt.close(fig)
    return path


def _unpickle_transform_keyed_by_id(self, state):
    """`TransformNode.__setstate__` that keys each parent by its id in this process. matplotlib (3.11) keeps the ids
    of the pickling process: a transform made here that happens to get one of those ids takes that parent's place, and
    the parent misses the invalidation when savefig changes the dpi, so its text lands 2 px off (4 of 150 drawing
    processes drew one of three figures so)."""
    pickled, self.__dict__ = state['_parents'], state
    parents = self._parents = {}
    for parent in pickled.values():
        if parent is not None:
            parents[id(parent)] = weakref.ref(parent, lambda _, k=id(parent): parents.pop(k, None))


def _drawing_process(parent):
    """The drawing process draws all it was given: Ctrl-C and SIGTERM are for its parent, which then waits for it;
    it dies with the parent (a SIGKILL, which the parent cannot pass on; Linux's parent-death signal)."""
    TransformNode.__setstate__ = _unpickle_transform_keyed_by_id  # this process only unpickles figures to draw them
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent: os._exit(0)  # the parent died before the line above


def _draw_pickled(blob, rc, path, dpi, tight, savefig_kwargs):
    with matplotlib.rc_context(rc):  # this process's settings when the figure was saved, not when the drawer forked
        return _draw(pickle.loads(blob), path, dpi, tight, savefig_kwargs)


class _Beside:
    """The drawing process and what waits on it: each `then(fn)` runs fn, in the executor's thread, as soon as the
    figures saved before it (since the previous `then`) are written; `flush` waits for all of them."""
    def __init__(self):
        self.figures, self.finished, self.failures = [], [], []

    def submit(self, fig, *args):
        try: blob = pickle.dumps(fig)
        except Exception: return _draw(fig, *args)  # an artist that does not pickle: drawn here, now
        plt.close(fig)
        job = (_draw_pickled, blob, {k: v for k, v in matplotlib.rcParams.items() if k != 'backend'}, *args)
        try: future = _drawing_pool().submit(*job)
        except BrokenProcessPool: future = _drawing_pool(new=True).submit(*job)  # it died (e.g. killed for memory)
        self.figures.append(future)
        return Path(args[0])

    def then(self, fn, name):
        figures, self.figures, finished, lock = self.figures, [], threading.Event(), threading.Lock()
        left = [len(figures)]
        def one_drawn(_):
            with lock:
                left[0] -= 1
                if left[0]: return
            try:
                for f in figures: f.result()
                fn()
            except Exception as e: self.failures.append((name, f"{type(e).__name__}: {e}"))
            finally: finished.set()
        if not figures: return fn()  # nothing to wait for: now, its errors raised here
        self.finished.append(finished)
        for f in figures: f.add_done_callback(one_drawn)

    def flush(self):
        "Wait for every figure and what follows them; the (name, error) of what could not be written."
        if self.figures: self.then(lambda: None, 'figures')
        for finished in self.finished: finished.wait()
        failures, self.finished, self.failures = self.failures, [], []
        return failures


_beside = None  # the active `drawing_beside`, if any
_pool = None  # the drawing process: forked at the first figure, it lives as long as this process (one fork, once)


def _drawing_pool(new=False):
    global _pool
    if _pool is None or new:
        _pool = ProcessPoolExecutor(1, mp_context=mp.get_context('fork'), initializer=_drawing_process,
                                    initargs=(os.getpid(),))
    return _pool


def _can_draw_beside():
    """Not on macOS or Windows (fork is not safe there, or absent), nor under torchrun (every figure is rank 0's, drawn
    as it comes), nor with LAB_FIGURES=here (the test suite: its two worker processes already use both cores)."""
    where = os.environ.get('LAB_FIGURES', 'beside')
    if where not in ('beside', 'here'): raise ValueError(f"LAB_FIGURES={where}: expected 'beside' or 'here'")
    return where == 'beside' and sys.platform == 'linux' and not is_distributed()


def save_figure(fig, path, dpi=120, tight=True, **savefig_kwargs):
    """Lay out (`tight`: `fig.tight_layout()`) and write `fig` to `path` atomically, then close it; inside
    `drawing_beside`, in the drawing process. Returns `path`."""
    if _beside is not None: return _beside.submit(fig, path, dpi, tight, savefig_kwargs)
    return _draw(fig, path, dpi, tight, savefig_kwargs)


def save_pyplot_figure(path, dpi):
    """`save_figure` of what fastai drew on pyplot's current figure (show_results, plot_confusion_matrix, the lr_find
    plot), cropped to its contents; then every pyplot figure is closed. Returns `path`."""
    path = save_figure(plt.gcf(), path, dpi=dpi, tight=False, bbox_inches='tight')
    plt.close('all')
    return path


def then(fn, name=''):
    """Run `fn()` once every figure saved so far is written (inside `drawing_beside`: in another thread, as soon as
    they are; outside: now). `name` says whose it is when it fails."""
    if _beside is None: return fn()
    _beside.then(fn, name)


@contextmanager
def drawing_beside():
    """Figures saved inside are drawn in a forked process beside this one; on leaving (an error or Ctrl-C too) every
    figure is waited for, and what `then` deferred has run. Raises FiguresFailed naming what could not be written.
    Nested (a script's, then its stage's), each waits on leaving."""
    global _beside
    outer = _beside
    if outer is None and not _can_draw_beside():
        yield; return
    _beside = outer or _Beside()
    try: yield
    finally:
        failures = _beside.flush()
        if outer is None: _beside = None
    if failures: raise FiguresFailed(failures)
