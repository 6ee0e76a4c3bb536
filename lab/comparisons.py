"""Comparisons: variants of a recipe and the Task 2 ResNet stage; their rows (means and 95% intervals over seeds) and
the table of all Task 2 experiments are `lab.rows`'.

A comparison stage writes ``<out>/<stage>/<timestamp>/`` (`lab.stage.run_stage`): one run folder per variant and seed,
`table.md`/`table.csv`, overlay plots and `summary.json` with the best variant's recipe, which the next stage reads
through `lab.stage.stage_choice`. The data split is fixed (`split_seed`) across seeds, so that the seeds vary only the
initialisation, the batch order and the augmentation, and every variant is judged on the same valid images.
"""
from dataclasses import replace
from pathlib import Path

import numpy as np

from .callbacks import ActivationStatsLite, GradientStats
from .stat_plots import plot_layer_profiles, plot_runs_over_steps
from .cost import cost_note
from .stats import TIE_RULE, mean_std
from .tables import EPOCHS_FROM_0, plot_overlay, write_table
from .stage import run_stage
from .models import build_model
from .rows import STAT_COLUMNS, classifier_row, compare_valid, overfitting_text
from .record import RunRecord
from .train import RunOptions, load_history

__all__ = ['run_resnet_stage', 'blocks_variants', 'activation_variants', 'ACTIVATIONS', 'plot_stats_side_by_side']


def blocks_variants(base):
    "Stage 3.2's variants: A, B, C = 1, 2, 3 blocks in every stage of `base`'s channels."
    n_stages = len(base.model['channels'])
    return {label: replace(base, model=dict(base.model, blocks=[n] * n_stages)) for label, n in zip('ABC', (1, 2, 3))}


ACTIVATIONS = dict(A='relu', B='leakyrelu', C='elu', D='gelu')  # stage 3.3's variants


def activation_variants(base):
    "Stage 3.3's variants: A-D = ReLU, LeakyReLU, ELU, GELU on `base`."
    return {label: replace(base, model=dict(base.model, act=act)) for label, act in ACTIVATIONS.items()}


def run_resnet_stage(opts, stage_name, recipe, variants, title, chosen_from=None, stats=False, show_model=False):
    """A Task 2 comparison: train every variant (`variants(recipe)`: name -> Recipe) for every seed, write the table,
    the overlaid curves and the summary; return the summary.

    `stats`: record per-layer gradient and activation statistics of every run (`lab.callbacks`), add their summary
    columns to the table and draw the variants side by side. `show_model`: print the first variant's model (T2.6)
    once the data has passed its checks, before training."""
    def experiment(ctx):
        chosen = variants(ctx.recipe)
        if show_model: print(build_model(next(iter(chosen.values()))))
        runs = ctx.train(chosen, RunOptions(stats=stats))
        rows, histories = [], {}
        for name, r in chosen.items():
            rows.append(classifier_row(name, r, runs[name]))
            if stats: rows[-1].update(**{k: mean_std([getattr(RunRecord.of(m), k) for m in runs[name]])[0]
                                         for k in STAT_COLUMNS})
            for s in ctx.seeds:
                histories[name if len(ctx.seeds) == 1 else f'{name} s{s}'] = load_history(ctx.run_dir(name, s))
        if stats: plot_stats_side_by_side({f"{n}: {r.model['act']}": ctx.run_dir(n, ctx.seeds[0])
                                           for n, r in chosen.items()}, ctx.folder)
        for col in ('valid_accuracy', 'train_accuracy', 'valid_loss', 'train_loss'):
            plot_overlay(histories, col, ctx.folder / f'{col}.png', title=f'{title}: {col}')
        verdict = compare_valid(rows)
        r = ctx.recipe
        analysis = (f"{verdict['text']}\n\nOverfitting:\n{overfitting_text(rows)}\n\n"
                    f"Data: {r.data} ({len(r.classes.split(','))} classes, {rows[0].n_eval} valid images); "
                    f"profile {r.profile}; seeds {ctx.seeds}; {r.epochs} epochs; valid = best epoch ({EPOCHS_FROM_0}); "
                    f"intervals are 95%: valid_acc_ci over seeds, the Wilson interval of the valid set in the verdict."
                    f"\n\n{cost_note(rows)}\n\nThe rule: {TIE_RULE}")
        write_table(rows, ctx.folder, title=title, notes=analysis + ctx.caveat_notes())
        print(f"\n{title}\n{analysis}")
        return ctx.summary(title, chosen, verdict['best'], [r.to_dict() for r in rows], verdict['text'],
                           significant=verdict['significant'], analysis=analysis, chosen_from=chosen_from)
    return run_stage(opts, stage_name, recipe, experiment, lr_find=lambda r: next(iter(variants(r).values())))


def plot_stats_side_by_side(run_dirs, folder):
    """The variants' statistics side by side (`run_dirs`: label -> run folder with its statistics CSVs):
    statistics_per_layer.png (activation mean, std, share <= 0 and weight-gradient norm per layer, averaged over
    training) and gradients_over_training.png (weight-gradient norms of layers spread over depth, per batch)."""
    import pandas as pd
    recorded = {k: (GradientStats.from_frame(pd.read_csv(Path(d) / 'gradient_stats.csv')),
                    ActivationStatsLite.from_frame(pd.read_csv(Path(d) / 'activation_stats.csv')))
                for k, d in run_dirs.items()}
    def per_layer(stat): return {k: np.nanmean(stat(cbs), axis=0) for k, cbs in recorded.items()}
    plot_layer_profiles({'activation mean': per_layer(lambda c: c[1].means),
                         'activation std': per_layer(lambda c: c[1].stds),
                         'share of activations <= 0': per_layer(lambda c: c[1].dead),
                         'weight-gradient L2 norm': per_layer(lambda c: c[0].grad_norms)},
                        Path(folder) / 'statistics_per_layer.png', title='per layer, averaged over training (first seed)')
    plot_runs_over_steps({k: cbs[0] for k, cbs in recorded.items()}, Path(folder) / 'gradients_over_training.png',
                         title='weight-gradient norms over training (first seed)')
