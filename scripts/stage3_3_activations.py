#!/usr/bin/env python
"""Stage 3.3 (T2.9): activations ReLU, LeakyReLU, ELU, GELU on the best configuration of stage 3.2.

Reads the newest finished stage 3.2 run on the same data (which carries the channels of 3.1; or --from); without one
it uses the baseline configuration and says so. `inplace=True` where the layer has it (GELU has none). Every run
records per-layer activation statistics (mean, std, share <= 0) and weight-gradient norms every few batches on the
device (`lab.callbacks`); statistics_per_layer.png and gradients_over_training.png put the four activations side by
side, and the table adds their summary (dead share, last-layer activation std, first/last gradient-norm ratio), so
the verdict comes with the reason behind it.
The choice weighs cost (`lab.stats.TIE_RULE`): variants within noise of the best valid accuracy are decided by
MACs per image, then parameters ('B ties A within noise at 3.1x the MACs: A kept'); a real lead keeps the better one
and states its cost ('+2.4 pts for 3.1x MACs'). The table carries every variant's cost (`lab.cost`).
"""

from fastai_lab.cli import script
from fastai_lab.recipe import SPEC
from fastai_lab.stage import stage_choice
from fastai_lab.comparisons import ACTIVATIONS, activation_variants, run_resnet_stage
from fastai_lab.rows import Row

RECIPE = SPEC  # the spec's recipe; the model comes from stage 3.2


def run(recipe, opts):
    "Train the four activations on the configuration chosen by stage 3.2, with statistics."
    base, reason = stage_choice(opts, 'stage3_2_blocks', recipe)
    summary = run_resnet_stage(opts, 'stage3_3_activations', base, activation_variants, 'Stage 3.3: activations',
                               chosen_from=reason, stats=True)
    for r in map(Row.of, summary.get('rows', [])):
        print(f"{r.name} {ACTIVATIONS[r.name]}: valid {r.valid_acc:.1%}, share <= 0 "
              f"{r.dead_share:.2f}, first/last gradient norm {r.grad_first_over_last:.3g}")


main = script(run, recipe=RECIPE, reads='stage3_2_blocks')
if __name__ == '__main__': main()
