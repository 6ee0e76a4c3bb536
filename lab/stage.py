"""The one stage skeleton: a stage is variants x seeds. Every training stage (the Task 2 and Task 3 scripts, and
`--config` reruns) goes through `run_stage`: open the stage folder (`lab.results.Stage`), read the data once up front,
return the finished summary when `--resume` finds one, run fastai's `lr_find` instead when asked, else run the
experiment and write the stage's summary last. A script states only its experiment: `experiment(ctx)` trains its
variants through `ctx.train` and returns what it tabulated as `ctx.summary(...)`. `stage_choice` hands a stage the
choice of the one before it.

Training a stage's runs: one after another, or `--jobs N` at a time in separate processes spread over the GPUs.
Every run seeds itself from its recipe and takes the same torch thread count whatever `--jobs` is
(`lab.machine.cpu_threads`), so running runs side by side gives the numbers they give one after another. A run that
fails does not stop the others: the finished ones stay finished, and the failures are reported together at the end
(`RunsFailed`). Under torchrun (DDP) the runs go one after another, each trained by all processes together.
"""
import multiprocessing as mp
import os, signal, sys, traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace

from fastai.callback.schedule import minimum, slide, steep, valley

from fastai_lab.data.locate import data_source
from . import progress
from .caveats import caveat, caveat_notes, stage_caveats
from .data.loaders import build_data, resolve_data
from .distributed import barrier, check_shards, is_distributed
from .figures import drawing_beside, save_pyplot_figure
from .io import error_line, read_json, same_json, write_json
from .learner import make_learner, setup_torch
from .models import build_model
from .lookup import chosen_recipe, key_difference, latest_stage_summary, read_stage
from .machine import (cpu_threads, default_device, n_gpus, release_device_memory, seed_everything, selected_device,
                      worker_device)
from .recipe import describe_model
from .record import RunRecord
from .results import Stage, run_name, variant_of
from .train import RunOptions, train_run

__all__ = ['run_stage', 'StageContext', 'open_stage', 'lr_find_stage', 'rerun', 'stage_choice', 'train_runs',
           'resolve_jobs', 'RunsFailed']


def open_stage(opts, name, recipe):
    """The `Stage` of one invocation, its resolved recipe and its data's `info`: the key is that recipe and the seeds
    (what --resume must find again). The data is read once here, before anything is trained: every image, train,
    valid and test, is decoded (and cached), so a bad file stops the stage up front with its path, and parallel runs
    load the cache instead of decoding it again. What the data cannot support (`Data.caveats`) is said here."""
    recipe = resolve_data(recipe, say=True)
    info = build_data(recipe).check().info  # the loaders go: each run builds its own (from the cache)
    release_device_memory()  # so that --jobs N holds N copies of the data on the GPU, not N + 1
    check_shards(info['n_train'], info['bs'])  # under torchrun: every process must get a batch to train
    return Stage(opts, name, dict(recipe=recipe.to_dict(), seeds=opts.seeds)), recipe, info


@dataclass
class StageContext:
    "What an experiment sees of its stage: the resolved recipe, the runtime options, and the stage folder."
    stage: Stage
    name: str
    recipe: object
    opts: object
    data_info: dict = None  # the stage's data as `build_data` found it (counts, batch used, caveats)

    @property
    def caveats(self):
        "What this stage's results cannot support (`lab.caveats.stage_caveats`): every table and summary repeats them."
        return stage_caveats(self.recipe, self.data_info, self.seeds, getattr(self.opts, 'caveats', ()))

    def caveat_notes(self):
        "The caveats as the lines a table's notes end with ('' when there are none)."
        return caveat_notes(self.caveats)

    @property
    def folder(self): return self.stage.folder

    @property
    def seeds(self): return self.opts.seeds

    def run_dir(self, variant, seed): return self.stage.run_dir(run_name(variant, seed))

    def train(self, variants, options=RunOptions(), chains=()):
        """Train every variant (name -> Recipe, or a function seed -> Recipe) for every seed; the variants named
        together in one of `chains` run in that order in one process (a later one may start from an earlier one's
        checkpoint). Returns variant -> the summaries of its runs, one per seed, in the order of the seeds."""
        def of_seed(r, s): return r(s) if callable(r) else replace(r, seed=s)
        if getattr(self.opts, 'tensorboard', False): options = replace(options, tensorboard=True)  # how, not what
        runs = {run_name(v, s): of_seed(r, s) for v, r in variants.items() for s in self.seeds}
        chained = {v for chain in chains for v in chain}
        groups = [list(chain) for chain in chains] + [[v] for v in variants if v not in chained]
        done = train_runs(self.stage, runs, options, jobs=self.opts.jobs,
                          chains=[[run_name(v, s) for v in g] for g in groups for s in self.seeds])
        return {v: [done[run_name(v, s)] for s in self.seeds] for v in variants}

    def summary(self, title, variants, best, rows, conclusion, **extra):
        """The stage summary every later reader relies on: the best variant and its recipe (which the next stage
        trains on), the table rows, the conclusion, and the provenance (data key, profile, seeds)."""
        r = self.recipe
        return dict(stage=self.name, title=title, best=best, best_recipe=variants[best].to_dict(),
                    best_config=describe_model(variants[best]), conclusion=conclusion, rows=rows, recipe=r.to_dict(),
                    data_key=r.data_key(), data=r.data, classes=r.classes, profile=r.profile,
                    data_source=data_source(r.data), seeds=self.seeds, epochs=r.epochs, caveats=self.caveats,
                    **extra)


