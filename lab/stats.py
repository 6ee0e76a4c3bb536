"""Statistics of the lab's numbers: means over seeds, 95% intervals (Student's t over seeds, Wilson over the images of
an evaluation set), accuracies in words, and the comparison that calls a lead real or within noise."""
import math

import numpy as np

__all__ = ['mean_std', 'wilson', 'seed_interval', 'accuracy_text', 'compare', 'decide', 'verdict_text', 'cost_ratio',
           'pooled_seed_sd', 'gain_verdict', 'GAIN_RULE', 'TIE_RULE', 'COST_KEYS']


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


COST_KEYS = ('macs_G', 'params_M')  # a table row's cost, in the order the tie rule reads it

TIE_RULE = ("A lead counts as real only when it is larger than the noise: the 95% Wilson half-width of the best row's "
            "score on its evaluation images and, with two or more seeds, the 95% seed interval (the larger of the two "
            "rows'); with one seed the seed noise is unknown, so a lead beyond the Wilson noise is kept but called "
            "unproven. Variants that tie within the noise are decided by cost: the cheaper one (fewer MACs per image, "
            "then fewer parameters) is kept, and the verdict says so ('B ties A within noise at 3.1x the MACs: A "
            "kept'). A real lead keeps the better variant and states what it costs ('+2.4 pts for 3.1x MACs'). "
            "Choices are made on valid scores, never on test (`lab.stats.compare`).")


def _num(r, key):
    v = r.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def decide(rows, metric, higher_is_better=True, n_key='n_eval', cost=COST_KEYS):
    """The one decision of a comparison (`TIE_RULE`), from which every verdict text is written (`verdict_text`).

    `rows`: dicts with `metric` (mean over seeds), `metric + '_ci'` (95% seed half-width, None for one seed),
    'n_seeds', `n_key` (the images an accuracy was measured on: their Wilson interval) and the `cost` keys.
    Returns dict(kind, leader, runner_up, kept, tied, lead, set_noise, seed_noise, n_seeds, n_eval, undefined):
    kind 'none' (no defined score), 'only' (one row), 'tie' (the runner-up within noise of the leader, an exact tie
    included), 'unproven' (a lead beyond the Wilson noise, one seed) or 'lead' (beyond every noise); rows are the
    row dicts; `kept` the row chosen: the cheapest of the leader and the rows tied with it, else the leader."""
    if not rows: raise ValueError("compare needs at least one row")
    defined = [r for r in rows if _num(r, metric) is not None]
    undefined = [r for r in rows if r not in defined]
    d = dict(kind='none', leader=rows[0], runner_up=None, kept=rows[0], tied=[], lead=None, set_noise=0.0,
             seed_noise=0.0, n_seeds=None, n_eval=None, undefined=undefined)
    if not defined: return d
    ranked = sorted(defined, key=lambda r: r[metric], reverse=higher_is_better)  # stable: ties keep the row order
    leader = ranked[0]
    d.update(kind='only', leader=leader, kept=leader)
    if len(ranked) == 1: return d
    n_eval = leader.get(n_key)
    lo, hi = wilson(leader[metric], n_eval) if n_eval else (math.nan, math.nan)
    set_noise = (hi - lo) / 2 if n_eval else 0.0

    def seeds(r): return min(r.get('n_seeds', 1), leader.get('n_seeds', 1))
    def seed_noise(r): return max((x.get(f'{metric}_ci') or 0.0) for x in (leader, r))
    def gap(r): return abs(leader[metric] - r[metric])
    def tied(r): return gap(r) == 0 or gap(r) <= set_noise or (seeds(r) >= 2 and gap(r) <= seed_noise(r))
    runner = ranked[1]
    kind = 'tie' if tied(runner) else 'unproven' if seeds(runner) < 2 else 'lead'
    ties = [r for r in ranked[1:] if tied(r)]
    costs = [leader, *ties]
    known = all(_num(r, k) is not None for r in costs for k in cost)
    kept = min(costs, key=lambda r: tuple(r[k] for k in cost)) if ties and known else leader
    d.update(kind=kind, runner_up=runner, kept=kept, tied=ties, lead=gap(runner), set_noise=set_noise,
             seed_noise=seed_noise(runner), n_seeds=seeds(runner), n_eval=n_eval)
    return d


def cost_ratio(row, base, cost=COST_KEYS):
    """(factor, 'MACs' or 'parameters') of `row`'s cost against `base`'s: the MACs, or the parameters when the MACs
    match; (1.0, None) when both match, None when a cost is unknown."""
    for key, what in zip(cost, ('MACs', 'parameters')):
        a, b = _num(row, key), _num(base, key)
        if a is None or not b: return None
        if abs(a / b - 1) >= 0.005: return a / b, what
    return 1.0, None


