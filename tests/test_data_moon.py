"Moon data layer: mask schemes and binarisation, pairing, DataLoaders, generator, locating (T3.2, D3, D4)."
import re, shutil
from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from fastai_lab.data import locate, synthetic
from fastai_lab.data.moon import binarize_mask, load_mask, mask_scheme, moon_dls, moon_pairs
from fastai_lab.data.tiny_imagenet import valid_idxs

# ----- masks --------------------------------------------------------------------------------------------------------

ROCK = np.array([[0, 0, 1, 1, 0],
                 [0, 0, 1, 1, 0],
                 [0, 1, 1, 0, 0],
                 [0, 0, 0, 0, 0]], np.uint8)
GREY255 = np.array([[0, 0, 255, 255, 0],
                    [0, 100, 200, 255, 0],  # anti-aliased: 100 -> 0, 200 -> 1
                    [0, 255, 255, 30, 0],
                    [0, 0, 0, 0, 0]], np.uint8)
K, R, G, B = (0, 0, 0), (226, 0, 0), (0, 255, 0), (0, 0, 255)
KAGGLE = np.array([[R, R, R, R, R],
                   [R, (120, 130, 0), (130, 128, 0), R, (225, 0, 0)],  # sky/rock edges: rock only where green leads
                   [K, G, (0, 140, 0), (0, 100, 0), B],                # faint green is not rock
                   [K, (0, 150, 200), (0, 200, 150), (0, 0, 128), (0, 0, 127)]], np.uint8)
PHOTO = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
PHOTO[0, 0] = 255  # the full range, as a photo (or a render passed as a mask) has
KAGGLE_ROCK = np.array([[0, 0, 0, 0, 0],
                        [0, 1, 0, 0, 0],
                        [0, 1, 1, 0, 1],
                        [0, 1, 1, 1, 0]], np.uint8)
KAGGLE_LARGE = np.array([[0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 1],
                         [0, 1, 0, 1, 0]], np.uint8)


@pytest.mark.parametrize('mask, scheme', [
    (ROCK, 'binary01'),
    (ROCK.astype(bool), 'binary01'),
    (ROCK * np.float32(0.9) + np.float32(0.05), 'binary01'),  # float 0..1 with soft edges
    (ROCK * 255, 'binary255'),
    (GREY255, 'binary255'),
    (np.stack([GREY255] * 3, -1), 'binary255'),                     # RGB with equal channels
    (np.dstack([GREY255] * 3 + [np.full_like(GREY255, 255)]), 'binary255'),  # RGBA
])
def test_binary_masks(mask, scheme):
    assert mask_scheme(mask) == scheme
    out = binarize_mask(mask)
    assert out.dtype == np.uint8 and np.array_equal(out, ROCK)


def test_kaggle_mask():
    assert mask_scheme(KAGGLE) == 'kaggle_rgb'
    assert np.array_equal(binarize_mask(KAGGLE), KAGGLE_ROCK)
    assert np.array_equal(binarize_mask(KAGGLE, large_only=True), KAGGLE_LARGE)
    assert np.array_equal(binarize_mask(np.dstack([KAGGLE, np.full(KAGGLE.shape[:2], 255, np.uint8)])), KAGGLE_ROCK)


@pytest.mark.parametrize('mask, found', [
    (PHOTO[..., 0], r'grey mask with \d+% of its pixels between 0 and 255'),
    (ROCK * 100, r'grey mask with values 0\.\.100'),
    (ROCK.astype(np.int16) - 1, r'grey mask with values -1\.\.0'),
    (PHOTO, r'RGB mask with \d+% of its pixels mixing channels'),
    (np.zeros((4, 4, 2)), r'shape \(4, 4, 2\)'),
    (np.zeros(5), r'shape \(5,\)'),
])
def test_unknown_masks_raise_saying_what_was_found(mask, found):
    with pytest.raises(ValueError, match=found):
        binarize_mask(mask)


@pytest.mark.parametrize('make', [
    lambda: Image.fromarray(GREY255),
    lambda: Image.fromarray(GREY255).convert('P'),
    lambda: Image.fromarray(ROCK.astype(bool)),
    lambda: Image.fromarray(np.stack([ROCK * 255] * 3, -1)),
])
def test_mask_files_of_every_mode(tmp_path, make):
    make().save(tmp_path/'m.png')
    assert np.array_equal(load_mask(tmp_path/'m.png'), ROCK)


