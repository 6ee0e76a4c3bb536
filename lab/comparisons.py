"""Comparisons: variants of a recipe, their table rows (means and 95% intervals over seeds), the Task 2 ResNet stage,
and the table of all Task 2 experiments.

A comparison stage writes ``<out>/<stage>/<timestamp>/`` (`lab.stage.run_stage`): one run folder per variant and seed,
`table.md`/`table.csv`, overlay plots and `summary.json` with the best variant's recipe, which the next stage reads
through `lab.lookup.stage_choice`. The data split is fixed (`split_seed`) across seeds, so that the seeds vary only the
initialisation, the batch order and the augmentation, and every variant is judged on the same valid images.
"""
from dataclasses import replace
from pathlib import Path

import numpy as np

from .callbacks import ActivationStatsLite, GradientStats, plot_layer_profiles, plot_runs_over_steps
from .recipe import describe_model
from .cost import COST_COLUMNS, cost_columns, cost_note
from .stats import TIE_RULE, compare, mean_std, seed_interval
from .tables import EPOCHS_FROM_0, plot_overlay, plot_score_vs_cost, write_table
from .stage import run_stage
from .learner import build_model
from .metrics import is_undefined
from .lookup import latest_stage_summary
from .train import RunOptions, load_history

__all__ = ['classifier_row', 'seg_row', 'seg_table_rows', 'run_resnet_stage', 'overfitting_text', 'blocks_variants',
           'activation_variants', 'ACTIVATIONS', 'experiments_table', 'STAGE_LABELS', 'plot_stats_side_by_side']


def blocks_variants(base):
    "Stage 3.2's variants: A, B, C = 1, 2, 3 blocks in every stage of `base`'s channels."
    n_stages = len(base.model['channels'])
    return {label: replace(base, model=dict(base.model, blocks=[n] * n_stages)) for label, n in zip('ABC', (1, 2, 3))}


ACTIVATIONS = dict(A='relu', B='leakyrelu', C='elu', D='gelu')  # stage 3.3's variants


def activation_variants(base):
    "Stage 3.3's variants: A-D = ReLU, LeakyReLU, ELU, GELU on `base`."
    return {label: replace(base, model=dict(base.model, act=act)) for label, act in ACTIVATIONS.items()}


def classifier_row(name, recipe, runs):
    "One table row of a classifier variant from its runs (one per seed): means, 95% seed intervals, sizes."
    def pick(key, where='best'): return [r[where][key] for r in runs]
    acc = pick('valid_accuracy')
    row = dict(name=name, config=describe_model(recipe), params_M=round(runs[0]['params'] / 1e6, 3),
               valid_acc=mean_std(acc)[0], valid_acc_std=mean_std(acc)[1], valid_acc_ci=seed_interval(acc),
               n_eval=runs[0].get('n_valid'), train_acc=mean_std(pick('train_accuracy'))[0],
               final_valid_acc=mean_std(pick('valid_accuracy', 'final'))[0],
               final_gap=mean_std([r['final']['train_accuracy'] - r['final']['valid_accuracy'] for r in runs])[0],
               valid_loss_rise=mean_std([r['final']['valid_loss'] - r['min_valid_loss'] for r in runs])[0],
               best_epoch=mean_std([r['best_epoch'] for r in runs])[0], n_seeds=len(runs),
               seconds=mean_std([r['wall_seconds'] for r in runs])[0], **cost_columns(runs))
    if 'test_acc' in runs[0]:
        test = [r['test_acc'] for r in runs]
        row.update(test_acc=mean_std(test)[0], test_acc_std=mean_std(test)[1], test_acc_ci=seed_interval(test),
                   test_lo=float(np.mean([r['test_acc_lo'] for r in runs])),
                   test_hi=float(np.mean([r['test_acc_hi'] for r in runs])), n_test=runs[0]['n'])
    return row


