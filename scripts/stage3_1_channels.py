#!/usr/bin/env python
"""Stage 3.1 (T2.7): channel widths. A = 32-64-128-256 (4 stages), B = 64-128-256 (3 stages, no layer4).

Both use [2,...] blocks, ReLU and the baseline's hyper-parameters. Writes the table (params, valid accuracy),
accuracy and loss plots for both, and the conclusion, chosen from the numbers, in table.md and summary.json.
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fastcore.script import call_parse

from lab.stages import BASELINE, run_resnet_stage, setup

VARIANTS = {'A': dict(BASELINE, channels=(32, 64, 128, 256), blocks=(2, 2, 2, 2)),
            'B': dict(BASELINE, channels=(64, 128, 256), blocks=(2, 2, 2))}


@call_parse
def main(data: str = None,  # Tiny ImageNet folder (default: known places, else a generated offline set)
         out: str = 'results',  # results folder
         quick: bool = False,  # quick profile: few images and epochs (default on a CPU)
         full: bool = False,  # full profile even without a GPU
         epochs: int = None,  # epochs (default: the profile's)
         seeds: str = '1'):  # seeds: a count (2) or a list (0,1)
    profile, seeds, epochs = setup(data, quick, full, seeds, epochs)
    run_resnet_stage('stage3_1_channels', VARIANTS, out=out, data=data, profile=profile, seeds=seeds,
                     epochs=epochs, title='Stage 3.1: channels')
