"""Stage 4's recipe ablation: from the spec's recipe to the final one, one ingredient at a time, each one measured.

Row 0 trains the chosen configuration with `SPEC`'s training recipe (Adam 1e-3, constant, flips); each later row
takes one more ingredient from the final recipe (`INGREDIENTS`, in order). Test-time augmentation is measured on the
best row. The final model is the row with the best mean valid accuracy, TTA kept only if it raised valid accuracy,
retrained on train + valid. Every choice is made on valid accuracy; test accuracy is only reported.
"""
from dataclasses import replace
from pathlib import Path

from .recipe import SPEC
from .stats import accuracy_text, mean_std, seed_interval
from .comparisons import classifier_row

__all__ = ['INGREDIENTS', 'ablation_variants', 'ablation_rows', 'choose_final', 'final_row', 'final_notes',
           'write_final_md', 'TABLE_COLUMNS']

# (variant name, what it adds, the recipe fields it takes from the final recipe)
INGREDIENTS = [('one_cycle', 'one-cycle AdamW', ('opt', 'lr', 'wd', 'schedule')),
               ('smoothing', 'label smoothing', ('label_smoothing',)),
               ('padcrop', 'stronger augmentation', ('augment',)),
               ('mix', 'sample mixing', ('mix',))]
# a row's numbers that rest on the valid images being held out
HELD_OUT = ('valid_acc', 'valid_acc_std', 'valid_acc_ci', 'final_valid_acc', 'final_gap', 'valid_loss_rise')
TABLE_COLUMNS = ['step', 'valid_acc', 'valid_acc_ci', 'valid_gain', 'test_acc', 'test_acc_std', 'test_acc_ci',
                 'test_gain', 'n_seeds']


def ablation_variants(recipe):
    "name -> (label, Recipe): SPEC's training recipe on `recipe`'s model, then `recipe`'s ingredients one at a time."
    fields = [f for *_, fs in INGREDIENTS for f in fs]
    row = replace(recipe, tta=True, train_on_valid=False, **{f: getattr(SPEC, f) for f in fields})
    rows = {'spec': ('spec: Adam 1e-3, constant, flips', row)}
    for name, label, fs in INGREDIENTS:
        changed = {f: getattr(recipe, f) for f in fs if getattr(recipe, f) != getattr(row, f)}
        if not changed: continue  # the final recipe does not use this ingredient
        row = replace(row, **changed)
        rows[name] = (f"+ {label} ({', '.join(f'{k}={v}' for k, v in changed.items())})", row)
    return rows


def ablation_rows(variants, runs):
    """Table rows: valid and test accuracy (means, 95% intervals) of every variant and its gain over the row before.
    `runs`: variant -> its runs' summaries, one per seed."""
    rows, before = [], None
    for name, (label, recipe) in variants.items():
        row = dict(classifier_row(name, recipe, runs[name]), step=label)
        row.update(valid_gain=None if before is None else row['valid_acc'] - before['valid_acc'],
                   test_gain=None if before is None else row['test_acc'] - before['test_acc'])
        rows.append(row); before = row
    return rows


def choose_final(rows, variants, runs):
    """The best row on valid, the TTA row measured on it, and the final recipe: (final Recipe, best row, tta row).
    TTA is kept when it raised the best row's mean valid accuracy."""
    best = max(rows, key=lambda r: r['valid_acc'])
    chosen = runs[best['name']]
    valid, test = [r['valid_acc_tta'] for r in chosen], [r['test_acc_tta'] for r in chosen]
    tta = dict(name='tta', step=f"+ test-time augmentation (on {best['name']})", config=best['config'],
               valid_acc=mean_std(valid)[0], valid_acc_ci=seed_interval(valid), test_acc=mean_std(test)[0],
               test_acc_std=mean_std(test)[1], test_acc_ci=seed_interval(test), n_seeds=len(chosen),
               valid_gain=mean_std(valid)[0] - best['valid_acc'], test_gain=mean_std(test)[0] - best['test_acc'])
    final = replace(variants[best['name']][1], train_on_valid=True, tta=tta['valid_acc'] > best['valid_acc'])
    return final, best, tta


def final_row(final, runs, best=None, before=None):
    """The final model's row: its test accuracy (with TTA when its recipe has it); valid and train accuracy are those
    of the same recipe trained on train only (`best`), since the final model has seen the valid images; without an
    ablation (`best` None) it has no valid accuracy."""
    row = classifier_row('final', final, runs)
    test = [r['test_acc_tta' if final.tta else 'test_acc'] for r in runs]
    row.update(step=f"final: {best['name'] if best else 'the recipe'} on train + valid" + (' + TTA' if final.tta else ''),
               test_acc=mean_std(test)[0], test_acc_std=mean_std(test)[1], test_acc_ci=seed_interval(test),
               test_values=test, test_gain=None if before is None else mean_std(test)[0] - before['test_acc'])
    # Its own valid numbers are on images it trained on: they come from `best`, or are None without it.
    row.update({k: best.get(k) if best else None for k in HELD_OUT})
    if best: row.update(train_acc=best.get('train_acc'), best_epoch=best.get('best_epoch'))
    return row


def final_notes(rows, final, best):
    """(headline, notes) of the stage's tables: the final test accuracy with its intervals, and how the rows were
    chosen. Takes the final row's per-seed test accuracies out of it (they are not a table column)."""
    n_test, test = rows[-1]['n_test'], rows[-1].pop('test_values')
    headline = f"final test accuracy {accuracy_text(rows[-1]['test_acc'], n_test, test)}"
    notes = (f"{headline}.\n\nEach row adds one ingredient to the row before. Valid accuracy chooses: "
             + (f"{best['name']} is the best row on valid, and TTA {'raised' if final.tta else 'did not raise'} its "
                f"valid accuracy. " if best else '')
             + f"The test set ({n_test} images, the official val split) is only reported. The final row is "
             f"trained on train + valid ("
             + ("its valid and train accuracy are those of its recipe trained on train only" if best else
                "it has no valid accuracy: --no-ablation trained no run that held the valid images out")
             + "). Intervals are 95%: *_ci over seeds; each test accuracy also carries its Wilson interval "
             "(per_class.md of each run).")
    return headline, notes


FINAL_FIELDS = ('opt', 'lr', 'wd', 'schedule', 'label_smoothing', 'augment', 'mix', 'tta', 'epochs', 'bs', 'size')


def write_final_md(folder, row, final, headline, reasons, final_run):
    """final.md in `folder`: the headline, the configuration and recipe, why this configuration (each stage's
    conclusion), the ablation table and the first seed's per-class test report (`final_run`: its run folder)."""
    recipe = ', '.join(f'{k}={getattr(final, k)}' for k in FINAL_FIELDS)
    (Path(folder) / 'final.md').write_text('\n'.join([
        f"# Final model: {headline}", '',
        f"Configuration: {row['config']} ({row['params_M']}M parameters); recipe: {recipe}; trained on train + valid; "
        f"test = the official val split ({row['n_test']} images of {final.data}).", '',
        "Why this configuration (each stage's conclusion):", *reasons, '',
        (Path(folder) / 'ablation.md').read_text().replace('# ', '## ', 1), '',
        (Path(final_run) / 'per_class.md').read_text().replace('# ', '## ', 1)]))
