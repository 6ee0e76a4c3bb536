#!/usr/bin/env python
"""Stage 3.1 (T2.7): channel widths. A = 32-64-128-256 (4 stages), B = 64-128-256 (3 stages, no layer4).

Both use [2,...] blocks, ReLU and the spec's recipe (Adam 1e-3, constant, 25 epochs). Writes the table (params,
valid accuracy with its intervals), accuracy and loss plots for both, and the conclusion, computed from the numbers,
in table.md and summary.json.
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataclasses import replace

from lab.cli import training_script
from lab.recipe import SPEC
from lab.stages import run_resnet_stage

RECIPE = SPEC  # the spec's recipe; the variants change the channels only
CHANNELS = {'A': ((32, 64, 128, 256), (2, 2, 2, 2)), 'B': ((64, 128, 256), (2, 2, 2))}


def run(recipe, opts):
    "Train channel variants A and B and pick the better one."
    variants = {k: replace(recipe, model=dict(recipe.model, channels=c, blocks=b)) for k, (c, b) in CHANNELS.items()}
    run_resnet_stage(opts, 'stage3_1_channels', variants, recipe, 'Stage 3.1: channels')


main = training_script(run, RECIPE)
if __name__ == '__main__': main()
