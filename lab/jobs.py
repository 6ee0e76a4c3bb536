"""Training a stage's runs: one after another, or `--jobs N` at a time in separate processes spread over the GPUs.

Every run seeds itself from its recipe and takes the same torch thread count whatever `--jobs` is
(`lab.machine.cpu_threads`), so running runs side by side gives the numbers they give one after another. A run that
fails does not stop the others: the finished ones stay finished, and the failures are reported together at the end
(`RunsFailed`). Under torchrun (DDP) the runs go one after another, each trained by all processes together.
"""
import multiprocessing as mp
import os, signal, sys, traceback
from concurrent.futures import ProcessPoolExecutor, as_completed

from . import progress
from .machine import cpu_threads, default_device, n_gpus, selected_device, worker_device
from .distributed import barrier, is_distributed
from .io import error_line, read_json
from .train import RunOptions, train_run

__all__ = ['train_runs', 'resolve_jobs', 'RunsFailed']

RUNS_PER_GPU = 4  # small models leave a GPU mostly idle between kernels; a few processes fill those gaps


class RunsFailed(RuntimeError):
    "Some runs of a stage failed (the others finished and are kept)."


def resolve_jobs(jobs, n_chains):
    "How many processes: `jobs` as given, or 'auto' = up to RUNS_PER_GPU per visible GPU (1 on a CPU); never more than there is work."
    if is_distributed(): return 1  # DDP: every process trains the same run
    if jobs == 'auto': jobs = min(RUNS_PER_GPU * n_gpus(), max(1, (os.cpu_count() or 2) // 2)) if n_gpus() else 1
    return max(1, min(int(jobs), n_chains))


def _one_line(e): return f"{type(e).__name__}: {error_line(e) if str(e).strip() else ''}"  # fastai's wrapper undone


def _chain(items):
    "Train one chain of runs in order (a later one may start from an earlier one's checkpoint); stop at a failure."
    done = []
    for name, recipe, run_dir, options in items:
        try: done.append((name, train_run(recipe, run_dir, options), None))
        except Exception as e:
            if is_distributed(): raise  # DDP: the other processes wait for this one: stop all
            if os.environ.get('LAB_DEBUG'): traceback.print_exc()
            print(f"{name} failed: {_one_line(e)}", file=sys.stderr, flush=True)
            done.append((name, None, _one_line(e)))
            break
    return done


def _init_worker(counter, device, plan):
    """A worker process: the parent's --device (a plain cuda choice: its own GPU, round robin over the visible ones),
    the stage's plan (whose estimate the first epoch to finish in any worker prints), SIGTERM as an interrupt."""
    def on_term(signum, frame): raise KeyboardInterrupt(f'signal {signum}')
    signal.signal(signal.SIGTERM, on_term)
    with counter.get_lock():
        index = counter.value; counter.value += 1
    worker_device(device, index)
    progress.set_plan(plan)


_estimated = set()  # stage folders whose remaining time this process has estimated (said once per stage)


def train_runs(stage, runs, options=RunOptions(), jobs=1, chains=None, later=()):
    """Train `runs` (run name -> resolved Recipe) into `stage.folder`; return name -> summary, finished ones included.

    `chains`: lists of run names that must run in order in one process (the default: each run alone). Runs already
    finished in the folder (resumed stage) are not trained again. Raises RunsFailed when any run failed. `later`:
    (name, Recipe) of the runs the stage will train after these, counted in its time estimate (`lab.progress`)."""
    chains = chains or [[name] for name in runs]
    items = [[(n, runs[n], stage.run_dir(n), options) for n in chain] for chain in chains]
    todo = [c for c in items if not all((d / 'summary.json').is_file() for _, _, d, _ in c)]
    jobs = resolve_jobs(jobs, len(todo))
    left = [(n, r) for chain in todo for n, r, d, _ in chain if not (d / 'summary.json').is_file()]
    plan = progress.StagePlan(stage.name, left, later, jobs, quiet=str(stage.folder) in _estimated)
    if left: _estimated.add(str(stage.folder))
    results = []
    if jobs == 1:
        with progress.using_plan(plan):
            for chain in todo:
                results += _chain(chain)
                barrier()
    else:
        threads = '' if default_device().type == 'cuda' else (
            f"; each with {cpu_threads()} torch thread(s), as alone, so that the numbers are those of one after "
            f"another (the runs share the cores)")
        print(f"{stage.name}: {sum(map(len, todo))} run(s) in {len(todo)} chain(s), {jobs} at a time{threads}")
        results = _parallel(todo, jobs, plan)
    failed = [f"{name}: {error}" for name, _, error in results if error]
    if failed:
        raise RunsFailed(f"{len(failed)} run(s) of {stage.name} failed ({'; '.join(failed)})")
    return {n: read_json(stage.run_dir(n) / 'summary.json') for n in runs}


def _parallel(todo, jobs, plan):
    ctx = mp.get_context('spawn')  # CUDA cannot be forked; spawn also gives each run a clean interpreter state
    counter = ctx.Value('i', 0)
    plan.said = ctx.Value('b', 0)  # shared: the first epoch to finish in any worker says the stage's estimate
    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(counter, selected_device(), plan))
    results = []
    try:
        futures = [pool.submit(_chain, chain) for chain in todo]
        for f in as_completed(futures):
            try: results += f.result()
            except Exception as e:  # the worker itself died (e.g. out of memory): the chain's runs failed
                chain = todo[futures.index(f)]
                results.append((chain[0][0], None, _one_line(e)))
    except BaseException:
        for p in list(getattr(pool, '_processes', {}).values()):  # stop the runs: each keeps its last finished epoch
            if p.is_alive(): p.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return results


