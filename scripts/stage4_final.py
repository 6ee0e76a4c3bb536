#!/usr/bin/env python
"""Stage 4 (T2.10-T2.13): the final model, the recipe ablation that explains it, its test report and the table of
all experiments.

The configuration (channels, blocks, activation) is the best of stage 3.3, which carries 3.1's and 3.2's choices.
The recipe ablation (lab/ablation.py) trains it from the spec's recipe (Adam 1e-3, constant, flips) adding the final
recipe's ingredients one at a time: one-cycle AdamW (3e-3, wd 0.05), label smoothing 0.1, reflect-pad-8 random
crops, CutMix; then test-time augmentation. The final model is the row with the best mean valid accuracy (TTA only
if it raised valid accuracy), retrained on train + valid with its last epoch kept. Choices are made on valid
accuracy; the test set (the official val split) is only reported, with 95% intervals. The final model's test report:
accuracy, per-class precision/recall/F1, confusion matrix (PNG and CSV), `learn.show_results` and 10 random test
images. `--no-ablation` trains the final model alone (RECIPE as it is, on train + valid).
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import argparse
from dataclasses import replace

from lab.ablation import TABLE_COLUMNS, ablation_rows, ablation_variants, choose_final, final_row
from lab.cli import training_script
from lab.jobs import seeded, train_runs
from lab.recipe import FINAL
from lab.report import accuracy_text, write_table
from lab.runs import latest_stage_summary, stage_choice
from lab.stages import experiments_table, lr_find_stage, open_stage, stage_summary
from lab.train import RunOptions

RECIPE = FINAL  # AdamW one-cycle 3e-3, wd 0.05, label smoothing 0.1, padcrop, CutMix, TTA, 35 epochs (lab/recipe.py)


def why(opts, recipe, reason):
    "Each earlier stage's conclusion, as the final report gives it."
    stages = [(s, latest_stage_summary(opts.out, s, like=recipe, say=False)) for s in ('stage3_1_channels', 'stage3_2_blocks')]
    return ([f"- {s}: {x['conclusion'] if x else 'not run on this data; its default stands'}" for s, x in stages]
            + [f"- stage3_3_activations: {reason}"])


def run(recipe, opts):
    "Train the ablation and the final model, test them, write the tables and final.md."
    cfg, reason = stage_choice(opts, 'stage3_3_activations', recipe)
    st, cfg = open_stage(opts, 'stage4_final', cfg)
    reasons = why(opts, cfg, reason)
    print('\n'.join(['why this configuration:'] + reasons))
    with st:
        if st.done: return st.done
        if opts.lr_find: return lr_find_stage(st, cfg)
        variants = ablation_variants(cfg) if opts.extra['ablation'] else {}
        runs = train_runs(st, seeded({k: r for k, (_, r) in variants.items()}, opts.seeds),
                          RunOptions(test=True, figures=False), jobs=opts.jobs)
        rows = ablation_rows(variants, runs, opts.seeds)
        final, best, tta = choose_final(rows, variants, runs, opts.seeds) if rows else (replace(cfg, train_on_valid=True), None, None)
        rows += [tta] if tta else []
        final_runs = train_runs(st, seeded({'final': final}, opts.seeds), RunOptions(test=True), jobs=opts.jobs)
        rows.append(final_row(final, list(final_runs.values()), best, rows[-1] if rows else None))
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
        write_table([{c: r.get(c) for c in TABLE_COLUMNS} for r in rows], st.folder, 'ablation', notes=notes,
                    title=f"Recipe ablation ({cfg.profile} profile, {len(opts.seeds)} seed(s), {cfg.epochs} epochs)")
        write_table(rows, st.folder, title='Stage 4: final model', notes=notes)
        recipes = dict({k: r for k, (_, r) in variants.items()}, final=final)
        (st.folder / 'final.md').write_text('\n'.join([
            f"# Final model: {headline}", '', f"Configuration: {rows[-1]['config']} ({rows[-1]['params_M']}M parameters); "
            f"recipe: {', '.join(f'{k}={getattr(final, k)}' for k in ('opt', 'lr', 'wd', 'schedule', 'label_smoothing', 'augment', 'mix', 'tta', 'epochs', 'bs', 'size'))}; "
            f"trained on train + valid; test = the official val split ({n_test} images of {cfg.data}).", '',
            "Why this configuration (each stage's conclusion):", *reasons, '',
            (st.folder / 'ablation.md').read_text().replace('# ', '## ', 1), '',
            (st.run_dir(f'final-seed{opts.seeds[0]}') / 'per_class.md').read_text().replace('# ', '## ', 1)]))
        summary = stage_summary('stage4_final', 'Stage 4: final model', cfg, recipes, 'final', rows, headline, opts,
                                chosen_from=reason, final_recipe=final.to_dict())
        experiments_table(opts.out, st.folder, current=summary)
        summary = st.finish(summary)
    print(f"final {rows[-1]['config']}: {rows[-1]['params_M']}M parameters, {headline}")
    return summary


def flags(group):
    group.add_argument('--ablation', action=argparse.BooleanOptionalAction, default=True,
                       help='train the recipe ablation before the final model (--no-ablation: the final model only)')


main = training_script(run, RECIPE, extra=flags)
if __name__ == '__main__': main()