def seg_row(name, runs, epochs):
    "A table row of a U-Net variant: valid (and test, real-frame) IoU, Dice, pixel accuracy, mean +- std over seeds."
    row = dict(name=name)
    for m in ('iou', 'dice', 'pixel_acc'):
        row[m], row[f'{m}_std'] = mean_std([r['best'][f'valid_{m}'] for r in runs])
        row[f'{m}_ci'] = seed_interval([r['best'][f'valid_{m}'] for r in runs])
    for where in ('test', 'real'):
        if f'{where}_iou' in runs[0]:
            for m in ('iou', 'dice', 'pixel_acc'):
                row[f'{where}_{m}'], row[f'{where}_{m}_std'] = mean_std([r[f'{where}_{m}'] for r in runs])
    row.update(params_M=round(runs[0]['params'] / 1e6, 3), trainable_M=round(runs[0]['trainable_params'] / 1e6, 3),
               epochs=epochs, seconds=mean_std([r['wall_seconds'] for r in runs])[0], n_seeds=len(runs))
    row.update({k: v for k, v in cost_columns(runs).items() if k != 'trainable_M'})  # the row has its own
    return row


SEG_SCORES = [f'{where}{m}' for where in ('', 'test_', 'real_') for m in ('iou', 'dice')]


def seg_table_rows(rows):
    """`rows` of `seg_row` for a table: an undefined IoU or Dice (masks without rock pixels) as an empty cell, not a
    number; the text says 'no rock pixels' (`lab.metrics.score_text`)."""
    return [{k: '' if k in SEG_SCORES and is_undefined(v) else v for k, v in r.items()} for r in rows]


def overfitting_text(rows, gap_threshold=0.10):
    "Overfitting signs from the numbers: final train-valid accuracy gap and valid loss rising after its minimum."
    lines = []
    for r in rows:
        signs = []
        if r['final_gap'] > gap_threshold: signs.append(f"train accuracy {r['final_gap']:.1%} above valid at the end")
        if r['valid_loss_rise'] > 0.05: signs.append(f"valid loss {r['valid_loss_rise']:.3f} above its minimum at the end")
        lines.append(f"- {r['name']}: " + ('; '.join(signs) if signs else
                     f"no clear overfitting (gap {r['final_gap']:.1%}, valid loss rise {r['valid_loss_rise']:.3f})"))
    return '\n'.join(lines)


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
            if stats: rows[-1].update({k: mean_std([m[k] for m in runs[name]])[0] for k in STAT_COLUMNS})
            for s in ctx.seeds:
                histories[name if len(ctx.seeds) == 1 else f'{name} s{s}'] = load_history(ctx.run_dir(name, s))
        if stats: plot_stats_side_by_side({f"{n}: {r.model['act']}": ctx.run_dir(n, ctx.seeds[0])
                                           for n, r in chosen.items()}, ctx.folder)
        for col in ('valid_accuracy', 'train_accuracy', 'valid_loss', 'train_loss'):
            plot_overlay(histories, col, ctx.folder / f'{col}.png', title=f'{title}: {col}')
        verdict = compare(rows, 'valid_acc')
        r = ctx.recipe
        analysis = (f"{verdict['text']}\n\nOverfitting:\n{overfitting_text(rows)}\n\n"
                    f"Data: {r.data} ({len(r.classes.split(','))} classes, {rows[0]['n_eval']} valid images); "
                    f"profile {r.profile}; seeds {ctx.seeds}; {r.epochs} epochs; valid = best epoch ({EPOCHS_FROM_0}); "
                    f"intervals are 95%: valid_acc_ci over seeds, the Wilson interval of the valid set in the verdict."
                    f"\n\n{cost_note(rows)}\n\nThe rule: {TIE_RULE}")
        write_table(rows, ctx.folder, title=title, notes=analysis)
        print(f"\n{title}\n{analysis}")
        return ctx.summary(title, chosen, verdict['best'], rows, verdict['text'],
                           significant=verdict['significant'], analysis=analysis, chosen_from=chosen_from)
    return run_stage(opts, stage_name, recipe, experiment, lr_find=lambda r: next(iter(variants(r).values())))