def test_bad_mask_file_is_named(tmp_path):
    Image.fromarray(ROCK * 100).save(tmp_path/'ground0001.png')
    with pytest.raises(ValueError, match=re.escape(str(tmp_path/'ground0001.png'))):
        load_mask(tmp_path/'ground0001.png')


# ----- pairs --------------------------------------------------------------------------------------------------------

def test_pairs_match_frame_numbers(synthetic_moon):
    pairs = moon_pairs(synthetic_moon)
    assert [(r.name, g.name) for r, g in pairs] == [(f'render{k:04d}.png', f'ground{k:04d}.png') for k in range(1, 7)]
    assert all(r.parent == synthetic_moon/'images'/'render' for r, _ in pairs)


def _drop(root, rel): (root/rel).unlink()


@pytest.mark.parametrize('break_it, error, found', [
    (lambda root: shutil.rmtree(root/'images'/'ground'), FileNotFoundError, 'images/ground: no such folder'),
    (partial(_drop, rel='images/ground/ground0003.png'), ValueError,
     r"1 renders without a ground mask, e\.g\. \['render0003.png'\]"),
    (partial(_drop, rel='images/render/render0002.png'), ValueError,
     r"1 ground masks without a render, e\.g\. \['ground0002.png'\]"),
    (lambda root: [p.unlink() for p in (root/'images').glob('*/*.png')], FileNotFoundError, 'images: no renderNNNN'),
])
def test_bad_layouts_raise_naming_the_path(synthetic_moon, tmp_path, break_it, error, found):
    root = shutil.copytree(synthetic_moon, tmp_path/'moon')
    break_it(root)
    with pytest.raises(error, match=re.escape(str(root)) + '.*' + found):
        moon_pairs(root)


# ----- DataLoaders --------------------------------------------------------------------------------------------------

def test_dataloaders_give_binary_long_masks(synthetic_moon):
    dls = moon_dls(synthetic_moon, size=64, bs=4, augment=False)
    pairs = moon_pairs(synthetic_moon)
    valid = valid_idxs(6, 0.2, np.random.default_rng(42))
    assert list(dls.valid_ds.items) == [pairs[i] for i in valid] and len(dls.train_ds) == 5
    _, mask = dls.valid_ds[0]
    assert np.array_equal(np.asarray(mask), load_mask(pairs[valid[0]][1]))
    xb, yb = dls.one_batch()
    assert xb.shape == (4, 3, 64, 64) and yb.shape == (4, 64, 64)
    assert type(yb).__name__ == 'TensorMask' and str(yb.dtype) == 'torch.int64' and set(yb.unique().tolist()) <= {0, 1}


def test_split_is_seeded():
    same = [valid_idxs(10, 0.2, np.random.default_rng(3)).tolist() for _ in range(2)]
    other = valid_idxs(10, 0.2, np.random.default_rng(4)).tolist()
    assert same[0] == same[1] != other and len(other) == 2


def test_large_only_is_a_subset(synthetic_moon):
    _, ground = moon_pairs(synthetic_moon)[1]
    rock, large = load_mask(ground), load_mask(ground, large_only=True)
    assert (large <= rock).all() and large.sum() < rock.sum()


def test_single_pair_is_used_for_train_and_valid_loudly(synthetic_moon, capsys):
    dls = moon_dls(synthetic_moon, size=32, bs=8, max_items=1)
    assert 'NOT held-out' in capsys.readouterr().out
    assert list(dls.train_ds.items) == list(dls.valid_ds.items) == moon_pairs(synthetic_moon)[:1]
    assert dls.one_batch()[0].shape == (1, 3, 32, 32)


def test_show_batch(synthetic_moon):
    plt.close('all')
    moon_dls(synthetic_moon, size=32, bs=4).show_batch(max_n=2)
    assert len([ax for ax in plt.gcf().axes if ax.images]) == 2  # image with its mask overlaid
    assert all(len(ax.images) == 2 for ax in plt.gcf().axes if ax.images)
    plt.close('all')


