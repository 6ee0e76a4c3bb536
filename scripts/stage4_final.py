#!/usr/bin/env python
"""Stage 4 (T2.10-T2.13): the final model, the recipe ablation that explains it, its test report and the table of
all experiments.

The configuration (channels, blocks, activation) is the best of stage 3.3, which carries 3.1's and 3.2's choices.
The recipe ablation (lab/ablation.py) trains it from the spec's recipe (`SPEC`) adding the final recipe's ingredients
(`FINAL`, listed at the end of --help) one at a time, then test-time augmentation. The final model is the row with
the best mean valid accuracy (TTA only if it raised valid accuracy), retrained on train + valid with its last epoch
kept. Choices are made on valid accuracy; the test set (the official val split) is only reported, with 95%
intervals. The final model's test report: accuracy, per-class precision/recall/F1, confusion matrix (PNG and CSV),
`learn.show_results` and 10 random test images. `--no-ablation` trains the final model alone (the recipe as it is).
"""
import argparse
from dataclasses import replace

from lab.ablation import TABLE_COLUMNS, ablation_rows, ablation_variants, choose_final, final_notes, final_row, write_final_md
from lab.cli import script
from lab.recipe import FINAL
from lab.tables import write_table
from lab.lookup import latest_stage_summary, stage_choice
from lab.comparisons import experiments_table
from lab.stage import run_stage
from lab.train import RunOptions

RECIPE = FINAL  # the final recipe (lab/recipe.py); stage 4's ablation measures each of its ingredients


def why(opts, recipe, reason):
    "Each earlier stage's conclusion, as the final report gives it."
    stages = [(s, latest_stage_summary(opts.out, s, like=recipe, say=False)) for s in ('stage3_1_channels', 'stage3_2_blocks')]
    return ([f"- {s}: {x['conclusion'] if x else 'not run on this data; its default stands'}" for s, x in stages]
            + [f"- stage3_3_activations: {reason}"])


def run(recipe, opts):
    "Train the ablation and the final model, test them, write the tables and final.md."
    cfg, reason = stage_choice(opts, 'stage3_3_activations', recipe)
    def experiment(ctx):
        reasons = why(opts, ctx.recipe, reason)
        print('\n'.join(['why this configuration:'] + reasons))
        variants = ablation_variants(ctx.recipe) if opts.extra['ablation'] else {}
        runs = ctx.train({k: r for k, (_, r) in variants.items()}, RunOptions(test=True, figures=False),
                         later={'final': replace(ctx.recipe, train_on_valid=True)})  # for the time estimate
        rows = ablation_rows(variants, runs)
        final, best, tta = (choose_final(rows, variants, runs) if rows else
                            (replace(ctx.recipe, train_on_valid=True), None, None))
        rows += [tta] if tta else []
        final_runs = ctx.train({'final': final}, RunOptions(test=True))['final']
        rows.append(final_row(final, final_runs, best, rows[-1] if rows else None))
        headline, notes = final_notes(rows, final, best)
        write_table([{c: r.get(c) for c in TABLE_COLUMNS} for r in rows], ctx.folder, 'ablation', notes=notes,
                    title=f"Recipe ablation ({ctx.recipe.profile} profile, {len(ctx.seeds)} seed(s), "
                          f"{ctx.recipe.epochs} epochs)")
        write_table(rows, ctx.folder, title='Stage 4: final model', notes=notes)
        write_final_md(ctx.folder, rows[-1], final, headline, reasons, ctx.run_dir('final', ctx.seeds[0]))
        summary = ctx.summary('Stage 4: final model', dict({k: r for k, (_, r) in variants.items()}, final=final),
                              'final', rows, headline, chosen_from=reason, final_recipe=final.to_dict())
        experiments_table(opts.out, ctx.folder, current=summary)
        print(f"final {rows[-1]['config']}: {rows[-1]['params_M']}M parameters, {headline}")
        return summary
    return run_stage(opts, 'stage4_final', cfg, experiment)


def flags(p):
    p.add_argument('--ablation', action=argparse.BooleanOptionalAction, default=True,
                   help='train the recipe ablation before the final model (--no-ablation: the final model only)')


main = script(run, flags, recipe=RECIPE, reads='stage3_3_activations')
if __name__ == '__main__': main()
