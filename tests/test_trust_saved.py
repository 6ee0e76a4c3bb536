"""Trust, third pass: no silent change of the data (image modes, duplicated items) and every saved result carries
its caveats; an unwritable --out and a failed write say what failed."""
import errno, json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastai_lab.data.images import RGBImage, check_image, open_rgb


# ----- image modes ------------------------------------------------------------------------------------------------

def _save(path, arr, mode=None):
    Image.fromarray(arr, mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257, 32896], [65535, 1000, 60000]], np.uint16)
    png = _save(tmp_path / 'sixteen.png', v)
    assert Image.open(png).mode == 'I;16'
    assert np.asarray(Image.open(png).convert('RGB'))[0, 2, 0] == 255  # what PIL alone does: clipped to white
    rgb = np.asarray(open_rgb(png))
    assert rgb.shape == (2, 3, 3) and (rgb == rgb[..., :1]).all()
    assert rgb[..., 0].tolist() == [[0, 1, 128], [255, 4, 233]]  # v / 257, rounded
    big_endian = Image.frombytes('I;16B', (3, 2), v.astype('>u2').tobytes())
    from fastai_lab.data.images import to_rgb
    assert np.asarray(to_rgb(big_endian)).tolist() == rgb.tolist()
    # fastai's loaders go through it: RGBImage.create
    assert np.asarray(RGBImage.create(png)).tolist() == rgb.tolist()


def test_8_bit_modes_are_fastais_pixels(tmp_path):
    from fastai.vision.core import PILImage
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    files = [_save(tmp_path / 'rgb.png', rgb), _save(tmp_path / 'grey.png', rgb[..., 0]),
             _save(tmp_path / 'rgba.png', np.dstack([rgb, rgb[..., :1]])), tmp_path / 'p.png', tmp_path / 'c.jpg']
    Image.fromarray(rgb).convert('P').save(files[3]); Image.fromarray(rgb).convert('CMYK').save(files[4])
    for f in files:
        assert np.array_equal(np.asarray(open_rgb(f)), np.asarray(PILImage.create(f))), f


def test_wide_modes_without_a_range_are_kept_only_when_lossless_else_refused_by_name(tmp_path):
    ints = np.array([[0, 17, 255]], np.int32)
    i8 = _save(tmp_path / 'i.tif', ints)
    assert Image.open(i8).mode == 'I' and np.asarray(open_rgb(i8))[..., 0].tolist() == [[0, 17, 255]]
    for name, arr in (('wide.tif', np.array([[0, 300, 60000]], np.int32)), ('neg.tif', np.array([[-1, 3, 4]], np.int32)),
                      ('unit.tif', np.array([[0, 0.5, 1.0]], np.float32))):
        f = _save(tmp_path / name, arr)
        with pytest.raises(ValueError, match=rf"^{tmp_path / name}: image mode [IF] .*no fixed range"):
            open_rgb(f)
        with pytest.raises(ValueError, match=rf"^{tmp_path / name}: image mode"):
            check_image(f, rgb=True)
        assert check_image(f) == (3, 1)  # readable, only not as RGB
    whole = _save(tmp_path / 'whole.tif', np.array([[0, 9, 200]], np.float32))
    assert np.asarray(open_rgb(whole))[..., 0].tolist() == [[0, 9, 200]]


def test_a_16_bit_png_trains_as_its_picture_in_the_tiny_imagenet_loader(tmp_path):
    from fastai_lab.data.synthetic import make_tiny_imagenet_like
    from fastai_lab.data.tiny_imagenet import TinyImageNetDataset, load_tiny_imagenet, tiny_imagenet_dls
    root = make_tiny_imagenet_like(tmp_path / 'tiny', n_classes=2, n_train=5, n_val=1, size=16)
    splits = load_tiny_imagenet(root, n_classes=2)
    path = splits.train[0][0]
    ramp = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)
    png = path.with_suffix('.png'); path.unlink(); _save(png, ramp)
    splits = load_tiny_imagenet(root, n_classes=2)
    i = [p for p, _ in splits.train].index(png)
    x, _ = TinyImageNetDataset(splits.train, splits.names)[i]
    assert torch.allclose(x[0] * 255, torch.arange(256.).reshape(16, 16), atol=0.5)
    dls = tiny_imagenet_dls(splits, size=16, bs=2, augment=False)
    img = dls.train_ds[i][0]
    assert isinstance(img, RGBImage) and np.asarray(img)[..., 0].ravel().tolist() == list(range(256))


# ----- duplicates -------------------------------------------------------------------------------------------------

def test_repeated_annotation_lines_and_linked_files_count_once(tmp_path, capsys):
    from fastai_lab.data.synthetic import make_tiny_imagenet_like
    from fastai_lab.data.tiny_imagenet import load_tiny_imagenet
    root = make_tiny_imagenet_like(tmp_path / 'tiny', n_classes=2, n_train=5, n_val=3, size=16)
    first = load_tiny_imagenet(root, n_classes=2)
    ann = root / 'val' / 'val_annotations.txt'
    lines = ann.read_text().splitlines()
    ann.write_text('\n'.join(lines + lines[:4] + lines[:1]) + '\n')  # 5 repeated lines
    # one train image reached twice: a symlink beside it in its class folder
    a = first.train[0][0]
    (a.parent / ('z' + a.name)).symlink_to(a)
    capsys.readouterr()
    again = load_tiny_imagenet(root, n_classes=2)
    out = capsys.readouterr().out
    assert out.count('\n') == 1 and 'dropped 5 repeated line(s)' in out and '1 train file(s)' in out
    assert again.test == first.test and len(again.test) == 6
    assert sorted(again.train + again.valid) == sorted(first.train + first.valid)
    # the same image with two classes: refused, naming both lines
    name, wnid = lines[0].split('\t')[:2]
    other = next(l.split('\t')[1] for l in lines if l.split('\t')[1] != wnid)
    ann.write_text('\n'.join(lines + [f'{name}\t{other}\t0\t0\t1\t1']) + '\n')
    with pytest.raises(ValueError, match=rf"line {len(lines) + 1}: {name} labelled {other}, but line 1"):
        load_tiny_imagenet(root, n_classes=2)
    # a test image that is a train file too: refused (the test set would not be held out)
    ann.write_text('\n'.join(lines) + '\n')
    test0 = first.test[0][0]
    test0.unlink(); test0.symlink_to(first.train[1][0])
    with pytest.raises(ValueError, match='test image.* are train/valid files too'):
        load_tiny_imagenet(root, n_classes=2)


def test_a_moon_frame_reached_twice_is_refused(tmp_path):
    from fastai_lab.data.moon import moon_pairs
    from fastai_lab.data.synthetic import make_moon_like
    root = make_moon_like(tmp_path / 'moon', n=3, width=24, height=16)
    render = sorted((root / 'images' / 'render').glob('*.png'))[0]
    n = int(render.stem[len('render'):])
    (render.parent / f'render{n}.png').write_bytes(render.read_bytes())
    with pytest.raises(ValueError, match=rf"frame {n} again"):
        moon_pairs(root)
