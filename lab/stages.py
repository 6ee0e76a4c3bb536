"""Task 2 stages: train a set of ResNet variants over seeds, tabulate, pick the best, hand it to the next stage.

Every stage invocation writes ``<out>/<stage>/<timestamp>/`` (see `lab.runs`): one run folder per variant and
seed, `table.md`/`table.csv`, overlay plots and `summary.json` with the best configuration, which the next
stage reads (`previous_choice`). The data split is fixed (seed 42) across seeds so that the seeds vary only
the initialisation and the batch order, and every variant is judged on the same valid images.
"""
from pathlib import Path

import numpy as np

from fastai.losses import LabelSmoothingCrossEntropyFlat
from fastai.torch_core import set_seed

from arch.resnet import ResNet, resnet_splitter
from data.locate import find_tiny_imagenet
from data.tiny_imagenet import load_tiny_imagenet, tiny_imagenet_dls
from .callbacks import (ActivationStatsLite, GradientStats, plot_activation_stats, plot_layer_profiles,
                        plot_norms_over_steps, plot_runs_over_steps)
from .profile import loader_workers
from .report import compare, mean_std, plot_overlay, write_table
from .runs import latest_stage_summary, stage_dir, write_json
from .train import fit_run, load_history, make_learner

__all__ = ['BASELINE', 'FINAL_RECIPE', 'tiny_imagenet_data', 'previous_choice', 'run_resnet_stage', 'aggregate_runs',
           'overfitting_text', 'blocks_variants', 'activation_variants', 'train_variant', 'experiments_table', 'STAGE_LABELS']

# The baseline (T2.5/T2.6): 3x3 stem for 64 px input, 4 stages of two blocks, ReLU: 2.80M parameters, the
# ResNet18 layout at half width so that it keeps inside the 5M budget with room for stage 3.2's [3,3,3,3].
BASELINE = dict(channels=(32, 64, 128, 256), blocks=(2, 2, 2, 2), act='relu', stem='3x3')
# The stronger recipe of the final model and the 128 px classifier (T2.10 allows AdamW and augmentation): the
# spec's plain Adam 1e-3 (T2.5) plateaus early, the GPU anchor table shows one-cycle AdamW with label smoothing ahead.
FINAL_RECIPE = dict(opt='adamw', lr=3e-3, wd=0.05, schedule='one_cycle', label_smoothing=0.1)


def blocks_variants(base):
    "Stage 3.2's variants: A, B, C = 1, 2, 3 blocks in every stage of `base`'s channels."
    return {label: dict(base, blocks=(n,) * len(base['channels'])) for label, n in zip('ABC', (1, 2, 3))}


def activation_variants(base):
    "Stage 3.3's variants: A-D = ReLU, LeakyReLU, ELU, GELU on `base`."
    return {label: dict(base, act=act) for label, act in zip('ABCD', ('relu', 'leakyrelu', 'elu', 'gelu'))}


STAT_COLUMNS = ('dead_share', 'act_std_last', 'grad_first_over_last')


def save_stats(grad_stats, act_stats, run_dir, title):
    """Write a run's statistics (CSV and PNG) and return their summary: mean dead share, last-layer activation std,
    and the ratio of the first to the last layer's weight-gradient norm, each averaged over training."""
    run_dir = Path(run_dir)
    grad_stats.to_frame().to_csv(run_dir / 'gradient_stats.csv', index=False)
    act_stats.to_frame().to_csv(run_dir / 'activation_stats.csv', index=False)
    plot_norms_over_steps(grad_stats, run_dir / 'gradient_norms.png', title=f'{title}: gradients over training')
    plot_activation_stats(act_stats, run_dir / 'activation_stats.png', title=f'{title}: activations over training')
    g = grad_stats.grad_norms.mean(0)
    return dict(dead_share=float(np.nanmean(act_stats.dead)), act_std_last=float(np.nanmean(act_stats.stds[:, -1])),
                grad_first_over_last=float(g[0] / g[-1]))