def run_stage(opts, name, recipe, experiment, lr_find=None):
    """Run stage `name` on `recipe` (see the module docstring); return its summary (the lr_find suggestions with
    --lr-find). `experiment(ctx)` trains and tabulates and returns `ctx.summary(...)`; `lr_find(recipe)`: the
    configuration --lr-find explores (default: the stage's recipe)."""
    st, recipe, info = open_stage(opts, name, recipe)
    with st:
        if st.done: return st.done
        if opts.lr_find: return lr_find_stage(st, lr_find(recipe) if lr_find else recipe)
        with drawing_beside():  # the stage's figures are drawn beside its training, all on disk before its summary
            summary = experiment(StageContext(st, name, recipe, opts, info))
        return st.finish(summary)


def lr_find_stage(st, recipe):
    "fastai's lr_find for `recipe` (the stage's first configuration): lr_find.png and lr_find.json in the stage folder."
    if is_distributed(): raise ValueError("--lr-find: run it without torchrun")
    setup_torch()
    seed_everything(recipe.seed)
    data = build_data(recipe)
    learn = make_learner(recipe, build_model(recipe), data.dls)
    learn.path, learn.model_dir = st.folder, '.'
    found = learn.lr_find(suggest_funcs=(minimum, steep, valley, slide), show_plot=True)
    save_pyplot_figure(st.folder / 'lr_find.png', dpi=110)
    suggested = {k: float(v) for k, v in found._asdict().items()}
    write_json(st.folder / 'lr_find.json', dict(suggested=suggested, recipe=recipe.to_dict(),
                                                note='fastai lr_find on the stage\'s first configuration'))
    st.mark('lr_find')
    print(f"lr_find ({st.folder}): " + ', '.join(f'{k} {v:.2e}' for k, v in suggested.items()) +
          f"; the recipe's lr is {recipe.lr:g}")
    return suggested


def rerun(opts, recipe, config_path):
    """Train the recipe of a run's config.json alone (--config), into ``<out>/rerun/<timestamp>/<run>/``: the same
    numbers as that run (on a CPU at the same thread count), without touching the stages' chain of choices."""
    name = variant_of(read_json(config_path).get('run', 'run'))
    def experiment(ctx):
        ctx.train({name: ctx.recipe}, RunOptions(test=ctx.recipe.task == 'classify'))
        return dict(rerun_of=str(config_path), runs=[run_name(name, s) for s in ctx.seeds], recipe=ctx.recipe.to_dict(),
                    data_key=ctx.recipe.data_key(), profile=ctx.recipe.profile, seeds=ctx.seeds, caveats=ctx.caveats)
    return run_stage(opts, 'rerun', recipe, experiment)


def stage_choice(opts, stage, recipe):
    """The recipe to train after `stage`: `recipe` with the model chosen by `stage` (its best variant), and the reason.

    The choice comes from the stage folder given with --from, else from the newest finished invocation of `stage`
    under --out on the same data, classes, split and profile; without one, `recipe` keeps its documented default
    model, and the reason says so. Model flags given on the command line win over the choice."""
    recipe = resolve_data(recipe)  # compared by its explicit data folder and class list
    if opts.from_:
        summary = read_stage(opts.from_, stage)
        if not same_json(summary.get('data_key'), recipe.data_key()):
            text = caveat('other_data', path=opts.from_,
                          difference=key_difference(summary.get('data_key'), recipe.data_key()))
            print(f"WARNING: {text}")
            opts.caveats.append(text)  # saved with the stage (`StageContext.caveats`)
    else: summary = latest_stage_summary(opts.out, stage, like=recipe)
    overrides = opts.model_overrides
    if summary is None:
        print(f"NOTICE: no finished {stage} run on this data under {opts.out}; using the documented default "
              f"model {dict(recipe.model)}")
        return recipe, f"default (no {stage} run on this data)"
    model = dict(chosen_recipe(summary).model, **overrides)
    print(f"using the choice of {stage}: {summary['best']} {model} ({summary['path']})"
          + (f"; model flags {overrides} override it" if overrides else ''))
    return replace(recipe, model=model), f"{stage}: {summary['conclusion']}"