def _ratio_words(ratio, the='the '):
    if ratio is None: return 'an unknown cost'
    return 'the same cost' if ratio[1] is None else f"{ratio[0]:.1f}x {the}{ratio[1]}" if ratio[0] >= 1 else \
        f"{ratio[0]:.2g}x {the}{ratio[1]}"


def verdict_text(d, metric, label='name', unit=''):
    "The verdict of a decision (`decide`) in words: every branch of it, and nothing the decision did not find."
    name = lambda r: str(r[label])
    v = lambda r: f"{r[metric]:.4g}{unit}"
    not_ranked = (f" Not ranked, their {metric} undefined: {', '.join(name(r) for r in d['undefined'])}."
                  if d['undefined'] else '')
    leader, runner, kept = d['leader'], d['runner_up'], d['kept']
    if d['kind'] == 'none':
        return (f"No {metric} to compare: it is undefined for every row (e.g. an IoU of masks without rock pixels); "
                f"{name(leader)} is listed as the best only because it comes first.")
    if d['kind'] == 'only':
        return (f"Only {name(leader)} has a {metric} ({v(leader)})." if d['undefined'] else
                f"Only {name(leader)} was run ({metric} {v(leader)}).") + not_ranked
    lead = d['lead']
    text = (f"{name(leader)} and {name(runner)} both reach {metric} {v(leader)}." if lead == 0 else
            f"Best {metric}: {name(leader)} with {v(leader)}, ahead of {name(runner)} ({v(runner)}) by "
            f"{lead:.4g}{unit}.")
    wilson_text = f"the 95% Wilson half-width of {d['set_noise']:.3g} on {d['n_eval']} images" if d['n_eval'] else ''
    seed_text = f"the 95% seed interval ({d['seed_noise']:.3g}{unit}, {d['n_seeds']} seeds)"
    if d['kind'] == 'tie':
        if lead: text += (f" The lead is within noise: inside {wilson_text if lead <= d['set_noise'] else seed_text}, "
                          f"so the two are not distinguishable.")
        others = [r for r in [leader, *d['tied']] if r is not kept]
        ratios = [cost_ratio(r, kept) for r in others]
        why = ('the cheaper' if kept is not leader or (None not in ratios and all(q[0] > 1 for q in ratios)) else
               'cost unknown: first in the ranking' if None in ratios else 'the same cost: first in the ranking')
        at = {}  # rows at the same cost said together: 'B, C and D tie A within noise at the same cost'
        for r, q in zip(others, ratios): at.setdefault(_ratio_words(q), []).append(name(r))
        said = lambda n: n[0] if len(n) == 1 else f"{', '.join(n[:-1])} and {n[-1]}"
        ties = '; '.join(f"{said(n)} tie{'s' if len(n) == 1 else ''} {name(kept)} within noise at {w}"
                         for w, n in at.items())
        return text + f" {ties}: {name(kept)} kept ({why})." + not_ranked
    ratio = cost_ratio(leader, runner)
    pts = f"{lead * 100:+.1f} pts" + ('' if ratio is None else ' at the same cost' if ratio[1] is None else
                                      f" for {_ratio_words(ratio, '')}" if ratio[0] > 1 else
                                      f" at {_ratio_words(ratio)}, the cheaper too")
    if d['kind'] == 'unproven':
        text += (" One seed only: the noise between seeds is unknown, so treat the lead as unproven (run --seeds 2 or "
                 "more)" + (f"; it is larger than {wilson_text}" if d['n_eval'] else '') + '.')
    else:
        text += (f" The lead is larger than {seed_text}" + (f" and {wilson_text}" if d['n_eval'] else '')
                 + ", so it is likely real.")
    return text + f" {name(leader)} kept: {pts}." + not_ranked


def compare(rows, metric, label='name', higher_is_better=True, unit='', n_key='n_eval'):
    """Pick a row by `metric` (mean over seeds) and `TIE_RULE`: `decide` makes the one decision, `verdict_text`
    writes it. Returns dict(best (the row kept), leader, runner_up, lead, significant (True: a real lead; False: a
    tie within noise; None: unproven or nothing to compare), decision (its kind), tied, text)."""
    d = decide(rows, metric, higher_is_better, n_key)
    significant = {'lead': True, 'tie': False}.get(d['kind'])
    label_of = lambda r: None if r is None else r[label]
    return dict(best=label_of(d['kept']), leader=label_of(d['leader']), runner_up=label_of(d['runner_up']),
                lead=d['lead'], significant=significant, decision=d['kind'], tied=[r[label] for r in d['tied']],
                text=verdict_text(d, metric, label, unit))


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
