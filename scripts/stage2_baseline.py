#!/usr/bin/env python
"""Stage 2 (T2.5, T2.6): the baseline ResNet on 10 Tiny ImageNet classes.

Model and recipe: `SPEC` (lab/recipe.py; its values are listed at the end of --help): the ResNet18 layout at half
width, inside the 5M-parameter budget, trained with the spec's plain recipe. Writes accuracy/loss plots, the
parameter count and `print(model)` (model.txt) under results/stage2_baseline/<timestamp>/, with its cost (MACs,
parameters, images/s, latency, peak memory: `lab.cost`).
"""

from fastai_lab.cli import script
from fastai_lab.recipe import SPEC
from fastai_lab.comparisons import run_resnet_stage
from fastai_lab.rows import Row
from fastai_lab.tables import EPOCHS_FROM_0

RECIPE = SPEC  # the spec's recipe, shared by every Task 2 comparison


def run(recipe, opts):
    "Train the baseline and report its curves, size and architecture."
    # T2.6: the architecture is printed once the data has passed its checks (also in each run's model.txt)
    summary = run_resnet_stage(opts, 'stage2_baseline', recipe, lambda r: {'baseline': r}, 'Stage 2: baseline ResNet',
                               show_model=True)
    if 'rows' in summary:
        row = Row.of(summary['rows'][0])
        print(f"baseline: {row.params_M}M parameters, best valid accuracy {row.valid_acc:.1%} "
              f"at epoch {row.best_epoch:.0f} ({EPOCHS_FROM_0}); architecture in model.txt")


main = script(run, recipe=RECIPE)
if __name__ == '__main__': main()
