"""Stage 4's recipe ablation, greedy: from the spec's recipe, each ingredient is tried on the best row so far and kept
only when it raises mean valid accuracy by more than the noise (`lab.stats.GAIN_RULE`).

Row 0 trains the chosen configuration with `SPEC`'s training recipe (Adam 1e-3, constant, flips). The ingredients
(`INGREDIENTS`, in order) are first the final recipe's own (the rows stage 4 always had: one-cycle AdamW, label
smoothing, pad-crop, CutMix; when each is kept they are those rows exactly), then the newer ones that the
short-schedule anchors point to (fit_flat_cos, ranger, SGD with Nesterov momentum, random resized crop, mixing for the
first 80% of the epochs only, a weight EMA). Each one is tried on the base (the best row so far: the last one kept);
a row that is not kept says why, and later rows are built without it. Test-time augmentation is measured last, on the
base's own runs (no training). The final model is the base's recipe, with TTA when it was kept, trained on train with
its best epoch by valid accuracy kept (T2.11); `--refit` adds the same recipe trained on train + valid as an extra row,
never the headline. Every choice is made on valid accuracy, and only valid numbers are shown for the ablation rows:
the test set is scored once, for the final model (and the refit).
"""
from dataclasses import replace
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np

from .record import Evaluation, RunRecord
from .rows import ABLATION_COLUMNS, HELD_OUT, Row, classifier_row
from .recipe import SPEC
from .figures import save_figure
from .cost import COST_COLUMNS, cost_note
from .stats import GAIN_RULE, accuracy_text, gain_verdict, mean_std, pooled_seed_sd, seed_interval, wilson

__all__ = ['INGREDIENTS', 'ABLATED_FIELDS', 'spec_recipe', 'candidate', 'greedy_ablation', 'tta_row', 'final_row',
           'refit_row', 'final_notes', 'write_final_md', 'plot_ablation', 'stage_cost', 'TABLE_COLUMNS',
           'FINAL_FIELDS']

# (variant name, what it adds, its source, the fields it sets: a value, or None for the stage recipe's own value,
# so that flags like --lr or --min-scale reach the rows)
INGREDIENTS = [
    ('one_cycle', 'one-cycle AdamW', "the final recipe (T2.10); the GPU README's accuracy anchor: 73-75% test with it "
     "(and smoothing, pad-crop) against 60-65% with the spec's Adam", dict(opt=None, lr=None, wd=None, schedule=None)),
    ('smoothing', 'label smoothing', 'the final recipe; fastai Imagenette recipe (LabelSmoothingCrossEntropy)',
     dict(label_smoothing=None)),
    ('padcrop', 'stronger augmentation', 'the final recipe; the CIFAR reflect-pad-4 + crop, at 8 px for 64 px images',
     dict(augment=None)),
    ('mix', 'sample mixing', 'the final recipe; CutMix (Yun et al. 2019, fastai callback)', dict(mix=None)),
    ('flat_cos', 'flat-cos schedule', "fastai's fit_flat_cos, the schedule of fastai's Imagenette leaderboard",
     dict(schedule='flat_cos')),
    ('ranger', 'ranger (RAdam + Lookahead) with flat-cos', "fastai's train_imagenette.py: ranger (mom 0.9, sqr_mom "
     "0.99, eps 1e-6), fit_flat_cos, lr 1e-2, wd 1e-2", dict(opt='ranger', schedule='flat_cos', lr=1e-2, wd=1e-2)),
    ('sgd_nesterov', 'SGD with Nesterov momentum', 'the classic CIFAR ResNet recipe: SGD, Nesterov momentum 0.9, lr '
     '0.1, L2 weight decay 5e-4', dict(opt='sgd_nesterov', lr=0.1, wd=5e-4)),
    ('rrc', 'random resized crop', "fastai's Imagenette recipe: RandomResizedCrop(min_scale=0.35) + flip",
     dict(augment='rrc', min_scale=None)),
    ('mix_until', 'mixing for the first 80% of the epochs only', "fastai's Imagenette notes: mixup 'tends to only help "
     "for 80+ epochs'", dict(mix=None, mix_until=0.8)),
    ('ema', 'weight EMA', 'airbench (CIFAR-10 speed records): weight averaging cut its epochs from 13.5 to 12',
     dict(ema=0.999)),
]
ABLATED_FIELDS = sorted({f for *_, fields in INGREDIENTS for f in fields})
TABLE_COLUMNS = ABLATION_COLUMNS  # the ablation table's columns (lab.rows)
FINAL_FIELDS = ('opt', 'lr', 'wd', 'schedule', 'label_smoothing', 'augment', 'min_scale', 'mix', 'mix_until', 'ema',
                'tta', 'tta_views', 'epochs', 'bs', 'size')


