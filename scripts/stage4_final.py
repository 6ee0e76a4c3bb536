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
from types import SimpleNamespace

from fastai_lab.ablation import (INGREDIENTS, TABLE_COLUMNS, final_notes, final_row, greedy_ablation, plot_ablation,
                                 refit_row, stage_cost, tta_row, write_final_md)
from fastai_lab.cli import script
from fastai_lab.rows import experiments_table
from fastai_lab.lookup import latest_stage_summary
from fastai_lab.saved import tta_scores
from fastai_lab.recipe import FINAL
from fastai_lab.record import DATA_COUNTS
from fastai_lab.stage import run_stage, stage_choice
from fastai_lab.tables import write_table
from fastai_lab.train import RunOptions

RECIPE = FINAL  # the final recipe (lab/recipe.py); stage 4's ablation measures each of its ingredients


def run(recipe, opts):
    "The final model on stage 3.3's configuration: its recipe ablation, training, test report and the summary table."
    config, reason = stage_choice(opts, 'stage3_3_activations', recipe)
    return run_stage(opts, 'stage4_final', config, lambda ctx: experiment(ctx, reason))


def experiment(ctx, reason):
    "4.1 choose and train the final model, 4.2 test its best checkpoint, 4.3 its samples, 4.4 the table of all."
    reasons = why_this_configuration(ctx, reason)
    say_cost(ctx)
    ablation = recipe_ablation(ctx) if ctx.opts.extra['ablation'] else None
    final, rows = final_model(ctx, ablation)   # its run writes the test report: 4.2 and 4.3
    if ctx.opts.extra['refit']: rows.append(refit(ctx, final))
    return tables(ctx, rows, final, ablation, reasons, reason)


def why_this_configuration(ctx, reason):
    "4.1: each earlier stage's conclusion, as the final report gives it (said now, kept in final.md)."
    stages = [(s, latest_stage_summary(ctx.opts.out, s, like=ctx.recipe, say=False))
              for s in ('stage3_1_channels', 'stage3_2_blocks')]
    reasons = ([f"- {s}: {x['conclusion'] if x else 'not run on this data; its default stands'}" for s, x in stages]
               + [f"- stage3_3_activations: {reason}"])
    print('\n'.join(['why this configuration:'] + reasons))
    return reasons


def say_cost(ctx):
    "What the stage trains (runs x epochs x images), before it trains."
    rows = len(INGREDIENTS) + 1 if ctx.opts.extra['ablation'] else 0
    r, (n_train, n_valid, _) = ctx.recipe, (ctx.data_info.get(k) for k in DATA_COUNTS)
    cost, _ = stage_cost(rows, len(ctx.seeds), r.epochs, n_train, n_valid, ctx.opts.extra['refit'])
    print(cost + (f" ({r.profile} profile)" if r.profile == 'full' else
                  " (quick profile: it shows that the rows run; its numbers mean nothing)"), flush=True)


def recipe_ablation(ctx):
    """4.1's recipe: the greedy ablation (lab/ablation.py), then TTA measured on the best row's own checkpoints.
    Returns its rows, the best row's name and the recipe the final model trains."""
    recipes = {}
    def train_row(name, recipe):
        recipes[name] = recipe
        # valid only: the test set is scored once, for the final model (and the refit)
        return ctx.train({name: recipe}, RunOptions(test=False, figures=False, export=False))[name]
    rows, runs, base, base_recipe = greedy_ablation(ctx.recipe, train_row)
    final = base_recipe
    if ctx.recipe.tta:  # no training: the best row's kept checkpoints, with and without TTA
        with_tta = replace(base_recipe, tta=True, tta_views=ctx.recipe.tta_views)
        scores = [tta_scores(ctx.run_dir(base, s), replace(with_tta, seed=s), ('valid',)) for s in ctx.seeds]
        rows.append(tta_row(rows, runs, base, with_tta, scores))
        if rows[-1].kept == 'yes': final = with_tta
    return SimpleNamespace(rows=rows, base=base, final=final, recipes=recipes)


def final_model(ctx, ablation):
    "4.1: the final recipe trained on train, its best epoch by valid accuracy kept; 4.2-4.3: its test report."
    final = ablation.final if ablation else ctx.recipe
    runs = ctx.train({'final': final}, RunOptions(test=True))['final']
    rows = (ablation.rows if ablation else []) + [final_row(final, runs, ablation and ablation.base)]
    return final, rows


def refit(ctx, final):
    "--refit: the final recipe on train + valid (last epoch kept), an extra row beside the final model."
    recipe = replace(final, train_on_valid=True)
    return refit_row(recipe, ctx.train({'refit': recipe}, RunOptions(test=True))['refit'])


def tables(ctx, rows, final, ablation, reasons, reason):
    "ablation.md, the stage table, final.md and 4.4's table of all experiments; the stage summary."
    headline, notes = final_notes(rows, final, ablation is not None)
    notes += ctx.caveat_notes()
    r = ctx.recipe
    write_table([{c: getattr(row, c) for c in TABLE_COLUMNS} for row in rows], ctx.folder, 'ablation', notes=notes,
                title=f"Recipe ablation, greedy ({r.profile} profile, {len(ctx.seeds)} seed(s), {r.epochs} epochs)")
    plot_ablation(rows, ctx.folder / 'ablation_valid.png')
    write_table(rows, ctx.folder, title='Stage 4: final model', notes=notes)
    final_at = next(row for row in rows if row.name == 'final')
    write_final_md(ctx.folder, final_at, final, headline, reasons, ctx.run_dir('final', ctx.seeds[0]))
    variants = dict(ablation.recipes if ablation else {}, final=final)
    if ctx.opts.extra['refit']: variants['refit'] = replace(final, train_on_valid=True)
    summary = ctx.summary('Stage 4: final model', variants, 'final', rows, headline, chosen_from=reason,
                          final_recipe=final.to_dict(), ablation_base=ablation and ablation.base)
    experiments_table(ctx.opts.out, ctx.folder, current=summary)
    print(f"final {final_at.config}: {final_at.params_M}M parameters, {headline}"
          + (f"; valid accuracy {final_at.valid_acc:.1%} (its own, best epoch)" if final_at.valid_acc else ''))
    return summary


def flags(p):
    p.add_argument('--ablation', action=argparse.BooleanOptionalAction, default=True,
                   help='train the recipe ablation before the final model (--no-ablation: the final model only)')
    p.add_argument('--refit', action=argparse.BooleanOptionalAction, default=False,
                   help='also train the final recipe on train + valid (last epoch kept): an extra row beside the '
                        'final model, clearly labelled, never the headline')


main = script(run, flags, recipe=RECIPE, reads='stage3_3_activations')
if __name__ == '__main__': main()
