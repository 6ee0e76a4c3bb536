#!/usr/bin/env python
"""Stage 2 (T2.5, T2.6): the baseline ResNet on 10 Tiny ImageNet classes.

Recipe (`SPEC` in lab/recipe.py): 3x3 stride-1 stem (64 px input), stages 32-64-128-256 with [2,2,2,2]
BasicBlocks, ReLU: 2.80M parameters, the ResNet18 layout at half width, inside the 5M budget. Adam, lr 1e-3,
constant, cross-entropy, flips, 25 epochs (20-30 in the spec). Writes accuracy/loss plots, the parameter count and
`print(model)` (model.txt) under results/stage2_baseline/<timestamp>/.
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.cli import training_script
from lab.data import resolve_data
from lab.recipe import SPEC
from lab.stages import run_resnet_stage
from lab.train import build_model

RECIPE = SPEC  # the spec's recipe, shared by every Task 2 comparison


def run(recipe, opts):
    "Train the baseline and report its curves, size and architecture."
    print(build_model(resolve_data(recipe)))  # T2.6: the architecture (also in each run's model.txt)
    summary = run_resnet_stage(opts, 'stage2_baseline', {'baseline': recipe}, recipe, 'Stage 2: baseline ResNet')
    if 'rows' in summary:
        row = summary['rows'][0]
        print(f"baseline: {row['params_M']}M parameters, best valid accuracy {row['valid_acc']:.1%} "
              f"at epoch {row['best_epoch']:.0f}; architecture in model.txt")


main = training_script(run, RECIPE)
if __name__ == '__main__': main()