def plot_stats_side_by_side(recorded, folder):
    """The variants' statistics side by side (`recorded`: name -> (GradientStats, ActivationStatsLite)), first seed:
    statistics_per_layer.png (activation mean, std, share <= 0 and weight-gradient norm per layer, averaged over
    training) and gradients_over_training.png (weight-gradient norms of layers spread over depth, per batch)."""
    def per_layer(stat): return {k: np.nanmean(stat(cbs), axis=0) for k, cbs in recorded.items()}
    plot_layer_profiles({'activation mean': per_layer(lambda c: c[1].means),
                         'activation std': per_layer(lambda c: c[1].stds),
                         'share of activations <= 0': per_layer(lambda c: c[1].dead),
                         'weight-gradient L2 norm': per_layer(lambda c: c[0].grad_norms)},
                        Path(folder) / 'statistics_per_layer.png', title='per layer, averaged over training (first seed)')
    plot_runs_over_steps({k: cbs[0] for k, cbs in recorded.items()}, Path(folder) / 'gradients_over_training.png',
                         title='weight-gradient norms over training (first seed)')


def tiny_imagenet_data(data, profile, size=64, augment=True, split_seed=42):
    "Locate (or generate) Tiny ImageNet, split it and build DataLoaders for `profile`: (splits, dls, source)."
    root, source = find_tiny_imagenet(data)
    splits = load_tiny_imagenet(root, seed=split_seed, max_per_class=profile['max_per_class'])
    dls = tiny_imagenet_dls(splits, size=size, bs=profile['bs'], augment=augment, num_workers=loader_workers())
    print(f"data: {root} ({source}); {len(splits.train)} train / {len(splits.valid)} valid / {len(splits.test)} test "
          f"images, {len(splits.names)} classes; test = the official val split (the test split has no labels)")
    return splits, dls, source


def previous_choice(out, stage, default):
    "The best configuration chosen by the newest finished run of `stage` under `out`, or `default` (said)."
    summary = latest_stage_summary(out, stage)
    if summary is None:
        print(f"NOTICE: no finished {stage} run under {out}; using the documented default {default}")
        return dict(default), f"default (no {stage} run found)"
    print(f"using the choice of {stage}: {summary['best']} {summary['best_config']} ({summary['path']})")
    return dict(summary['best_config']), f"{stage}: {summary['conclusion']}"


def aggregate_runs(name, config, runs):
    "One table row from a variant's run summaries (one per seed): means and stds over seeds."
    def pick(key, where='best'): return [r[where][key] for r in runs]
    acc, acc_sd = mean_std(pick('valid_accuracy'))
    train_acc, _ = mean_std(pick('train_accuracy'))
    final_gap, _ = mean_std([r['final']['train_accuracy'] - r['final']['valid_accuracy'] for r in runs])
    return dict(name=name, config=_describe(config), params_M=round(runs[0]['params'] / 1e6, 3),
                valid_acc=acc, valid_acc_std=acc_sd, train_acc=train_acc,
                final_valid_acc=mean_std(pick('valid_accuracy', 'final'))[0], final_gap=final_gap,
                valid_loss_rise=mean_std([r['final']['valid_loss'] - r['min_valid_loss'] for r in runs])[0],
                best_epoch=mean_std([r['best_epoch'] for r in runs])[0], n_seeds=len(runs),
                seconds=mean_std([r['wall_seconds'] for r in runs])[0])


