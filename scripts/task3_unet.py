#!/usr/bin/env python
"""Task 3.2 (T3.2): the baseline U-Net on the lunar-rock data.

Model: `arch.unet.UNet` written by hand, 4 down (max-pool) / 4 up (transposed conv) levels with skip
connections, base 32 with widths 32-64-128-144-144 (2.35M parameters; doubling up to 512 would be 7.8M),
1 channel of logits (sigmoid at prediction). Input 128x128x3 (renders squished to 128 px), masks binarised
rock = green or blue of the Kaggle RGB masks. Loss: 0.5 BCE + 0.5 soft Dice (--loss bce|dice|bce_dice);
Adam one-cycle, max lr 1e-3; metrics by threshold 0.5: IoU, Dice, pixel accuracy. Augmentation: horizontal
flips, rotation <= 5 deg, zoom <= 1.1, brightness/contrast. Writes logs, curves, final valid metrics, 4
prediction figures (input, predicted mask, true mask) and show_results.png under results/task3_unet/.
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fastcore.script import call_parse

from lab.profile import pick_profile
from lab.report import write_table
from lab.runs import parse_seeds, stage_dir, write_json
from lab.segment import UNET, moon_data, seg_row, train_unet_runs

LR = 1e-3


@call_parse
def main(data: str = None,  # moon data folder (default: known places, else a generated offline set)
         out: str = 'results',  # results folder
         quick: bool = False,  # quick profile: few frames and epochs (default on a CPU)
         full: bool = False,  # full profile even without a GPU
         epochs: int = None,  # epochs (default: the profile's seg_epochs)
         seeds: str = '1',  # seeds: a count (2) or a list (0,1)
         loss: str = 'bce_dice'):  # loss: bce, dice or bce_dice (0.5 each)
    profile, seeds = pick_profile(quick, full), parse_seeds(seeds)
    epochs = int(epochs or profile['seg_epochs'])
    with stage_dir(out, 'task3_unet') as folder:
        root, dls, source = moon_data(data, profile)
        runs = train_unet_runs(UNET, dls, folder, seeds, epochs, LR, loss,
                               dict(loss=loss, data=str(root), data_source=source, profile=profile))
        row = seg_row('baseline U-Net', runs, epochs)
        write_table([row], folder, title='Task 3.2: baseline U-Net (valid, best epoch by IoU)')
        write_json(folder / 'summary.json', dict(stage='task3_unet', best='baseline U-Net', best_config=UNET, rows=[row],
                                                 loss=loss, data_source=source, data=str(root), profile=profile['name'],
                                                 seeds=seeds, epochs=epochs))
    print(f"U-Net ({row['params_M']}M parameters): IoU {row['iou']:.3f}, Dice {row['dice']:.3f}, "
          f"pixel accuracy {row['pixel_acc']:.3f} on {source} moon data ({len(seeds)} seed(s))")
