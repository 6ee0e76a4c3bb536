"""Tables, curves and conclusions written from the numbers of a run or a stage."""
import math
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ['plot_curves', 'plot_overlay', 'write_table', 'markdown_table', 'mean_std', 'compare']


def plot_curves(history, folder, metrics=('loss', 'accuracy')):
    "One PNG per metric (`<metric>.png`) with the train and valid curves of `history` (a metrics.csv frame) vs epoch."
    paths = []
    for m in metrics:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for split in ('train', 'valid'):
            col = f'{split}_{m}'
            if col in history: ax.plot(history['epoch'] + 1, history[col], marker='o', ms=3, label=split)
        ax.set(xlabel='epoch', ylabel=m, title=m); ax.grid(alpha=.3); ax.legend()
        fig.tight_layout(); fig.savefig(Path(folder) / f'{m}.png', dpi=120); plt.close(fig)
        paths.append(Path(folder) / f'{m}.png')
    return paths


def plot_overlay(histories, column, path, title=None):
    "Overlay `column` vs epoch for several runs (`histories`: name -> metrics frame) on one PNG."
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, h in histories.items(): ax.plot(h['epoch'] + 1, h[column], marker='o', ms=3, label=name)
    ax.set(xlabel='epoch', ylabel=column, title=title or column); ax.grid(alpha=.3); ax.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)
    return Path(path)


def _fmt(v):
    if isinstance(v, float): return '' if math.isnan(v) else f'{v:.4g}'
    return str(v)


def markdown_table(df):
    "A GitHub markdown table of `df` (no extra dependency)."
    cols = list(df.columns)
    lines = ['| ' + ' | '.join(map(str, cols)) + ' |', '|' + '---|' * len(cols)]
    lines += ['| ' + ' | '.join(_fmt(v) for v in row) + ' |' for row in df.itertuples(index=False)]
    return '\n'.join(lines) + '\n'


def write_table(rows, folder, name='table', title=None, notes=None):
    "Write `rows` (list of dicts or a frame) as `<name>.csv` and `<name>.md` (with optional title and notes)."
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    df.to_csv(Path(folder) / f'{name}.csv', index=False)
    md = (f'# {title}\n\n' if title else '') + markdown_table(df) + (f'\n{notes}\n' if notes else '')
    (Path(folder) / f'{name}.md').write_text(md)
    return df


def mean_std(values):
    "Mean and sample std (0 for a single value) of a list of numbers."
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def compare(rows, metric, label='name', higher_is_better=True, unit=''):
    """Pick the best row by `metric` (mean over seeds) and judge whether its lead is outside the noise.

    `rows`: dicts with `label`, `metric` (the mean), `metric + '_std'` and 'n_seeds'. The lead over the
    runner-up counts as real only when it exceeds the larger of the two seed stds; with one seed there is
    no noise estimate, so the verdict says so. Returns dict(best, runner_up, lead, significant, text).
    """
    if not rows: raise ValueError("compare needs at least one row")
    ranked = sorted(rows, key=lambda r: r[metric], reverse=higher_is_better)
    best = ranked[0]
    if len(ranked) == 1:
        return dict(best=best[label], runner_up=None, lead=None, significant=None,
                    text=f"Only {best[label]} was run ({metric} {best[metric]:.4g}{unit}).")
    second = ranked[1]
    lead = abs(best[metric] - second[metric])
    n = min(r.get('n_seeds', 1) for r in ranked[:2])
    noise = max(best.get(f'{metric}_std', 0.0), second.get(f'{metric}_std', 0.0))
    text = (f"Best: {best[label]} with {metric} {best[metric]:.4g}{unit}, ahead of {second[label]} "
            f"({second[metric]:.4g}{unit}) by {lead:.4g}{unit}." if lead else
            f"Tie: {best[label]} and {second[label]} both reach {metric} {best[metric]:.4g}{unit}; {best[label]} is "
            f"taken as it comes first.")
    if n < 2:
        significant = None
        text += " One seed only: the noise between seeds is unknown, so treat a small lead as unproven (run --seeds 2 or more)."
    elif lead > noise:
        significant = True
        text += f" The lead is larger than the seed-to-seed std ({noise:.3g}{unit}, {n} seeds), so it is likely real."
    else:
        significant = False
        text += f" The lead is inside the seed-to-seed std ({noise:.3g}{unit}, {n} seeds): the two are not distinguishable."
    return dict(best=best[label], runner_up=second[label], lead=lead, significant=significant, text=text)
