#!/usr/bin/env python
"""Stage 3.2 (T2.8): blocks per stage, [1,...], [2,...], [3,...], with the best channels of stage 3.1.

Reads the newest finished stage 3.1 run on the same data, classes, split and profile under --out (or the one named
with --from); without one it keeps the recipe's channels and says so. Compares params, valid accuracy, convergence
speed (epoch of the best result) and overfitting; all accuracy curves on one plot (valid_accuracy.png).
The choice weighs cost (`lab.stats.TIE_RULE`): variants within noise of the best valid accuracy are decided by
MACs per image, then parameters ('B ties A within noise at 3.1x the MACs: A kept'); a real lead keeps the better one
and states its cost ('+2.4 pts for 3.1x MACs'). The table carries every variant's cost (`lab.cost`).
"""

from fastai_lab.cli import script
from fastai_lab.recipe import SPEC
from fastai_lab.stage import stage_choice
from fastai_lab.comparisons import blocks_variants, run_resnet_stage

RECIPE = SPEC  # the spec's recipe; the model comes from stage 3.1


def run(recipe, opts):
    "Train 1, 2 and 3 blocks per stage on the channels chosen by stage 3.1."
    base, reason = stage_choice(opts, 'stage3_1_channels', recipe)
    run_resnet_stage(opts, 'stage3_2_blocks', base, blocks_variants, 'Stage 3.2: blocks per stage', chosen_from=reason)


main = script(run, recipe=RECIPE, reads='stage3_1_channels')
if __name__ == '__main__': main()
