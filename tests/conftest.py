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


@pytest.fixture(scope='session')
def tiny3(tmp_path_factory):
    "A very small Tiny ImageNet layout for training tests: 3 classes x 10 train + 2 val images of 16 px."
    return make_tiny_imagenet_like(tmp_path_factory.mktemp('tiny3')/'tiny', n_classes=3, n_train=10, n_val=2, size=16)


def tiny_argv(data, out, *extra, epochs=2):
    "The command line of a tiny, fast classifier run (3 classes, 16 px, a 3-stage ResNet of 4-8-16 channels)."
    return ['--data', str(data), '--out', str(out), '--quick', '--epochs', str(epochs), '--size', '16', '--classes', '3',
            '--bs', '8', '--channels', '4,8,16', '--blocks', '1,1,1', *map(str, extra)]


@pytest.fixture
def tiny_cli(tiny3, tmp_path):
    "`tiny_cli(*extra, epochs=2)`: the argv of a tiny classifier run writing under this test's tmp_path/'out'."
    return lambda *extra, epochs=2: tiny_argv(tiny3, tmp_path/'out', *extra, epochs=epochs)