# ----- training a stage's runs -------------------------------------------------------------------------------------

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


def _init_worker(counter, device, stage_clock, environ):
    """A worker process: the parent's environment of now (not the job server's, of when it started), its --device (a
    plain cuda choice: its own GPU, round robin over the visible ones), the stage's clock (whose estimate the first
    epoch to finish in any worker prints), SIGTERM as an interrupt."""
    os.environ.clear(); os.environ.update(environ)
    def on_term(signum, frame): raise KeyboardInterrupt(f'signal {signum}')
    signal.signal(signal.SIGTERM, on_term)
    with counter.get_lock():
        index = counter.value; counter.value += 1
    worker_device(device, index)
    progress.set_clock(stage_clock)


_estimated = set()  # stage folders whose remaining time this process has estimated (said once per stage)


def train_runs(stage, runs, options=RunOptions(), jobs=1, chains=None):
    """Train `runs` (run name -> resolved Recipe) into `stage.folder`; return name -> summary, finished ones included.

    `chains`: lists of run names that must run in order in one process (the default: each run alone). Runs already
    finished in the folder (resumed stage) are not trained again. Raises RunsFailed when any run failed. The stage's
    time estimate (`lab.progress`) counts the runs left here."""
    chains = chains or [[name] for name in runs]
    items = [[(n, runs[n], stage.run_dir(n), options) for n in chain] for chain in chains]
    todo = [c for c in items if not all((d / 'summary.json').is_file() for _, _, d, _ in c)]
    jobs = resolve_jobs(jobs, len(todo))
    left = {n: r.epochs for chain in todo for n, r, d, _ in chain if not (d / 'summary.json').is_file()}
    stage_clock = progress.StageClock(stage.name, left, jobs, quiet=str(stage.folder) in _estimated)
    if left: _estimated.add(str(stage.folder))
    results = []
    if jobs == 1:
        before = progress.set_clock(stage_clock)
        try:
            for chain in todo:
                results += _chain(chain)
                barrier()
        finally: progress.set_clock(before)
    else:
        threads = '' if default_device().type == 'cuda' else (
            f"; each with {cpu_threads()} torch thread(s), as alone, so that the numbers are those of one after "
            f"another (the runs share the cores)")
        print(f"{stage.name}: {sum(map(len, todo))} run(s) in {len(todo)} chain(s), {jobs} at a time{threads}")
        results = _parallel(todo, jobs, stage_clock)
    failed = [f"{name}: {error}" for name, _, error in results if error]
    if failed:
        raise RunsFailed(f"{len(failed)} run(s) of {stage.name} failed ({'; '.join(failed)})")
    # a run trained here may still be waiting for its figures to write its summary.json: its record as it will read
    trained = {name: record.as_written() for name, record, _ in results if record is not None}
    return {n: trained[n] if n in trained else RunRecord.read(stage.run_dir(n)) for n in runs}


def _job_context():
    """--jobs processes: forks of a job server that has imported the lab once and done nothing else. This process
    cannot be forked (it may hold CUDA state and threads); spawned ones would each import torch and fastai again
    (~4.5 s of CPU a process). Each fork starts with the interpreter state of a fresh import, like a spawned one."""
    if default_device().type == 'cpu':  # N runs share the cores, each with a lone run's threads: idle ones must sleep,
        os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # not spin (read by OpenMP as the server imports torch)
    ctx = mp.get_context('forkserver')
    ctx.set_forkserver_preload([__name__])  # read when the server starts: the first --jobs stage of this process
    return ctx


def _parallel(todo, jobs, stage_clock):
    ctx = _job_context()
    counter = ctx.Value('i', 0)
    stage_clock.said = ctx.Value('b', 0)  # shared: the first epoch to finish in any worker says the estimate
    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                               initargs=(counter, selected_device(), stage_clock, dict(os.environ)))
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