def spec_recipe(recipe):
    "Row 0: `recipe`'s model and data with SPEC's training recipe, trained on train, without TTA (measured last)."
    return replace(recipe, tta=False, train_on_valid=False, **{f: getattr(SPEC, f) for f in ABLATED_FIELDS})


def candidate(base, recipe, fields):
    """(changed fields, the base recipe with them) for an ingredient's `fields` (None: `recipe`'s own value);
    ({}, None) when it changes nothing, (None, reason) when it does not apply to the base."""
    values = {f: getattr(recipe, f) if v is None else v for f, v in fields.items()}
    changed = {f: v for f, v in values.items() if getattr(base, f) != v}
    if not changed: return {}, None
    try: return changed, replace(base, **changed)
    except ValueError as e: return None, str(e)


def _valid(runs):
    "The runs' valid accuracies at their kept epochs (`runs`: records or summary dicts)."
    return [RunRecord.of(r).best['valid_accuracy'] for r in runs]


def _pooled(runs):
    "The seed sd pooled over every trained row's valid accuracies (`runs`: name -> summaries)."
    return pooled_seed_sd([_valid(rs) for rs in runs.values()])


def greedy_ablation(recipe, train, say=print):
    """Run the greedy ablation on `recipe` (the stage's resolved recipe): `train(name, recipe)` trains one row (every
    seed) and returns its runs' summaries. Returns (rows, runs, base name, base recipe): the table rows (with `on`, the
    row each was tried on, `kept` and `why`), every row's runs, and the best row at the end."""
    base_recipe = spec_recipe(recipe)
    runs = {'spec': train('spec', base_recipe)}
    base = classifier_row('spec', base_recipe, runs['spec']).update(
        step='spec: Adam 1e-3, constant, flips', on=None, kept='start',
        why="the spec's recipe (T2.5), where every row starts")
    rows = [base]
    for name, words, source, fields in INGREDIENTS:
        changed, cand = candidate(base_recipe, recipe, fields)
        if not changed:
            say(f"ablation: {name} skipped ({'nothing to change on ' + base.name if changed == {} else cand})")
            continue
        runs[name] = train(name, cand)
        row = classifier_row(name, cand, runs[name]).update(
            on=base.name, source=source, step=f"+ {words} ({', '.join(f'{k}={v}' for k, v in changed.items())})")
        verdict = gain_verdict(_valid(runs[name]), _valid(runs[base.name]), row.n_eval, _pooled(runs))
        row.update(**_gains(row, base), noise=verdict['noise'], kept='yes' if verdict['kept'] else 'no',
                   why=verdict['why'] + ('' if verdict['kept'] else f"; later rows build on {base.name}"))
        say(f"ablation: {name} on {base.name}: {row.why}")
        rows.append(row)
        if verdict['kept']: base, base_recipe = row, cand
    return rows, runs, base.name, base_recipe


def _gains(row, base):
    gain = lambda a, b: None if a is None or b is None else a - b
    return dict(valid_gain=gain(row.valid_acc, base.valid_acc))


