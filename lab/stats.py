"""Statistics of the lab's numbers: means over seeds, 95% intervals (Student's t over seeds, Wilson over the images of
an evaluation set), accuracies in words, and the comparison that calls a lead real or within noise."""
import math

import numpy as np

__all__ = ['mean_std', 'wilson', 'seed_interval', 'accuracy_text', 'compare', 'pooled_seed_sd', 'gain_verdict',
           'GAIN_RULE']


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
    Wilson half-width of the best row's accuracy; with one seed the seed noise is unknown, so it is unproven. Rows
    whose `metric` is undefined (nan or None) are not ranked, and said so.
    Returns dict(best, runner_up, lead, significant, text).
    """
    if not rows: raise ValueError("compare needs at least one row")
    defined = [r for r in rows if r[metric] is not None and not math.isnan(r[metric])]
    if not defined:
        return dict(best=rows[0][label], runner_up=None, lead=None, significant=None,
                    text=f"No {metric} to compare: it is undefined for every row (e.g. an IoU of masks without rock "
                         f"pixels); {rows[0][label]} is listed as the best only because it comes first.")
    if len(defined) < len(rows):
        result = compare(defined, metric, label, higher_is_better, unit, n_key)
        if len(defined) == 1:
            result['text'] = f"Only {defined[0][label]} has a {metric} ({defined[0][metric]:.4g}{unit})."
        result['text'] += (f" Not ranked, their {metric} undefined: "
                           f"{', '.join(str(r[label]) for r in rows if r not in defined)}.")
        return result
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


def pooled_seed_sd(groups):
    """(sd, degrees of freedom) of the seed-to-seed noise pooled over `groups` (each the per-seed values of one
    variant): sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)), the one-way ANOVA estimate; (None, 0) when no group has two
    seeds. Pooling lets 2 seeds per variant give a usable estimate (df = the number of variants) where one variant's
    own 2 seeds (df 1, t = 12.7) cannot."""
    ss, df = 0.0, 0
    for values in groups:
        a = np.asarray(values, dtype=float)
        if len(a) > 1: ss, df = ss + float(((a - a.mean()) ** 2).sum()), df + len(a) - 1
    return (math.sqrt(ss / df), df) if df else (None, 0)


GAIN_RULE = ("An ingredient is kept when it raises the mean valid accuracy of the row it is tried on by more than the "
             "noise, the larger of (a) the 95% Wilson half-width of the two rows' valid accuracies on the valid images "
             "(the lab's rule for every comparison, `lab.stats.compare`; conservative for two models scored on the "
             "same images) and (b) the 95% interval of a difference of two means over the seeds, "
             "t(df) * s * sqrt(1/n1 + 1/n2), with s the seed standard deviation pooled over every row trained so far "
             "(`pooled_seed_sd`). With one seed (b) is unknown and (a) alone decides, which the row says.")


def gain_verdict(candidate, base, n_eval, pooled=(None, 0)):
    """Whether `candidate` (per-seed values of a metric, higher is better) beats `base` (the same seeds) by more than
    the noise, by `GAIN_RULE`: dict(gain, noise, wilson, seed_noise, kept, why). `n_eval`: the images both were
    measured on; `pooled`: (sd, df) from `pooled_seed_sd`."""
    c, b = mean_std(candidate)[0], mean_std(base)[0]
    gain = c - b
    w = max((hi - lo) / 2 for lo, hi in (wilson(c, n_eval), wilson(b, n_eval))) if n_eval else 0.0
    sd, df = pooled
    seed = (_T95[min(df, 30) - 1] * sd * math.sqrt(1 / len(candidate) + 1 / len(base))
            if sd is not None and df and max(len(candidate), len(base)) > 1 else None)
    noise = max(w, seed or 0.0)
    kept = gain > noise
    pts = lambda v: f"{v * 100:.1f}"
    parts = [f"Wilson +-{pts(w)} on {n_eval} images" if n_eval else None,
             f"seeds +-{pts(seed)} (pooled sd {pts(sd)}, df {df})" if seed is not None else
             "one seed: seed noise unknown"]
    why = (f"{gain * 100:+.1f} points {'>' if kept else '<='} noise {pts(noise)} ({'; '.join(p for p in parts if p)}): "
           + ('kept' if kept else 'not kept, within noise' if gain > 0 else 'not kept, no gain'))
    return dict(gain=gain, noise=noise, wilson=w, seed_noise=seed, kept=kept, why=why)
