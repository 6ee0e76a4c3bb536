#!/usr/bin/env python
"""Stage 4 (T2.10-T2.13): the final model, the greedy recipe ablation that chose it, its test report and the table
of all experiments. Every row carries the model's cost (`lab.cost`; the ingredients change the training, not the
MACs); the T2.13 table carries each variant's and plots valid accuracy against MACs (accuracy_vs_macs.png).

The configuration (channels, blocks, activation) is the best of stage 3.3, which carries 3.1's and 3.2's choices.
The recipe ablation (lab/ablation.py) trains it with the spec's recipe (`SPEC`), then tries each ingredient on the best
row so far: the final recipe's own (`FINAL`, listed at the end of --help), then fit_flat_cos, ranger, SGD with
Nesterov momentum, random resized crop, mixing for the first 80% of the epochs, a weight EMA; an ingredient is kept
only when it raises mean valid accuracy by more than the noise (the rule is in ablation.md), and multi-view test-time
augmentation is measured last on the best row. It prints its cost (runs x epochs x images) before it trains. The final
model is the best row (TTA when kept) trained on train, its best epoch by valid accuracy kept (T2.11); `--refit` adds
the same recipe trained on train + valid as an extra row, never the headline. Choices are made on valid accuracy; the
test set (the official val split) is only reported, with 95% intervals. The final model's test report: accuracy,
per-class precision/recall/F1, confusion matrix (PNG and CSV) and 10 random test images, all from the headline's
predictions (TTA's when TTA is on), and `learn.show_results`. `--no-ablation` trains the final model alone (the recipe
as it is). The quick profile (a CPU) runs every row at its few images and epochs: its numbers mean nothing.
"""
import argparse
from dataclasses import replace

from fastai_lab.ablation import (INGREDIENTS, TABLE_COLUMNS, final_notes, final_row, greedy_ablation, planned_runs,
                          plot_ablation, refit_row, stage_cost, tta_row, write_final_md)
from fastai_lab.cli import script
from fastai_lab.comparisons import experiments_table
from fastai_lab.evaluate import tta_scores
from fastai_lab.lookup import latest_stage_summary, stage_choice
from fastai_lab.recipe import FINAL
from fastai_lab.stage import run_stage
from fastai_lab.tables import write_table
from fastai_lab.train import RunOptions

RECIPE = FINAL  # the final recipe (lab/recipe.py); stage 4's ablation measures each of its ingredients


def why(opts, recipe, reason):
    "Each earlier stage's conclusion, as the final report gives it."
    stages = [(s, latest_stage_summary(opts.out, s, like=recipe, say=False)) for s in ('stage3_1_channels', 'stage3_2_blocks')]
    return ([f"- {s}: {x['conclusion'] if x else 'not run on this data; its default stands'}" for s, x in stages]
            + [f"- stage3_3_activations: {reason}"])


def run(recipe, opts):
    "Train the ablation and the final model (and the refit), test them, write the tables, the figure and final.md."
    cfg, reason = stage_choice(opts, 'stage3_3_activations', recipe)
    ablation, refit = opts.extra['ablation'], opts.extra['refit']
    def experiment(ctx):
        reasons = why(opts, ctx.recipe, reason)
        print('\n'.join(['why this configuration:'] + reasons))
        info = ctx.data_info
        cost, _ = stage_cost(len(INGREDIENTS) + 1 if ablation else 0, len(ctx.seeds), ctx.recipe.epochs,
                             info['n_train'], info['n_valid'], refit)
        print(cost + (f" ({ctx.recipe.profile} profile)" if ctx.recipe.profile == 'full' else
                      " (quick profile: it shows that the rows run; its numbers mean nothing)"), flush=True)
        ablation_runs = RunOptions(test=True, figures=False, export=False)  # curves and test tables; no PNG test report
        variants, rows = {}, []
        if ablation:
            planned = planned_runs(ctx.recipe, ablation, refit)  # at most: the time estimate counts them
            def train_row(name, r):
                variants[name] = r
                later = {f'planned {i}': p for i, p in enumerate(planned[len(variants):])}
                return ctx.train({name: r}, ablation_runs, later=later)[name]
            rows, runs, base, base_recipe = greedy_ablation(ctx.recipe, train_row)
            with_tta = replace(base_recipe, tta=True, tta_views=ctx.recipe.tta_views)
            if ctx.recipe.tta:  # measured on the best row's kept checkpoints: no training
                scores = [tta_scores(ctx.run_dir(base, s), replace(with_tta, seed=s)) for s in ctx.seeds]
                rows.append(tta_row(rows, runs, base, with_tta, scores))
            final = with_tta if ctx.recipe.tta and rows[-1]['kept'] == 'yes' else base_recipe
        else: base, final = None, ctx.recipe
        variants['final'] = final
        rows.append(final_row(final, ctx.train({'final': final}, RunOptions(test=True))['final'], base))
        if refit:
            variants['refit'] = replace(final, train_on_valid=True)
            rows.append(refit_row(variants['refit'], ctx.train({'refit': variants['refit']}, RunOptions(test=True))['refit']))
        headline, notes = final_notes(rows, final, ablation)
        write_table([{c: r.get(c) for c in TABLE_COLUMNS} for r in rows], ctx.folder, 'ablation', notes=notes,
                    title=f"Recipe ablation, greedy ({ctx.recipe.profile} profile, {len(ctx.seeds)} seed(s), "
                          f"{ctx.recipe.epochs} epochs)")
        plot_ablation(rows, ctx.folder / 'ablation_valid.png')
        write_table(rows, ctx.folder, title='Stage 4: final model', notes=notes)
        final_at = next(r for r in rows if r['name'] == 'final')
        write_final_md(ctx.folder, final_at, final, headline, reasons, ctx.run_dir('final', ctx.seeds[0]))
        summary = ctx.summary('Stage 4: final model', variants, 'final', rows, headline, chosen_from=reason,
                              final_recipe=final.to_dict(), ablation_base=base)
        experiments_table(opts.out, ctx.folder, current=summary)
        print(f"final {final_at['config']}: {final_at['params_M']}M parameters, {headline}"
              + (f"; valid accuracy {final_at['valid_acc']:.1%} (its own, best epoch)" if final_at['valid_acc'] else ''))
        return summary
    return run_stage(opts, 'stage4_final', cfg, experiment)


def flags(p):
    p.add_argument('--ablation', action=argparse.BooleanOptionalAction, default=True,
                   help='train the recipe ablation before the final model (--no-ablation: the final model only)')
    p.add_argument('--refit', action=argparse.BooleanOptionalAction, default=False,
                   help='also train the final recipe on train + valid (last epoch kept): an extra row beside the '
                        'final model, clearly labelled, never the headline')


main = script(run, flags, recipe=RECIPE, reads='stage3_3_activations')
if __name__ == '__main__': main()