def tta_row(rows, runs, base_name, recipe, scores):
    """The test-time augmentation row: `recipe` (the base row's, with the stage's TTA) measured on the base row's own
    runs, `scores` (one per seed: `lab.saved.tta_scores` of its kept checkpoint); kept by the same rule as the
    training rows, against the same checkpoints without TTA."""
    from .evaluate import tta_words  # here, not above: it imports fastai (seconds), and only the TTA row needs it
    base = next(r for r in rows if r.name == base_name)
    chosen = runs[base_name]
    scores = [Evaluation.of(s) for s in scores]
    valid = [s.valid_acc_tta for s in scores]
    verdict = gain_verdict(valid, [s.valid_acc for s in scores], base.n_eval, _pooled(runs))
    row = Row.from_dict(dict(  # the columns in this order (summary.json's 'rows' as before)
        name='tta', step=f"+ test-time augmentation: {tta_words(recipe)}", on=base_name, config=base.config,
        params_M=base.params_M, valid_acc=mean_std(valid)[0], valid_acc_std=mean_std(valid)[1],
        valid_acc_ci=seed_interval(valid), n_eval=base.n_eval, n_seeds=len(chosen),
        noise=verdict['noise'], kept='yes' if verdict['kept'] else 'no',
        why=verdict['why'] + ' (evaluation only: no training)', train_acc=base.train_acc, best_epoch=base.best_epoch,
        source="airbench's flip + translate TTA; fastbook ch. 7 (learn.tta)",
        **{k: base[k] for k in (*COST_COLUMNS, 'cost_device') if k in base}))
    row.update(**_gains(row, base))
    return row


def final_row(final, runs, base_name=None):
    """The final model's row: trained on train, its best epoch by valid accuracy kept, so its valid and train accuracy
    are its own; its test accuracy is the headline's (with TTA when its recipe has it)."""
    row = classifier_row('final', final, runs)
    test = _test_values(runs, final.tta)
    row.update(step=f"final: {base_name or 'the recipe'}" + (' + TTA' if final.tta else '') +
               ', trained on train, best epoch by valid accuracy', on=base_name, kept='final', **_test(test, row),
               test_values=test, why='the headline: ' + ('the best row (and TTA when kept)' if base_name else
                                                          'the recipe as given (--no-ablation)') + ', trained on train')
    if final.train_on_valid: row.update(**{k: None for k in HELD_OUT})  # --train-on-valid asked for: nothing held out
    return row


def _test_values(runs, tta):
    "The runs' test accuracies: the headline's, with TTA when the recipe has it."
    return [r.test_acc_tta if tta else r.test_acc for r in map(RunRecord.of, runs)]


def _test(values, row):
    "A row's test columns from its per-seed test accuracies (the headline's: with TTA when the recipe has it)."
    n = row.n_test or 0
    return dict(test_acc=mean_std(values)[0], test_acc_std=mean_std(values)[1], test_acc_ci=seed_interval(values),
                test_lo=float(np.mean([wilson(v, n)[0] for v in values])),
                test_hi=float(np.mean([wilson(v, n)[1] for v in values])))


def refit_row(refit, runs):
    "The --refit row: the final recipe on train + valid, last epoch kept; no valid accuracy (it trained on valid)."
    row = classifier_row('refit', refit, runs)
    test = _test_values(runs, refit.tta)
    row.update(**{k: None for k in HELD_OUT})
    row.update(step='refit: the final recipe on train + valid, last epoch (extra; not the headline)', on='final',
               kept='extra', **_test(test, row),
               why='no held-out valid images: no checkpoint chosen, no valid accuracy; shown beside the final model only')
    return row


def final_notes(rows, final, ablation=True):
    """(headline, notes) of the stage's tables: the final test accuracy with its intervals, its valid accuracy, and
    how the rows were chosen. Takes the final row's per-seed test accuracies out of it (they are not a table column)."""
    row = next(r for r in rows if r.name == 'final')
    n_test, test = row.n_test, row.drop('test_values')
    headline = f"final test accuracy {accuracy_text(row.test_acc, n_test, test)}" + (' with TTA' if final.tta else '')
    valid = (f"Its valid accuracy is its own (trained on train; best epoch by valid accuracy kept): "
             f"{row.valid_acc:.1%} on {row.n_eval} valid images." if row.valid_acc is not None else
             "It was trained on train + valid (--train-on-valid), so it has no valid accuracy.")
    how = (f"Each row adds one ingredient to the best row so far (its `on` column). {GAIN_RULE} The `why` column "
           f"gives each row's numbers (points of accuracy). Test-time augmentation is measured last, on the best row's "
           f"own checkpoints. The final model is the best row, with TTA when it was kept, trained again into its own "
           f"run folder with every figure and its export." if ablation else
           "--no-ablation: the final model is the recipe as given; no row was compared.")
    notes = (f"{headline}.\n\n{valid}\n\n{how} Valid accuracy chooses; the test set ({n_test} images, the official val "
             f"split) is only reported. Intervals are 95%: *_ci over seeds; each test accuracy also carries its Wilson "
             f"interval (per_class.md of each run)."
             + ("\n\nThe refit row (--refit) trains the final recipe on train + valid and keeps its last epoch: it has "
                "no valid accuracy and is never the headline." if any(r.name == 'refit' for r in rows) else '')
             + f"\n\n{cost_note(rows)} The recipe's ingredients change what training costs, not the model: the MACs "
               f"stay those of the configuration; the TTA row's inference costs its views times a plain pass.")
    return headline, notes


