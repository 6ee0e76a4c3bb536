"""Profiles (D5): the full spec on a GPU, a quick end-to-end pass on a CPU."""
import os

import torch

__all__ = ['PROFILES', 'pick_profile', 'default_device', 'loader_workers']

# Everything a profile changes, in one place. Epochs follow the spec: 20-30 for the stages (T2.5), 30-40 for
# the final model (T2.10). The quick profile keeps `max_per_class` train images per class (split 80/20) and
# as many test images, so every script runs end to end on a 2-core CPU in seconds to minutes.
PROFILES = {
    'full': dict(max_per_class=None, epochs=25, final_epochs=35, bs=128, seg_epochs=30, seg_bs=16, moon_items=None),
    'quick': dict(max_per_class=20, epochs=2, final_epochs=2, bs=32, seg_epochs=2, seg_bs=4, moon_items=20),
}


def loader_workers():
    "DataLoader worker processes: decoding JPEGs in parallel keeps a GPU fed; on a CPU the main process is faster."
    return min(8, os.cpu_count() or 1) if torch.cuda.is_available() else 0


def default_device():
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def pick_profile(quick=False, full=False):
    "Settings of the 'quick' or 'full' profile (with its 'name'). Without a flag: full on a GPU, quick on a CPU (said)."
    if quick and full: raise ValueError("--quick and --full contradict each other: give one")
    if quick: name = 'quick'
    elif full or torch.cuda.is_available(): name = 'full'
    else:
        name = 'quick'
        print("NOTICE: no GPU found, so the quick profile runs (few images, few epochs); "
              "pass --full to run the full spec on this CPU anyway.")
    return dict(PROFILES[name], name=name)
