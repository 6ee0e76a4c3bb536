"""Shared fixtures: the real data subsets in ../shared/data (skipped when absent), small synthetic datasets, and a
tiny results tree of every stage, trained once per session.

The tests run torch on one thread (lab.machine.cpu_threads reads OMP_NUM_THREADS): the models here are tiny, and on a
2-core machine shared with anything else two spinning threads run them up to 10x slower. For the same reason they draw
their figures in their own process (LAB_FIGURES=here): tests/test_figures.py and the interrupt tests draw beside."""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')
# OpenMP threads that wait sleep instead of spinning: where a test runs torch on every core beside the other worker
# (test_two_jobs' run alone; its --jobs processes get this from lab.stage anyway), spinning threads burn the CPU that
# the others need (test_two_jobs: 30 -> 24 CPU-s)
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
os.environ.setdefault('LAB_FIGURES', 'here')  # two workers already use both cores: none is free to draw beside
from pathlib import Path

import matplotlib
matplotlib.use('Agg')  # show_batch and plots in tests never open a window
import pytest

# torch, fastai and the lab are imported by the fixtures, in the worker processes: pytest-xdist's controller reads this
# file too, and importing them there would cost it seconds of the CPU that the workers need.


@pytest.fixture(scope='session', autouse=True)
def torch_threads():
    import torch
    torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))


def make_tiny_imagenet_like(*args, **kwargs):
    from fastai_lab.data.synthetic import make_tiny_imagenet_like
    return make_tiny_imagenet_like(*args, **kwargs)


def make_moon_like(*args, **kwargs):
    from fastai_lab.data.synthetic import make_moon_like
    return make_moon_like(*args, **kwargs)

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
    "The command line of a tiny, fast classifier run (3 classes, 16 px, a ResNet of 4-8-8-16 channels, 1 block each)."
    return ['--data', str(data), '--out', str(out), '--quick', '--epochs', str(epochs), '--size', '16', '--classes', '3',
            '--bs', '8', '--channels', '4,8,8,16', '--blocks', '1,1,1,1', *map(str, extra)]


@pytest.fixture
def tiny_cli(tiny3, tmp_path):
    "`tiny_cli(*extra, epochs=2)`: the argv of a tiny classifier run writing under this test's tmp_path/'out'."
    return lambda *extra, epochs=2: tiny_argv(tiny3, tmp_path/'out', *extra, epochs=epochs)


@pytest.fixture(scope='session')
def results(tmp_path_factory):
    "A results tree of every kind of run (Task 1, baseline, final, 128 px classifier, U-Net: 16-32 px, 1 epoch)."
    from scripts import (stage2_baseline, stage4_final, task1_gradients, task1_variance, task3_classifier128,
                         task3_unet)
    root = tmp_path_factory.mktemp('lab_results')
    tiny = make_tiny_imagenet_like(root / 'tiny', n_classes=3, n_train=10, n_val=2, size=16)
    moon = make_moon_like(root / 'moon', n=12, width=48, height=32)
    out = root / 'out'
    small = ['--data', str(tiny), '--out', str(out), '--quick', '--epochs', '1', '--size', '16', '--classes', '3', '--bs', '8']
    task1_variance.main(['--out', str(out), '--quick', '--seeds', '1', '--size', '32', '--data', str(tiny)])
    task1_gradients.main(['--out', str(out), '--quick', '--seeds', '1', '--batch', '4', '--data', str(tiny)])
    stage2_baseline.main([*small, '--channels', '4,8,16', '--blocks', '1,1,1'])
    stage4_final.main([*small, '--channels', '4,8,16', '--blocks', '1,1,1', '--no-ablation'])
    task3_classifier128.main([*small, '--channels', '4,8,16,32', '--blocks', '1,1,1,1', '--no-tta'])
    task3_unet.main(['--data', str(moon), '--out', str(out), '--quick', '--epochs', '1', '--size', '32',
                                    '--base', '8'])
    return dict(root=root, out=out, tiny=Path(tiny), moon=Path(moon))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the marks into the test ids it schedules by
def pytest_collection_modifyitems(items):
    "The tests of the `results` tree run on one worker (pytest-xdist's loadgroup): it is trained once, not per worker."
    for item in items:
        if 'results' in getattr(item, 'fixturenames', ()): item.add_marker(pytest.mark.xdist_group('results'))
