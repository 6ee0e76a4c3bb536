#!/usr/bin/env python
"""Task 3.2 (T3.2): the baseline U-Net on the lunar-rock data.

Model: `arch.unet.UNet` written by hand, max-pool downs and transposed-conv ups with skip connections, widths capped
to stay inside the parameter budget, 1 channel of logits (sigmoid at prediction); renders squished to the recipe's
size, masks binarised rock = green or blue of the Kaggle RGB masks. Model and recipe: `UNET` (lab/recipe.py; listed
at the end of --help): BCE + soft Dice, augmentation on the device (masks follow). Split: seeded train / valid / test
frames. Metrics by threshold 0.5 over all pixels: IoU, Dice, pixel accuracy on valid (best epoch by IoU), on the
held-out test frames, and on the real Kaggle frame of a known place when there is one (trained on generated frames,
tested on a real one: the sim-to-real gap). Writes logs, curves, prediction figures (input, predicted mask, true
mask) and show_results.png under results/task3_unet/.
"""

from fastai_lab.cli import script
from fastai_lab.recipe import UNET
from fastai_lab.cost import cost_note
from fastai_lab.tables import write_table
from fastai_lab.stage import run_stage
from fastai_lab.rows import SegRow, seg_row, seg_table_rows
from fastai_lab.metrics import score_text
from fastai_lab.train import RunOptions

RECIPE = UNET  # the hand-written U-Net and its recipe (lab/recipe.py)


def describe(row, held_out=True):
    """The row's scores in words: valid, test and real-frame IoU/Dice/pixel accuracy ('undefined (no rock pixels)'
    where a split's masks hold no rock). `held_out`: whether the test frames are kept out of training."""
    row = SegRow.of(row)
    parts = [f"valid IoU {score_text(row.iou)}, Dice {score_text(row.dice)}, pixel accuracy {row.pixel_acc:.3f}"]
    test = 'held-out test frames' if held_out else 'test frames (the training frame itself: NOT held out)'
    for where, what in (('test', test), ('real', 'the real Kaggle frame (sim-to-real)')):
        if row.has(f'{where}_iou'):
            score = lambda m: score_text(getattr(row, f'{where}_{m}'))
            parts.append(f"{what}: IoU {score('iou')}, Dice {score('dice')}")
    return '; '.join(parts)


def run(recipe, opts):
    "Train the baseline U-Net and report its segmentation metrics and figures."
    def experiment(ctx):
        runs = ctx.train({'unet': ctx.recipe}, RunOptions(test=True, real_pair=True))['unet']
        row = seg_row('baseline U-Net', runs, ctx.recipe.epochs)
        conclusion = describe(row, ctx.data_info.get('held_out', True))
        write_table(seg_table_rows([row]), ctx.folder, title='Task 3.2: baseline U-Net (best epoch by valid IoU)',
                    notes=f"{conclusion}.\n\nData: {ctx.recipe.data}; seeds {ctx.seeds}; {ctx.recipe.epochs} epochs."
                          f"\n\n{cost_note([row])}" + ctx.caveat_notes())
        print(f"U-Net ({row.params_M}M parameters): {conclusion}")
        return ctx.summary('Task 3.2: baseline U-Net', {'baseline U-Net': ctx.recipe}, 'baseline U-Net',
                           [row.to_dict()], conclusion)
    return run_stage(opts, 'task3_unet', recipe, experiment)


main = script(run, recipe=RECIPE)
if __name__ == '__main__': main()
