"""The one stage skeleton. Every training stage (the Task 2 and Task 3 scripts, and `--config` reruns) goes through
`run_stage`: open the stage folder (`lab.results.Stage`), read the data once up front, return the finished summary
when `--resume` finds one, run fastai's `lr_find` instead when asked, else run the experiment and write the
stage's summary last. A script states only its experiment: `experiment(ctx)` trains its variants through
`ctx.train` and returns what it tabulated as `ctx.summary(...)`.
"""
from dataclasses import dataclass, replace

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from fastai.callback.schedule import minimum, slide, steep, valley

from fastai_lab.data.locate import data_source
from .caveats import caveat_notes, stage_caveats
from .data.loaders import build_data, resolve_data
from .distributed import is_distributed
from .io import read_json, write_json
from .jobs import train_runs
from .learner import build_model, make_learner, seed_everything, setup_torch
from .recipe import describe_model
from .results import Stage, run_name, variant_of
from .train import RunOptions

__all__ = ['run_stage', 'StageContext', 'open_stage', 'lr_find_stage', 'rerun']


def open_stage(opts, name, recipe):
    """The `Stage` of one invocation, its resolved recipe and its data's `info`: the key is that recipe and the seeds
    (what --resume must find again). The data is read once here, before anything is trained: every image, train,
    valid and test, is decoded (and cached), so a bad file stops the stage up front with its path, and parallel runs
    load the cache instead of decoding it again. What the data cannot support (`Data.caveats`) is said here."""
    recipe = resolve_data(recipe, say=True)
    data = build_data(recipe).check()
    return Stage(opts, name, dict(recipe=recipe.to_dict(), seeds=opts.seeds)), recipe, data.info


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

    def train(self, variants, options=RunOptions(), chains=(), later=None):
        """Train every variant (name -> Recipe, or a function seed -> Recipe) for every seed; the variants named
        together in one of `chains` run in that order in one process (a later one may start from an earlier one's
        checkpoint). `later`: the variants this stage will train afterwards (same form), counted in its time
        estimate. Returns variant -> the summaries of its runs, one per seed, in the order of the seeds."""
        def of_seed(r, s): return r(s) if callable(r) else replace(r, seed=s)
        runs = {run_name(v, s): of_seed(r, s) for v, r in variants.items() for s in self.seeds}
        chained = {v for chain in chains for v in chain}
        groups = [list(chain) for chain in chains] + [[v] for v in variants if v not in chained]
        done = train_runs(self.stage, runs, options, jobs=self.opts.jobs,
                          chains=[[run_name(v, s) for v in g] for g in groups for s in self.seeds],
                          later=[(run_name(v, s), of_seed(r, s)) for v, r in (later or {}).items() for s in self.seeds])
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
        return st.finish(experiment(StageContext(st, name, recipe, opts, info)))


def lr_find_stage(st, recipe):
    "fastai's lr_find for `recipe` (the stage's first configuration): lr_find.png and lr_find.json in the stage folder."
    if is_distributed(): raise ValueError("--lr-find: run it without torchrun")
    setup_torch()
    seed_everything(recipe.seed)
    data = build_data(recipe)
    learn = make_learner(recipe, build_model(recipe), data.dls)
    learn.path, learn.model_dir = st.folder, '.'
    found = learn.lr_find(suggest_funcs=(minimum, steep, valley, slide), show_plot=True)
    plt.gcf().savefig(st.folder / 'lr_find.png', dpi=110, bbox_inches='tight'); plt.close('all')
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
