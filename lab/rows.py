"""The table layouts: a comparison's rows, computed from the runs' records (`lab.record.RunRecord`) and read by
attribute. `Row` is a classifier variant (with the recipe ablation's columns), `SegRow` a U-Net variant,
`ExperimentRow` a line of the table of all experiments (T2.13, `experiments_table`). `to_dict` gives the keys a row was given, in that order:
the columns of table.md/table.csv and the 'rows' of a stage's summary.json; `Row.of` reads them back.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .lookup import latest_stage_summary
from .metrics import is_undefined
from .record import UNSET, Fields, RunRecord
from .recipe import describe_model
from .cost import COST_COLUMNS, cost_columns, cost_note
from .stats import TIE_RULE, compare, mean_std, seed_interval, wilson
from .tables import plot_score_vs_cost, write_table

__all__ = ['Row', 'SegRow', 'ExperimentRow', 'classifier_row', 'seg_row', 'seg_table_rows', 'overfitting_text',
           'STAT_COLUMNS', 'HELD_OUT', 'ABLATION_COLUMNS', 'compare_valid', 'compare_seg', 'STAGE_LABELS',
           'experiments_table']


@dataclass(eq=False)
class Row(Fields):
    "A classifier variant's table row: means over seeds (valid at the best epoch), 95% seed intervals, sizes."
    name: str = UNSET
    config: str = UNSET
    params_M: float = UNSET
    valid_acc: float = UNSET
    valid_acc_std: float = UNSET
    valid_acc_ci: float = UNSET
    n_eval: int = UNSET             # valid images
    train_acc: float = UNSET
    final_valid_acc: float = UNSET
    final_gap: float = UNSET        # train minus valid accuracy at the last epoch
    valid_loss_rise: float = UNSET  # last valid loss minus its minimum
    best_epoch: float = UNSET
    n_seeds: int = UNSET
    seconds: float = UNSET
    test_acc: float = UNSET
    test_acc_std: float = UNSET
    test_acc_ci: float = UNSET
    test_lo: float = UNSET          # mean Wilson interval of the test set
    test_hi: float = UNSET
    n_test: int = UNSET
    dead_share: float = UNSET       # the statistics columns (stage 3.3)
    act_std_last: float = UNSET
    grad_first_over_last: float = UNSET
    step: str = UNSET               # the recipe ablation's columns (lab.ablation)
    on: str = UNSET                 # the row it was tried on
    kept: str = UNSET
    why: str = UNSET
    source: str = UNSET
    valid_gain: float = UNSET
    test_gain: float = UNSET        # summaries written before ablation rows became valid-only
    noise: float = UNSET
    test_values: list = UNSET       # the final row's per-seed test accuracies (taken out before the tables)
    macs_G: float = UNSET           # the cost columns (lab.cost.COST_COLUMNS): GMACs per image
    trainable_M: float = UNSET
    infer_img_s: float = UNSET      # inference images/s at the recipe's batch
    latency_ms: float = UNSET       # batch 1
    train_img_s: float = UNSET      # the run's own training throughput
    peak_mem_MiB: float = UNSET     # CUDA only
    cost_device: str = UNSET        # where the timings were measured
    extra: dict = field(default_factory=dict)


STAT_COLUMNS = ('dead_share', 'act_std_last', 'grad_first_over_last')
# a row's numbers that rest on the valid images being held out (None for the refit row)
HELD_OUT = ('valid_acc', 'valid_acc_std', 'valid_acc_ci', 'final_valid_acc', 'final_gap', 'valid_loss_rise')
# ablation.md/.csv: valid numbers only; the test set is scored once, for the final model (and the refit), in the notes
ABLATION_COLUMNS = ['step', 'on', 'valid_acc', 'valid_acc_ci', 'valid_gain', 'noise', 'kept', 'n_seeds', 'why',
                    'params_M', *COST_COLUMNS, 'cost_device']


def classifier_row(name, recipe, runs):
    "One table row of a classifier variant from its runs (records or summary dicts, one per seed)."
    runs = [RunRecord.of(r) for r in runs]
    def pick(key, where='best'): return [getattr(r, where)[key] for r in runs]
    acc = pick('valid_accuracy')
    row = Row(name=name, config=describe_model(recipe), params_M=round(runs[0].params / 1e6, 3),
              valid_acc=mean_std(acc)[0], valid_acc_std=mean_std(acc)[1], valid_acc_ci=seed_interval(acc),
              n_eval=runs[0].n_valid, train_acc=mean_std(pick('train_accuracy'))[0],
              final_valid_acc=mean_std(pick('valid_accuracy', 'final'))[0],
              final_gap=mean_std([r.final['train_accuracy'] - r.final['valid_accuracy'] for r in runs])[0],
              valid_loss_rise=mean_std([r.final['valid_loss'] - r.min_valid_loss for r in runs])[0],
              best_epoch=mean_std([r.best_epoch for r in runs])[0], n_seeds=len(runs),
              seconds=mean_std([r.wall_seconds for r in runs])[0], **cost_columns(runs))
    if runs[0].has('test_acc'):
        test = [r.test_acc for r in runs]
        row.update(test_acc=mean_std(test)[0], test_acc_std=mean_std(test)[1], test_acc_ci=seed_interval(test),
                   test_lo=float(np.mean([r.test_acc_lo for r in runs])),
                   test_hi=float(np.mean([r.test_acc_hi for r in runs])), n_test=runs[0].n)
    return row


def compare_valid(rows):
    "`lab.stats.compare` of classifier rows by mean valid accuracy (the lab's choice everywhere)."
    return compare([Row.of(r).to_dict() for r in rows], 'valid_acc')


def compare_seg(rows):
    "`lab.stats.compare` of U-Net rows by mean valid IoU."
    return compare([SegRow.of(r).to_dict() for r in rows], 'iou')


@dataclass(eq=False)
class SegRow(Fields):
    "A U-Net variant's table row: valid (and test, real-frame) IoU, Dice, pixel accuracy, mean and std over seeds."
    name: str = UNSET
    iou: float = UNSET
    iou_std: float = UNSET
    iou_ci: float = UNSET
    dice: float = UNSET
    dice_std: float = UNSET
    dice_ci: float = UNSET
    pixel_acc: float = UNSET
    pixel_acc_std: float = UNSET
    pixel_acc_ci: float = UNSET
    test_iou: float = UNSET
    test_iou_std: float = UNSET
    test_dice: float = UNSET
    test_dice_std: float = UNSET
    test_pixel_acc: float = UNSET
    test_pixel_acc_std: float = UNSET
    real_iou: float = UNSET
    real_iou_std: float = UNSET
    real_dice: float = UNSET
    real_dice_std: float = UNSET
    real_pixel_acc: float = UNSET
    real_pixel_acc_std: float = UNSET
    params_M: float = UNSET
    trainable_M: float = UNSET
    epochs: int = UNSET
    seconds: float = UNSET
    n_seeds: int = UNSET
    macs_G: float = UNSET           # the cost columns (lab.cost.COST_COLUMNS): GMACs per image
    infer_img_s: float = UNSET      # inference images/s at the recipe's batch
    latency_ms: float = UNSET       # batch 1
    train_img_s: float = UNSET      # the run's own training throughput
    peak_mem_MiB: float = UNSET     # CUDA only
    cost_device: str = UNSET        # where the timings were measured
    extra: dict = field(default_factory=dict)


SEG_METRICS = ('iou', 'dice', 'pixel_acc')


def seg_row(name, runs, epochs):
    "A table row of a U-Net variant from its runs (records or summary dicts, one per seed)."
    runs = [RunRecord.of(r) for r in runs]
    row = SegRow(name=name)
    for m in SEG_METRICS:
        values = [r.best[f'valid_{m}'] for r in runs]
        mean, std = mean_std(values)
        row.update(**{m: mean, f'{m}_std': std, f'{m}_ci': seed_interval(values)})
    for where in ('test', 'real'):
        if runs[0].has(f'{where}_iou'):
            for m in SEG_METRICS:
                mean, std = mean_std([getattr(r, f'{where}_{m}') for r in runs])
                row.update(**{f'{where}_{m}': mean, f'{where}_{m}_std': std})
    row.update(params_M=round(runs[0].params / 1e6, 3), trainable_M=round(runs[0].trainable_params / 1e6, 3),
               epochs=epochs, seconds=mean_std([r.wall_seconds for r in runs])[0], n_seeds=len(runs))
    row.update(**{k: v for k, v in cost_columns(runs).items() if k != 'trainable_M'})  # the row has its own
    return row


SEG_SCORES = [f'{where}{m}' for where in ('', 'test_', 'real_') for m in ('iou', 'dice')]


def seg_table_rows(rows):
    """`rows` of `seg_row` as dicts for a table: an undefined IoU or Dice (masks without rock pixels) as an empty cell,
    not a number; the text says 'no rock pixels' (`lab.metrics.score_text`)."""
    return [{k: '' if k in SEG_SCORES and is_undefined(v) else v for k, v in SegRow.of(r).to_dict().items()}
            for r in rows]


def overfitting_text(rows, gap_threshold=0.10):
    "Overfitting signs from the numbers: final train-valid accuracy gap and valid loss rising after its minimum."
    lines = []
    for r in map(Row.of, rows):
        signs = []
        if r.final_gap > gap_threshold: signs.append(f"train accuracy {r.final_gap:.1%} above valid at the end")
        if r.valid_loss_rise > 0.05: signs.append(f"valid loss {r.valid_loss_rise:.3f} above its minimum at the end")
        lines.append(f"- {r.name}: " + ('; '.join(signs) if signs else
                     f"no clear overfitting (gap {r.final_gap:.1%}, valid loss rise {r.valid_loss_rise:.3f})"))
    return '\n'.join(lines)


@dataclass(eq=False)
class ExperimentRow(Fields):
    "A line of the table of all Task 2 experiments (`experiments_table`)."
    stage: str = UNSET
    variant: str = UNSET
    configuration: str = UNSET
    params_M: float = UNSET
    valid_acc: float = UNSET
    valid_acc_ci: float = UNSET
    train_acc: float = UNSET
    gap: float = UNSET
    best_epoch: float = UNSET
    test_acc: float = UNSET
    seeds: int = UNSET
    profile: str = UNSET
    macs_G: float = UNSET           # the cost columns (lab.cost.COST_COLUMNS): GMACs per image
    trainable_M: float = UNSET
    infer_img_s: float = UNSET      # inference images/s at the recipe's batch
    latency_ms: float = UNSET       # batch 1
    train_img_s: float = UNSET      # the run's own training throughput
    peak_mem_MiB: float = UNSET     # CUDA only
    cost_device: str = UNSET        # where the timings were measured
    extra: dict = field(default_factory=dict)


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
        for r in map(Row.of, summary['rows']):
            if label == 'Final' and r.name != summary['best']: continue  # the recipe ablation has its own table
            variant = label if label in ('Baseline', 'Final') else f"{label}-{r.name}"
            rows.append(ExperimentRow(stage=label, variant=variant, configuration=r.config, params_M=r.params_M,
                                      valid_acc=r.valid_acc, valid_acc_ci=r.valid_acc_ci, train_acc=r.train_acc,
                                      gap=r.final_gap, best_epoch=r.best_epoch,
                                      test_acc=r.test_acc if r.has('test_acc') else float('nan'),
                                      seeds=r.n_seeds, profile=summary['profile'],
                                      **{k: r[k] for k in (*COST_COLUMNS, 'cost_device') if k in r}))
            points.append(dict(label=variant, macs_G=r.macs_G, score=r.valid_acc, half=_half(r)))
    if not rows: raise FileNotFoundError(f"no finished stage runs under {out}: run the stage scripts first")
    best = max((r for r in rows if r.stage != 'Final'), key=lambda r: r.valid_acc, default=None)
    over = [f"{r.variant} ({r.gap:.1%})" for r in rows if (r.gap or 0) > 0.10]  # None: no held-out valid
    distinct = {str(k) for k in keys.values()}
    notes = ((f"Best valid accuracy among the comparisons (spec recipe): {best.variant} ({best.configuration}) "
              f"with {best.valid_acc:.2%}. " if best else "No comparison stage has run yet. ")
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


def _half(row):
    "The larger 95% half-width of a row's valid accuracy: over seeds, or the Wilson interval of its valid images."
    if row.valid_acc is None: return None
    lo, hi = wilson(row.valid_acc, row.n_eval) if row.n_eval else (0.0, 0.0)
    return max(row.valid_acc_ci or 0.0, (hi - lo) / 2)