def write_final_md(folder, row, final, headline, reasons, final_run):
    """final.md in `folder`: the headline, the configuration and recipe, why this configuration (each stage's
    conclusion), the ablation table and the first seed's per-class test report (`final_run`: its run folder)."""
    recipe = ', '.join(f'{k}={getattr(final, k)}' for k in FINAL_FIELDS)
    (Path(folder) / 'final.md').write_text('\n'.join([
        f"# Final model: {headline}", '',
        f"Configuration: {row.config} ({row.params_M}M parameters); recipe: {recipe}; "
        + ("trained on train + valid, its last epoch kept" if final.train_on_valid else
           f"trained on train, its best epoch by valid accuracy kept (valid accuracy {row.valid_acc:.1%})")
        + f"; test = the official val split ({row.n_test} images of {final.data}).", '',
        "Why this configuration (each stage's conclusion):", *reasons, '',
        (Path(folder) / 'ablation.md').read_text().replace('# ', '## ', 1), '',
        (Path(final_run) / 'per_class.md').read_text().replace('# ', '## ', 1)]))


def plot_ablation(rows, path, title='Recipe ablation: valid accuracy per row'):
    """One figure: each row's mean valid accuracy with its 95% interval (the larger of the seed interval and the
    Wilson interval of the valid set); kept rows green, rows not kept grey, the start and the final model blue. Rows
    without a valid accuracy (refit) are left out."""
    shown = [r for r in map(Row.of, rows) if r.valid_acc is not None]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(shown) + 1.4))
    colours = {'yes': 'tab:green', 'no': 'tab:gray', 'start': 'tab:blue', 'final': 'tab:blue'}
    for i, r in enumerate(shown):
        lo, hi = wilson(r.valid_acc, r.n_eval or 0)
        half = max(r.valid_acc_ci or 0.0, (hi - lo) / 2 if r.n_eval else 0.0)
        ax.errorbar(r.valid_acc, i, xerr=half, fmt='o', color=colours.get(r.kept, 'black'), capsize=3)
    ax.set_yticks(range(len(shown)), [f"{r.name}" + (f" on {r.on}: {r.kept}" if r.on and r.kept in
                                                     ('yes', 'no') else '') for r in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel('valid accuracy (mean over seeds; bar: 95% interval, the larger of seeds and Wilson)')
    ax.set_title(title, fontsize=10)
    ax.grid(axis='x', alpha=0.3)
    save_figure(fig, path, dpi=110)
    return Path(path)


def stage_cost(n_rows, n_seeds, epochs, n_train, n_valid, refit=False):
    """(text, images): what stage 4 trains, runs x epochs x images, before it starts. `n_rows`: the training rows
    of the ablation at most (0 without it)."""
    runs = (n_rows + 1) * n_seeds  # the rows and the final model
    images = runs * epochs * n_train + (n_seeds * epochs * (n_train + n_valid) if refit else 0)
    what = f"at most {n_rows} ablation row(s) + the final model" if n_rows else 'the final model'
    refit_text = f", + refit {n_seeds} run(s) x {epochs} epochs x {n_train + n_valid:,} images" if refit else ''
    text = (f"stage 4 trains {what} = {runs} run(s) x {epochs} epochs x {n_train:,} train images{refit_text} = "
            f"{images:,} training images")
    return text, images
