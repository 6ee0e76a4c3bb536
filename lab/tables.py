"""Tables and curves written from the numbers of a run or a stage: CSV and Markdown tables, learning curves."""
import math
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from matplotlib.ticker import LogFormatterSciNotation, MaxNLocator
import pandas as pd

from .figures import save_figure

__all__ = ['epoch_axis', 'plot_curves', 'plot_overlay', 'write_table', 'markdown_table', 'markdown_rows', 'EPOCHS_FROM_0',
           'pareto_front', 'plot_score_vs_cost']

# The lab counts epochs from 0 everywhere, as fastai's logs and metrics.csv do: console, tables, plots, the report.
EPOCHS_FROM_0 = 'epochs count from 0, as in metrics.csv and fastai\'s logs'
EPOCH_AXIS = 'epoch (from 0)'


def epoch_axis(ax):
    "An x axis of whole epochs: ticks at 0, 1, 2..., never 0.5 (matplotlib's default for a few points)."
    ax.set_xlabel(EPOCH_AXIS)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_curves(history, folder, metrics=('loss', 'accuracy')):
    "One PNG per metric (`<metric>.png`) with the train and valid curves of `history` (a metrics.csv frame) vs epoch."
    paths = []
    for m in metrics:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for split in ('train', 'valid'):
            col = f'{split}_{m}'
            if col in history: ax.plot(history['epoch'], history[col], marker='o', ms=3, label=split)
        ax.set(ylabel=m, title=m); epoch_axis(ax); ax.grid(alpha=.3); ax.legend()
        paths.append(save_figure(fig, Path(folder) / f'{m}.png'))
    return paths


def plot_overlay(histories, column, path, title=None):
    "Overlay `column` vs epoch for several runs (`histories`: name -> metrics frame) on one PNG."
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, h in histories.items(): ax.plot(h['epoch'], h[column], marker='o', ms=3, label=name)
    ax.set(ylabel=column, title=title or column); epoch_axis(ax); ax.grid(alpha=.3); ax.legend(fontsize=8)
    return save_figure(fig, path)


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
    """Write `rows` (list of dicts or of table rows, `lab.rows`, or a frame) as `<name>.csv` and `<name>.md` (with
    optional title and notes)."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame([getattr(r, 'to_dict', lambda: r)() for r in rows])
    df.to_csv(Path(folder) / f'{name}.csv', index=False)
    md = (f'# {title}\n\n' if title else '') + markdown_table(df) + (f'\n{notes}\n' if notes else '')
    (Path(folder) / f'{name}.md').write_text(md)
    return df


def pareto_front(points):
    "The points no other beats on both axes (cheaper or as cheap, and better): `points` of (cost, score), by cost."
    front, best = [], -math.inf
    for c, s in sorted(points, key=lambda p: (p[0], -p[1])):
        if s > best: front.append((c, s)); best = s
    return front


class PlainLogFormatter(LogFormatterSciNotation):
    """The log ticks matplotlib labels, as plain numbers (0.138, not 1.38x10^-1): within a decade it labels every
    minor tick, and written in powers of ten they overlap."""
    def __call__(self, x, pos=None): return f'{x:.3g}' if super().__call__(x, pos) else ''


def plot_score_vs_cost(points, path, ylabel, title):
    """Score against GMACs per image, one labelled point per variant with its 95% interval, and the Pareto front
    (the variants nothing cheaper beats). `points`: dicts with label, macs_G, score and half (the interval's
    half-width, or None); points without a cost or score are left out (returns None when none is left)."""
    shown = [p for p in points if p.get('macs_G') and p.get('score') is not None and not math.isnan(p['score'])]
    if not shown: return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    labels = {}  # variants at the same point (same MACs and score) share one label
    for p in shown:
        ax.errorbar(p['macs_G'], p['score'], yerr=p.get('half') or 0, fmt='o', capsize=3, color='tab:blue', alpha=.7)
        labels.setdefault((p['macs_G'], p['score']), []).append(p['label'])
    cheapest, costliest = min(x for x, _ in labels), max(x for x, _ in labels)
    lo, hi = math.log(cheapest), math.log(costliest)
    for (x, y), names in labels.items():
        right = hi > lo and (math.log(x) - lo) / (hi - lo) > .6  # its label goes left, not out of the axes
        ax.annotate(', '.join(names), (x, y), textcoords='offset points', xytext=(-5 if right else 5, 4), fontsize=8,
                    ha='right' if right else 'left')
    front = pareto_front(list(labels))
    xs, ys = zip(*front, (costliest, front[-1][1]))  # the front holds on to the costliest
    ax.step(xs, ys, where='post', color='tab:red', alpha=.6, label='Pareto front (nothing cheaper is better)')
    ax.scatter(*zip(*front), s=120, facecolors='none', edgecolors='tab:red', zorder=3)
    ax.set(xscale='log', xlabel='GMACs per image (log scale; FlopCounterMode, FLOPs / 2)', ylabel=ylabel, title=title)
    ax.xaxis.set_major_formatter(PlainLogFormatter()); ax.xaxis.set_minor_formatter(PlainLogFormatter())
    ax.grid(alpha=.3, which='both'); ax.legend(fontsize=8)
    return save_figure(fig, path)
