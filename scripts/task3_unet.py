#!/usr/bin/env python
"""Task 3.2 (T3.2): the baseline U-Net on the lunar-rock data.

Model: `arch.unet.UNet` written by hand, 4 down (max-pool) / 4 up (transposed conv) levels with skip connections,
base 32 with widths 32-64-128-144-144 (2.35M parameters; doubling up to 512 would be 7.8M), 1 channel of logits
(sigmoid at prediction). Input 128x128x3 (renders squished to 128 px), masks binarised rock = green or blue of the
Kaggle RGB masks. Recipe (`UNET`): 0.5 BCE + 0.5 soft Dice, Adam one-cycle max lr 1e-3, 30 epochs, batch 16;
augmentation on the device: horizontal flips, rotation <= 5 deg, zoom <= 1.1, brightness/contrast (masks follow).
Split: seeded train / valid / test frames (80 / 10 / 10 %). Metrics by threshold 0.5 over all pixels: IoU, Dice,
pixel accuracy on valid (best epoch by IoU), on the held-out test frames, and on the real Kaggle frame of a known
place when there is one (trained on generated frames, tested on a real one: the sim-to-real gap). Writes logs,
curves, prediction figures (input, predicted mask, true mask) and show_results.png under results/task3_unet/.
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.cli import training_script
from lab.jobs import seeded, train_runs
from lab.recipe import UNET
from lab.report import write_table
from lab.stages import lr_find_stage, open_stage, seg_row, stage_summary
from lab.train import RunOptions

RECIPE = UNET  # base 32, 4 levels, BCE + Dice, Adam one-cycle 1e-3, 30 epochs (lab/recipe.py)


def describe(row):
    "The row's scores in words: valid, test and real-frame IoU/Dice/pixel accuracy."
    parts = [f"valid IoU {row['iou']:.3f}, Dice {row['dice']:.3f}, pixel accuracy {row['pixel_acc']:.3f}"]
    for where, what in (('test', 'held-out test frames'), ('real', 'the real Kaggle frame (sim-to-real)')):
        if f'{where}_iou' in row: parts.append(f"{what}: IoU {row[f'{where}_iou']:.3f}, Dice {row[f'{where}_dice']:.3f}")
    return '; '.join(parts)


def run(recipe, opts):
    "Train the baseline U-Net and report its segmentation metrics and figures."
    st, recipe = open_stage(opts, 'task3_unet', recipe)
    with st:
        if st.done: return st.done
        if opts.lr_find: return lr_find_stage(st, recipe)
        runs = train_runs(st, seeded({'unet': recipe}, opts.seeds), RunOptions(test=True, real_pair=True), jobs=opts.jobs)
        row = seg_row('baseline U-Net', list(runs.values()), recipe.epochs)
        conclusion = describe(row)
        write_table([row], st.folder, title='Task 3.2: baseline U-Net (best epoch by valid IoU)',
                    notes=f"{conclusion}.\n\nData: {recipe.data}; seeds {opts.seeds}; {recipe.epochs} epochs.")
        summary = st.finish(stage_summary('task3_unet', 'Task 3.2: baseline U-Net', recipe, {'baseline U-Net': recipe},
                                          'baseline U-Net', [row], conclusion, opts))
    print(f"U-Net ({row['params_M']}M parameters): {conclusion}")
    return summary


main = training_script(run, RECIPE)
if __name__ == '__main__': main()
