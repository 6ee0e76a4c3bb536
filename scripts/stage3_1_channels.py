#!/usr/bin/env python
"""Stage 3.1 (T2.7): channel widths. A = the recipe's 4 stages, B = 3 stages of twice A's first three widths.

A is the recipe's model (the baseline); B doubles A's first three widths and drops layer4, so --channels/--blocks move
both. Same activation and the spec's recipe (`SPEC`, listed at the end of --help). Writes the table (params, valid
accuracy with its intervals), accuracy and loss plots for both, and the conclusion, computed from the numbers, in
table.md and summary.json.
The choice weighs cost (`lab.stats.TIE_RULE`): variants within noise of the best valid accuracy are decided by
MACs per image, then parameters ('B ties A within noise at 3.1x the MACs: A kept'); a real lead keeps the better one
and states its cost ('+2.4 pts for 3.1x MACs'). The table carries every variant's cost (`lab.cost`).
"""
from dataclasses import replace

from fastai_lab.cli import script
from fastai_lab.recipe import SPEC
from fastai_lab.comparisons import run_resnet_stage

RECIPE = SPEC  # the spec's recipe; the variants change the channels only


def run(recipe, opts):
    "Train channel variants A and B and pick the better one."
    channels = recipe.model['channels']
    if len(channels) != 4: raise ValueError(f"--channels {channels}: stage 3.1 compares 4 stages (A) with 3 (B); give 4 widths")
    def variants(r):
        return {'A': r, 'B': replace(r, model=dict(r.model, channels=[2 * c for c in r.model['channels'][:3]],
                                                   blocks=r.model['blocks'][:3]))}
    run_resnet_stage(opts, 'stage3_1_channels', recipe, variants, 'Stage 3.1: channels')


main = script(run, recipe=RECIPE)
if __name__ == '__main__': main()
