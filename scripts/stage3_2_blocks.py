#!/usr/bin/env python
"""Stage 3.2 (T2.8): blocks per stage, [1,...], [2,...], [3,...], with the best channels of stage 3.1.

Reads the newest finished stage 3.1 run under --out; without one it uses the baseline channels 32-64-128-256
and says so. Compares params, valid accuracy, convergence speed (epoch of the best result) and overfitting;
all accuracy curves on one plot (valid_accuracy.png).
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fastcore.script import call_parse

from lab.stages import BASELINE, blocks_variants, previous_choice, run_resnet_stage, setup


@call_parse
def main(data: str = None,  # Tiny ImageNet folder (default: known places, else a generated offline set)
         out: str = 'results',  # results folder
         quick: bool = False,  # quick profile: few images and epochs (default on a CPU)
         full: bool = False,  # full profile even without a GPU
         epochs: int = None,  # epochs (default: the profile's)
         seeds: str = '1'):  # seeds: a count (2) or a list (0,1)
    profile, seeds, epochs = setup(data, quick, full, seeds, epochs)
    base, reason = previous_choice(out, 'stage3_1_channels', BASELINE)
    run_resnet_stage('stage3_2_blocks', blocks_variants(base), out=out, data=data, profile=profile, seeds=seeds,
                     epochs=epochs, title='Stage 3.2: blocks per stage', chosen_from=reason)