# ----- generator ----------------------------------------------------------------------------------------------------

def test_generator_writes_kaggle_style_masks(synthetic_moon):
    assert (synthetic_moon/'.complete').exists() and (synthetic_moon/'SYNTHETIC').exists()
    colours = set()
    for render, ground in moon_pairs(synthetic_moon):
        mask = np.asarray(Image.open(ground))
        assert Image.open(render).size == (96, 64) and mask.shape == (64, 96, 3) and mask_scheme(mask) == 'kaggle_rgb'
        colours |= set(map(tuple, mask.reshape(-1, 3).tolist()))
        assert (mask[0] == synthetic.SKY).all() and 0 < binarize_mask(mask).mean() < 0.5  # sky on top, some rock
    assert colours == {K, synthetic.SKY, synthetic.SMALL_ROCK, synthetic.LARGE_ROCK}


# ----- real data ----------------------------------------------------------------------------------------------------

def test_real_pair(real_moon, capsys):
    (render, ground), = moon_pairs(real_moon)
    mask = np.asarray(Image.open(ground))
    assert mask_scheme(mask) == 'kaggle_rgb'
    rock, large = binarize_mask(mask), binarize_mask(mask, large_only=True)
    assert rock.shape == (480, 720) and set(np.unique(rock)) == {0, 1}
    assert 0.005 < rock.mean() < 0.05 and 0 < large.sum() < rock.sum()  # about 1% rock, 0.4% of it large
    assert rock[:100].sum() == 0  # the top of the frame is sky
    dls = moon_dls(real_moon, bs=2)
    assert 'NOT held-out' in capsys.readouterr().out and dls.one_batch()[1].shape == (1, 128, 128)


# ----- locating -----------------------------------------------------------------------------------------------------

def test_explicit_path_must_be_valid(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path/'none'))):
        locate.find_moon(tmp_path/'none')


def test_generated_data_is_reported_synthetic(synthetic_moon, capsys):
    assert locate.find_moon(synthetic_moon) == (synthetic_moon, 'synthetic')
    assert 'NOTICE' in capsys.readouterr().out


@pytest.fixture
def no_known_places(tmp_path, monkeypatch):
    "fastai's data folder empty, and no ../shared beside the checkout: (the data folder, the checkout)."
    monkeypatch.setattr(locate, 'REPO', tmp_path/'repo')
    monkeypatch.setattr(locate, 'data_home', lambda: tmp_path/'fastai-data')
    return tmp_path/'fastai-data', tmp_path/'repo'


def test_fallback_generates_once_then_reuses(no_known_places, monkeypatch, capsys):
    with pytest.raises(FileNotFoundError, match='kaggle'):
        locate.find_moon(generate=False)
    monkeypatch.setattr(locate, 'make_moon_like', partial(synthetic.make_moon_like, n=2, width=48, height=32))
    target = no_known_places[0]/'moon-synthetic'
    assert locate.find_moon() == (target, 'synthetic') and len(moon_pairs(target)) == 2
    monkeypatch.setattr(locate, 'make_moon_like', None)  # a second generation would fail
    assert locate.find_moon() == (target, 'synthetic')
    assert capsys.readouterr().out.count('NOTICE') == 2


def test_known_locations_skip_folders_too_small_to_train(no_known_places, capsys):
    home, repo = no_known_places
    small = synthetic.make_moon_like(repo.parent / 'shared' / 'data' / 'moon', n=2, width=48, height=32)
    with pytest.raises(FileNotFoundError, match='no the Kaggle moon data data in'):
        locate.find_moon(generate=False)
    assert 'holds only 2 render/ground pair(s), too few to train on' in capsys.readouterr().out
    assert locate.find_moon(small)[0] == small  # explicit: used anyway
    big = synthetic.make_moon_like(home / 'moon', n=locate.MIN_MOON_PAIRS, width=48, height=32)
    (big / 'SYNTHETIC').unlink()  # stands in for a real download here
    assert locate.find_moon(generate=False) == (big, 'real')


def test_real_pair_is_used_when_asked_for(real_moon):
    path, source = locate.find_moon(real_moon)
    assert source == 'real' and len(moon_pairs(path)) == 1
