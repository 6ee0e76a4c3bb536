#!/usr/bin/env python
"""Stage 2 (T2.5, T2.6): the baseline ResNet on 10 Tiny ImageNet classes.

Configuration: 3x3 stride-1 stem (64 px input), stages 32-64-128-256 with [2,2,2,2] BasicBlocks, ReLU:
2.80M parameters, the ResNet18 layout at half width, which keeps inside the 5M budget. Adam, lr 1e-3,
cross-entropy, 25 epochs (20-30 in the spec). Writes accuracy/loss plots, the parameter count and
`print(model)` (model.txt) under results/stage2_baseline/<timestamp>/.
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arch.resnet import ResNet
from lab.cli import training_script
from lab.stages import BASELINE, run_resnet_stage


def run(data, out, profile, seeds, epochs):
    "Train the baseline and report its curves, size and architecture."
    print(ResNet(**BASELINE))  # T2.6: the architecture (also in each run's model.txt)
    summary = run_resnet_stage('stage2_baseline', {'baseline': BASELINE}, out=out, data=data, profile=profile,
                               seeds=seeds, epochs=epochs, title='Stage 2: baseline ResNet')
    row = summary['rows'][0]
    print(f"baseline: {row['params_M']}M parameters, best valid accuracy {row['valid_acc']:.1%} "
          f"at epoch {row['best_epoch']:.0f}; architecture in model.txt")


main = training_script(run)
if __name__ == '__main__': main()
