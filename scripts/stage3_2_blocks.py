#!/usr/bin/env python
"""Stage 3.2 (T2.8): blocks per stage, [1,...], [2,...], [3,...], with the best channels of stage 3.1.

Reads the newest finished stage 3.1 run on the same data, classes, split and profile under --out (or the one named
with --from); without one it keeps the baseline channels 32-64-128-256 and says so. Compares params, valid accuracy,
convergence speed (epoch of the best result) and overfitting; all accuracy curves on one plot (valid_accuracy.png).
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.cli import training_script
from lab.recipe import SPEC
from lab.runs import stage_choice
from lab.stages import blocks_variants, run_resnet_stage

RECIPE = SPEC  # the spec's recipe; the model comes from stage 3.1


def run(recipe, opts):
    "Train 1, 2 and 3 blocks per stage on the channels chosen by stage 3.1."
    base, reason = stage_choice(opts, 'stage3_1_channels', recipe)
    run_resnet_stage(opts, 'stage3_2_blocks', blocks_variants(base), base, 'Stage 3.2: blocks per stage',
                     chosen_from=reason)


main = training_script(run, RECIPE)
if __name__ == '__main__': main()