def _describe(cfg):
    return ' '.join(f"{k}={'-'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in cfg.items())


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


def train_variant(name, cfg, dls, folder, seed, epochs, profile, source, lr=1e-3, opt='adam', wd=0.0,
                  schedule='constant', label_smoothing=0.0, cbs=()):
    "Train one ResNet variant for one seed into `folder/<name>-seed<seed>`; return (learner, summary)."
    set_seed(seed)
    model = ResNet(**cfg)
    loss_func = LabelSmoothingCrossEntropyFlat(eps=label_smoothing) if label_smoothing else None
    learn = make_learner(model, dls, resnet_splitter, loss_func=loss_func, opt=opt, wd=wd, cbs=cbs)
    config = dict(variant=name, model=cfg, data_source=source, profile=profile, lr=lr, opt=opt, wd=wd,
                  label_smoothing=label_smoothing)
    return learn, fit_run(learn, Path(folder) / f'{name}-seed{seed}', epochs, lr, config, seed=seed, schedule=schedule)


def run_resnet_stage(stage, variants, *, out, data, profile, seeds, epochs, title, chosen_from=None, stats=False):
    """Train every variant (name -> ResNet kwargs) for every seed, write the stage's table, plots and summary.

    `stats`: record per-layer gradient and activation statistics of every run (`lab.callbacks`), save them
    per run, add their summary columns to the table and draw the variants side by side.
    Returns the stage summary (also written as summary.json), whose `best_config` the next stage reads.
    """
    with stage_dir(out, stage) as folder:
        splits, dls, source = tiny_imagenet_data(data, profile)
        rows, histories, recorded = [], {}, {}
        every = max(1, len(dls.train) * epochs // 100)  # about 100 records per run, whatever its length
        for name, cfg in variants.items():
            runs = []
            for seed in seeds:
                cbs = [GradientStats(every=every), ActivationStatsLite(every=every)] if stats else []
                learn, summary = train_variant(name, cfg, dls, folder, seed, epochs, profile, source, cbs=cbs)
                if stats: summary.update(save_stats(*cbs, folder / f'{name}-seed{seed}', title=f'{name} ({cfg["act"]})'))
                runs.append(summary)
                histories[name if len(seeds) == 1 else f'{name} s{seed}'] = load_history(folder / f'{name}-seed{seed}')
                if stats and seed == seeds[0]: recorded[f"{name}: {cfg['act']}"] = cbs
            rows.append(aggregate_runs(name, cfg, runs))
            if stats: rows[-1].update({k: mean_std([r[k] for r in runs])[0] for k in STAT_COLUMNS})
        if stats: plot_stats_side_by_side(recorded, folder)
        for col in ('valid_accuracy', 'train_accuracy', 'valid_loss', 'train_loss'):
            plot_overlay(histories, col, folder / f'{col}.png', title=f'{title}: {col}')
        verdict = compare(rows, 'valid_acc')
        best = verdict['best']
        analysis = (f"{verdict['text']}\n\nOverfitting:\n{overfitting_text(rows)}\n\n"
                    f"Data: {source}; profile {profile['name']}; seeds {seeds}; {epochs} epochs; valid = best epoch.")
        write_table(rows, folder, title=title, notes=analysis)
        summary = dict(stage=stage, title=title, best=best, best_config=variants[best], conclusion=verdict['text'],
                       significant=verdict['significant'], rows=rows, analysis=analysis, chosen_from=chosen_from,
                       data_source=source, profile=profile['name'], seeds=seeds, epochs=epochs)
        write_json(folder / 'summary.json', summary)
        print(f"\n{title}\n{analysis}")
    return summary


STAGE_LABELS = {'stage2_baseline': 'Baseline', 'stage3_1_channels': '3.1', 'stage3_2_blocks': '3.2',
                'stage3_3_activations': '3.3', 'stage4_final': 'Final'}


def experiments_table(out, folder, current=None):
    """The summary of all experiments (T2.13) from the newest finished run of every stage under `out`
    (`current`: a stage summary not yet published, e.g. the final stage writing this table).
    Writes experiments.md/csv into `folder` with the analysis, and returns the frame."""
    rows, missing = [], []
    for stage, label in STAGE_LABELS.items():
        summary = current if current and current['stage'] == stage else latest_stage_summary(out, stage)
        if summary is None: missing.append(stage); continue
        for r in summary['rows']:
            rows.append(dict(stage=label, variant=label if label in ('Baseline', 'Final') else f"{label}-{r['name']}",
                             configuration=r['config'], params_M=r['params_M'], valid_acc=r['valid_acc'],
                             valid_acc_std=r['valid_acc_std'], train_acc=r['train_acc'], gap=r['final_gap'],
                             best_epoch=r['best_epoch'], test_acc=r.get('test_acc', float('nan')),
                             seeds=r['n_seeds'], data=summary['data_source'], profile=summary['profile']))
    if not rows: raise FileNotFoundError(f"no finished stage runs under {out}: run the stage scripts first")
    best = max(rows, key=lambda r: r['valid_acc'])
    over = [f"{r['variant']} ({r['gap']:.1%})" for r in rows if r['gap'] > 0.10]
    notes = (f"Best valid accuracy: {best['variant']} ({best['configuration']}) with {best['valid_acc']:.2%}.\n\n"
             f"Overfitting signs (train accuracy more than 10 points above valid at the last epoch): "
             f"{', '.join(over) if over else 'none'}.\n\n"
             + (f"Stages not run yet: {', '.join(missing)}.\n" if missing else ''))
    return write_table(rows, folder, 'experiments', title='All experiments (T2.13)', notes=notes)
