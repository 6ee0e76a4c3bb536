#!/usr/bin/env python
"""Stage 3.1 (T2.7): channel widths. A = 32-64-128-256 (4 stages), B = 64-128-256 (3 stages, no layer4).

A is the recipe's model (the baseline: 32-64-128-256 x [2,2,2,2]); B doubles A's first three widths and drops layer4
(64-128-256 x [2,2,2]), so --channels/--blocks move both. Same ReLU and the spec's recipe (Adam 1e-3, constant,
25 epochs). Writes the table (params, valid accuracy with its intervals), accuracy and loss plots for both, and the
conclusion, computed from the numbers, in table.md and summary.json.
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataclasses import replace

from lab.cli import training_script
from lab.recipe import SPEC
from lab.stages import run_resnet_stage

RECIPE = SPEC  # the spec's recipe; the variants change the channels only


def run(recipe, opts):
    "Train channel variants A and B and pick the better one."
    channels, blocks = recipe.model['channels'], recipe.model['blocks']
    if len(channels) != 4: raise ValueError(f"--channels {channels}: stage 3.1 compares 4 stages (A) with 3 (B); give 4 widths")
    variants = {'A': recipe, 'B': replace(recipe, model=dict(recipe.model, channels=[2 * c for c in channels[:3]],
                                                              blocks=blocks[:3]))}
    run_resnet_stage(opts, 'stage3_1_channels', variants, recipe, 'Stage 3.1: channels')


main = training_script(run, RECIPE)
if __name__ == '__main__': main()
