"""Plots of per-layer statistics (matplotlib Agg, one PNG each): profiles over layers, and the records of
`lab.callbacks.GradientStats` and `ActivationStatsLite` over training."""
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np

from .figures import save_figure

__all__ = ['plot_layer_profiles', 'plot_layer_norms', 'plot_norms_over_steps', 'plot_activation_stats',
           'plot_runs_over_steps']


_STYLES = ('-', '--', '-.', ':')


def plot_layer_profiles(panels, path, names=None, xlabel='layer (input -> output)', log=True, title=None):
    """Per-layer line plots: `panels` maps a panel title to `{label: values per layer}`; one PNG at `path`.

    Lines of different lengths (nets of different depth) share the x axis as layer indices 1..L. With `log`, a
    panel whose positive values span more than a decade gets a log y axis (a narrower range stays linear).
    """
    fig, axs = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (panel, lines) in zip(axs[0], panels.items()):
        for k, (label, values) in enumerate(lines.items()):   # varied dashes keep coinciding lines visible
            ax.plot(np.arange(1, len(values) + 1), values, marker='o', ms=3, label=label, ls=_STYLES[k % len(_STYLES)])
        values = np.concatenate([np.asarray(v, dtype=float) for v in lines.values()])
        if log and np.nanmin(values) > 0 and np.nanmax(values) > 10 * np.nanmin(values): ax.set_yscale('log')
        ax.set(title=panel, xlabel=xlabel); ax.grid(alpha=.3, which='both')
        if names is not None and len(names) <= 24:
            ax.set_xticks(np.arange(1, len(names) + 1), names, rotation=60, ha='right', fontsize=7)
        if len(lines) > 1: ax.legend(fontsize=7)
    if title: fig.suptitle(title)
    return save_figure(fig, path)


def plot_layer_norms(grad_stats, path, step=-1, title=None):
    "Weight-gradient norms (L2 and mean |g|) and weight norms per layer at record `step` (default: the last); log y axes."
    i = step if step < 0 else list(grad_stats.steps).index(step)
    return plot_layer_profiles(
        {'weight-gradient norm': {'L2 norm': grad_stats.grad_norms[i], 'mean |grad|': grad_stats.grad_mean_abs[i]},
         'weight L2 norm': {'L2 norm': grad_stats.weight_norms[i]}},
        path, names=grad_stats.names, title=title or f'per-layer norms at step {grad_stats.steps[i]}')


def _pick(names, layers, max_lines=8):
    "Indices of the layers to draw: the given ones, else at most `max_lines` spread from first to last."
    if layers is not None: return [names.index(l) if isinstance(l, str) else l for l in layers]
    return sorted(set(np.linspace(0, len(names) - 1, min(max_lines, len(names))).round().astype(int)))


def _plot_over_steps(stats, panels, path, layers, logs, title):
    idx = _pick(stats.names, layers)
    fig, axs = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (panel, values), log in zip(axs[0], panels.items(), logs):
        for i in idx: ax.plot(stats.steps, values[:, i], label=stats.names[i])
        if log: ax.set_yscale('log')
        ax.set(title=panel, xlabel='training batch'); ax.grid(alpha=.3)
    axs[0, -1].legend(fontsize=7)
    if title: fig.suptitle(title)
    return save_figure(fig, path)


def plot_norms_over_steps(grad_stats, path, layers=None, title=None):
    "Weight-gradient L2 norm and weight L2 norm vs training batch for `layers` (default: up to 8 spread over depth)."
    return _plot_over_steps(grad_stats, {'weight-gradient L2 norm': grad_stats.grad_norms,
                                         'weight L2 norm': grad_stats.weight_norms}, path, layers, (True, True), title)


def plot_runs_over_steps(grad_stats_by_run, path, layers=None, title=None):
    "Weight-gradient L2 norm vs training batch, one panel per run (`{name: GradientStats}`), shared log y axis."
    fig, axs = plt.subplots(1, len(grad_stats_by_run), figsize=(4.5 * len(grad_stats_by_run), 3.6), squeeze=False,
                            sharey=True)
    for ax, (run, stats) in zip(axs[0], grad_stats_by_run.items()):
        for i in _pick(stats.names, layers): ax.plot(stats.steps, stats.grad_norms[:, i], label=stats.names[i])
        ax.set(title=run, xlabel='training batch', yscale='log'); ax.grid(alpha=.3)
    axs[0, 0].set_ylabel('weight-gradient L2 norm'); axs[0, -1].legend(fontsize=6)
    if title: fig.suptitle(title)
    return save_figure(fig, path)


def plot_activation_stats(act_stats, path, modules=None, title=None):
    "Activation mean, std and dead fraction vs training batch for `modules` (default: up to 8 spread over depth)."
    return _plot_over_steps(act_stats, {'mean': act_stats.means, 'std': act_stats.stds, 'share <= 0': act_stats.dead},
                            path, modules, (False, True, False), title)
