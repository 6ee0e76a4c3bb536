"Shared fixtures: the real data subsets in ../shared/data (skipped when absent) and small synthetic datasets."
from pathlib import Path

import matplotlib
matplotlib.use('Agg')  # show_batch and plots in tests never open a window
import pytest

from data.synthetic import make_moon_like, make_tiny_imagenet_like

SHARED = Path(__file__).resolve().parents[1].parent/'shared'/'data'


@pytest.fixture(scope='session')
def real_tiny():
    "The real Tiny ImageNet subset: 10 classes x 500 train images, 50 val (= test) images each."
    root = SHARED/'tiny-imagenet-10'
    if not (root/'wnids.txt').exists(): pytest.skip(f"no real Tiny ImageNet subset at {root}")
    return root


@pytest.fixture(scope='session')
def real_moon():
    "The one real Kaggle moon frame (render0001.png + its multi-class RGB ground mask)."
    root = SHARED/'moon'
    if not (root/'images'/'ground'/'ground0001.png').exists(): pytest.skip(f"no real moon data at {root}")
    return root


@pytest.fixture(scope='session')
def synthetic_tiny(tmp_path_factory):
    "Generated Tiny ImageNet layout: 10 classes x 20 train + 5 val images of 64 px."
    return make_tiny_imagenet_like(tmp_path_factory.mktemp('synthetic')/'tiny', n_train=20, n_val=5)


@pytest.fixture(scope='session')
def synthetic_moon(tmp_path_factory):
    "Generated moon layout: 6 frames of 96x64 with Kaggle-style masks."
    return make_moon_like(tmp_path_factory.mktemp('synthetic')/'moon', n=6, width=96, height=64)
