#!/usr/bin/env python
"""Stage 3.1 (T2.7): channel widths. A = 32-64-128-256 (4 stages), B = 64-128-256 (3 stages, no layer4).

Both use [2,...] blocks, ReLU and the baseline's hyper-parameters. Writes the table (params, valid accuracy),
accuracy and loss plots for both, and the conclusion, chosen from the numbers, in table.md and summary.json.
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.cli import training_script
from lab.stages import BASELINE, run_resnet_stage

VARIANTS = {'A': dict(BASELINE, channels=(32, 64, 128, 256), blocks=(2, 2, 2, 2)),
            'B': dict(BASELINE, channels=(64, 128, 256), blocks=(2, 2, 2))}


def run(data, out, profile, seeds, epochs):
    "Train channel variants A and B and pick the better one."
    run_resnet_stage('stage3_1_channels', VARIANTS, out=out, data=data, profile=profile, seeds=seeds,
                     epochs=epochs, title='Stage 3.1: channels')


main = training_script(run)
if __name__ == '__main__': main()