STAT_COLUMNS = ('dead_share', 'act_std_last', 'grad_first_over_last')


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


STAGE_LABELS = {'stage2_baseline': 'Baseline', 'stage3_1_channels': '3.1', 'stage3_2_blocks': '3.2',
                'stage3_3_activations': '3.3', 'stage4_final': 'Final'}


def experiments_table(out, folder, current=None):
    """The summary of all experiments (T2.13) from the newest finished run of every stage under `out`
    (`current`: a stage summary not yet published, e.g. the final stage writing this table).
    Writes experiments.md/csv into `folder` with the analysis, and returns the frame."""
    rows, missing, keys, points = [], [], {}, []
    for stage, label in STAGE_LABELS.items():
        summary = current if current and current['stage'] == stage else latest_stage_summary(out, stage)
        if summary is None: missing.append(stage); continue
        keys[label] = summary.get('data_key')
        for r in summary['rows']:
            if label == 'Final' and r['name'] != summary['best']: continue  # the recipe ablation has its own table
            rows.append(dict(stage=label, variant=label if label in ('Baseline', 'Final') else f"{label}-{r['name']}",
                             configuration=r['config'], params_M=r['params_M'], valid_acc=r['valid_acc'],
                             valid_acc_ci=r.get('valid_acc_ci'), train_acc=r['train_acc'], gap=r['final_gap'],
                             best_epoch=r['best_epoch'], test_acc=r.get('test_acc', float('nan')),
                             seeds=r['n_seeds'], profile=summary['profile'],
                             **{k: r.get(k) for k in (*COST_COLUMNS, 'cost_device')}))
            points.append(dict(label=rows[-1]['variant'], macs_G=r.get('macs_G'), score=r['valid_acc'],
                               half=_half(r)))
    if not rows: raise FileNotFoundError(f"no finished stage runs under {out}: run the stage scripts first")
    best = max((r for r in rows if r['stage'] != 'Final'), key=lambda r: r['valid_acc'], default=None)
    over = [f"{r['variant']} ({r['gap']:.1%})" for r in rows if (r['gap'] or 0) > 0.10]  # None: no held-out valid
    distinct = {str(k) for k in keys.values()}
    notes = ((f"Best valid accuracy among the comparisons (spec recipe): {best['variant']} ({best['configuration']}) "
              f"with {best['valid_acc']:.2%}. " if best else "No comparison stage has run yet. ")
             + "The final model is trained with the final recipe (see its section).\n\n"
             f"Overfitting signs (train accuracy more than 10 points above valid at the last epoch): "
             f"{', '.join(over) if over else 'none'}.\n\n"
             + (f"WARNING: these stages ran on different data, classes, split or profile: "
                f"{', '.join(f'{k}: {v}' for k, v in keys.items())}.\n\n" if len(distinct) > 1 else '')
             + (f"Stages not run yet: {', '.join(missing)}.\n" if missing else ''))
    shown = plot_score_vs_cost(points, Path(folder) / 'accuracy_vs_macs.png', 'valid accuracy (95% interval)',
                               'T2 variants: valid accuracy against compute')
    notes += (f"\n{cost_note(rows)}\n\nThe rule of every stage's choice: {TIE_RULE}\n"
              + ("\naccuracy_vs_macs.png: each variant's valid accuracy (bar: the larger of its 95% seed and Wilson "
                 "intervals) against its GMACs per image; the red steps are the Pareto front.\n" if shown else ''))
    return write_table(rows, folder, 'experiments', title='All experiments (T2.13)', notes=notes)


def _half(row, metric='valid_acc', n_key='n_eval'):
    "The larger 95% half-width of a row's score: over seeds, or the Wilson interval of its evaluation images."
    from .stats import wilson
    if row.get(metric) is None: return None
    lo, hi = wilson(row[metric], row.get(n_key) or 0) if row.get(n_key) else (0.0, 0.0)
    return max(row.get(f'{metric}_ci') or 0.0, (hi - lo) / 2)


