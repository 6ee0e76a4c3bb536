#!/usr/bin/env python
"""Stage 3.2 (T2.8): blocks per stage, [1,...], [2,...], [3,...], with the best channels of stage 3.1.

Reads the newest finished stage 3.1 run under --out; without one it uses the baseline channels 32-64-128-256
and says so. Compares params, valid accuracy, convergence speed (epoch of the best result) and overfitting;
all accuracy curves on one plot (valid_accuracy.png).
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.cli import training_script
from lab.stages import BASELINE, blocks_variants, previous_choice, run_resnet_stage


def run(data, out, profile, seeds, epochs):
    "Train 1, 2 and 3 blocks per stage on the channels chosen by stage 3.1."
    base, reason = previous_choice(out, 'stage3_1_channels', BASELINE)
    run_resnet_stage('stage3_2_blocks', blocks_variants(base), out=out, data=data, profile=profile, seeds=seeds,
                     epochs=epochs, title='Stage 3.2: blocks per stage', chosen_from=reason)


main = training_script(run)
if __name__ == '__main__': main()
