"""Tables, curves and conclusions written from the numbers of a run or a stage."""
import math
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ['plot_curves', 'plot_overlay', 'write_table', 'markdown_table', 'markdown_rows', 'mean_std', 'compare', 'wilson',
           'seed_interval', 'accuracy_text']


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
    if v is None: return '-'
    if isinstance(v, float): return '-' if math.isnan(v) else f'{v:.4g}'
    return str(v)


def _cell(v): return str(v).replace('|', '\\|').replace('\n', ' ')


def markdown_rows(header, rows):
    "A GitHub markdown table (no final newline) of `rows` of cells under `header`; '|' and newlines in cells escaped."
    lines = ['| ' + ' | '.join(map(str, header)) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(_cell(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


def markdown_table(df):
    "A GitHub markdown table of `df` (no extra dependency)."
    return markdown_rows(list(df.columns), ([_fmt(v) for v in row] for row in df.itertuples(index=False))) + '\n'


def write_table(rows, folder, name='table', title=None, notes=None):
    "Write `rows` (list of dicts or a frame) as `<name>.csv` and `<name>.md` (with optional title and notes)."
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    df.to_csv(Path(folder) / f'{name}.csv', index=False)
    md = (f'# {title}\n\n' if title else '') + markdown_table(df) + (f'\n{notes}\n' if notes else '')
    (Path(folder) / f'{name}.md').write_text(md)
    return df


def mean_std(values):
    "Mean and sample std of a list of numbers; the std is None for a single value (its noise is unknown, not 0)."
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else None


def wilson(p, n, z=1.96):
    "The 95% Wilson score interval (lo, hi) of an accuracy `p` measured on `n` images (the binomial noise of the set)."
    if not n or p is None: return (math.nan, math.nan)  # None: no such accuracy (e.g. a final model's valid)
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


# two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (scipy is not a dependency of the lab)
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def seed_interval(values):
    "Half-width of the 95% confidence interval of the mean over seeds (Student's t); None with a single seed."
    a = np.asarray(values, dtype=float)
    if len(a) < 2: return None
    return float(_T95[min(len(a) - 1, 30) - 1] * a.std(ddof=1) / math.sqrt(len(a)))


def accuracy_text(mean, n_images, values=None):
    """'71.4% (95%: test set 67.3-75.2% Wilson, n=500; seeds +-2.1, 2 seeds)': an accuracy with both intervals,
    never a bare '+- 0.00%' from one seed."""
    lo, hi = wilson(mean, n_images)
    parts = [f"Wilson {lo:.1%}-{hi:.1%} on {n_images} images"]
    half = seed_interval(values) if values is not None else None
    parts.append(f"seeds +-{half:.1%} over {len(values)}" if half is not None else "one seed: seed noise unknown")
    return f"{mean:.1%} (95%: {'; '.join(parts)})"


def compare(rows, metric, label='name', higher_is_better=True, unit='', n_key='n_eval'):
    """Pick the best row by `metric` (mean over seeds) and judge whether its lead is outside the noise.

    `rows`: dicts with `label`, `metric` (the mean), `metric + '_ci'` (95% seed half-width, None for one seed),
    'n_seeds' and, for accuracies, `n_key` (images it was measured on: their Wilson interval is the other noise).
    A lead counts as real only when it is larger than both the seed interval (the larger of the two rows') and the
    Wilson half-width of the best row's accuracy; with one seed the seed noise is unknown, so it is unproven.
    Returns dict(best, runner_up, lead, significant, text).
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
    seed_noise = max((r.get(f'{metric}_ci') or 0.0) for r in ranked[:2])
    n_eval = best.get(n_key)
    lo, hi = wilson(best[metric], n_eval) if n_eval else (math.nan, math.nan)
    set_noise = (hi - lo) / 2 if n_eval else 0.0
    text = (f"Best: {best[label]} with {metric} {best[metric]:.4g}{unit}, ahead of {second[label]} "
            f"({second[metric]:.4g}{unit}) by {lead:.4g}{unit}." if lead else
            f"Tie: {best[label]} and {second[label]} both reach {metric} {best[metric]:.4g}{unit}; {best[label]} is "
            f"taken as it comes first.")
    wilson_text = (f"the 95% Wilson half-width of {set_noise:.3g} on {n_eval} images" if n_eval else '')
    if lead and n_eval and lead <= set_noise:
        significant = False
        text += f" The lead is within noise: inside {wilson_text}, so the two are not distinguishable on this set."
    elif n < 2:
        significant = None
        text += (" One seed only: the noise between seeds is unknown, so treat the lead as unproven (run --seeds 2 "
                 "or more)" + (f"; it is larger than {wilson_text}." if n_eval else '.'))
    elif lead > seed_noise:
        significant = True
        text += (f" The lead is larger than the 95% seed interval ({seed_noise:.3g}{unit}, {n} seeds)"
                 + (f" and {wilson_text}" if n_eval else '') + ", so it is likely real.")
    else:
        significant = False
        text += (f" The lead is within noise: inside the 95% seed interval ({seed_noise:.3g}{unit}, {n} seeds), "
                 f"so the two are not distinguishable.")
    return dict(best=best[label], runner_up=second[label], lead=lead, significant=significant, text=text)
