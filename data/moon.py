"""Lunar rock segmentation data (T3.2, D4): render/ground pairs, mask binarisation and fastai `DataLoaders`.

Layout: ``images/render/renderNNNN.png`` (inputs) and ``images/ground/groundNNNN.png`` (masks), paired by frame number.
Masks may be binary (0/1 or 0/255, grey or RGB) or the Kaggle multi-class RGB masks (black ground, red sky,
green small rocks, blue large rocks); either way the target is rock (1) versus not rock (0).
"""
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from fastai.vision.all import (DataBlock, ImageBlock, IndexSplitter, ItemGetter, ItemTransform, MaskBlock, Normalize,
                               PILMask, Resize, ResizeMethod, imagenet_stats)

from .images import SIXTEEN_BIT_MODES, RGBImage

__all__ = ['CODES', 'mask_scheme', 'binarize_mask', 'load_mask', 'RockMask', 'moon_pairs', 'check_pair_sizes',
           'MoonSplits', 'moon_splits', 'moon_dls']

CODES = ['background', 'rock']
MAX_MIXED = 0.25  # a mask has few anti-aliased edge pixels; more than this share means it is not a mask (a photo?)


def _grey_scale(grey):
    "1 or 255, the value that stands for 'rock' in a grey mask; ValueError when it is neither."
    mx = grey.max()
    scale = 1 if mx <= 1 else 255 if mx == 255 else None
    if scale is None or grey.min() < 0:
        raise ValueError(f"grey mask with values {grey.min()}..{mx}: expected 0/1 or 0/255 values")
    mixed = ((grey > scale / 8) & (grey < scale * 7 / 8)).mean()
    if mixed > MAX_MIXED:
        raise ValueError(f"grey mask with {mixed:.0%} of its pixels between 0 and {scale}: expected a binary mask "
                         f"(0/{scale} with at most {MAX_MIXED:.0%} anti-aliased pixels)")
    return scale


def _parse(arr):
    "(scheme, values): grey HxW with its scale (1 or 255), or RGB HxWx3 int16 for 'kaggle_rgb'."
    arr = np.asarray(arr)
    if arr.dtype == bool: arr = arr.astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3]
        if (rgb == rgb[..., :1]).all(): arr = rgb[..., 0]
        else:
            # Kaggle masks are black/red/green/blue: apart from anti-aliased edges one channel at most is lit.
            mixed = ((rgb > 32).sum(-1) > 1).mean()
            if mixed > MAX_MIXED:
                raise ValueError(f"RGB mask with {mixed:.0%} of its pixels mixing channels: expected a Kaggle mask "
                                 f"(black ground, red sky, green small rocks, blue large rocks) or equal channels")
            return 'kaggle_rgb', rgb.astype(np.int16)
    if arr.ndim != 2: raise ValueError(f"mask of shape {arr.shape}: expected HxW grey or HxWx3/HxWx4 RGB(A)")
    return f'binary{_grey_scale(arr):02d}', arr


def mask_scheme(arr):
    "'binary01', 'binary255' (grey, or RGB with equal channels) or 'kaggle_rgb'; ValueError for anything else."
    return _parse(arr)[0]


def binarize_mask(arr, large_only=False):
    """HxW uint8 mask, 1 = rock, 0 = anything else, from any scheme of `mask_scheme`.

    Grey masks are thresholded at half their scale. Kaggle masks: rock = the green (small) or blue (large) channel
    above 127 and the brightest channel, so anti-aliased edges go to the dominant colour; `large_only`: blue only."""
    scheme, v = _parse(arr)
    if scheme != 'kaggle_rgb': return (v > (1 if scheme == 'binary01' else 255) / 2).astype(np.uint8)
    r, g, b = v[..., 0], v[..., 1], v[..., 2]
    large = (b > 127) & (b > r) & (b >= g)
    rock = large if large_only else large | ((g > 127) & (g > r) & (g > b))
    return rock.astype(np.uint8)


def load_mask(path, large_only=False):
    "The mask file at `path`, binarised; errors name the file."
    with Image.open(path) as im:
        # Palette and other modes would give indices or odd ranges, not the colours the schemes are defined on;
        # 16/32-bit grey keeps its stored values (convert would clip them), so a 0/65535 mask is refused, not clipped.
        raw = im.mode in ('1', 'L', 'RGB', 'RGBA', 'I', 'F') or im.mode in SIXTEEN_BIT_MODES
        arr = np.asarray(im if raw else im.convert('RGB'))
    try: return binarize_mask(arr, large_only)
    except ValueError as e: raise ValueError(f"{path}: {e}") from None


def _frames(folder, prefix):
    "{frame number: path} of `<prefix>NNNN.png` files in `folder`."
    if not folder.is_dir(): raise FileNotFoundError(f"{folder}: no such folder (expected {prefix}NNNN.png files)")
    pat = re.compile(rf'{prefix}(\d+)\.png', re.I)
    frames = {}
    for p in sorted(folder.iterdir()):
        if not (m := pat.fullmatch(p.name)): continue
        if int(m[1]) in frames:  # e.g. render7.png and render0007.png: one frame reached twice
            raise ValueError(f"{p}: frame {int(m[1])} again, as {frames[int(m[1])].name} is (expected one file a frame)")
        frames[int(m[1])] = p
    return frames


def moon_pairs(root):
    "`(render_path, ground_path)` pairs of `root/images/{render,ground}`, matched by frame number, sorted."
    root = Path(root)
    renders, grounds = _frames(root/'images'/'render', 'render'), _frames(root/'images'/'ground', 'ground')
    for have, lack, what in ((renders, grounds, 'renders without a ground mask'),
                             (grounds, renders, 'ground masks without a render')):
        alone = sorted(have.keys() - lack.keys())
        if alone: raise ValueError(f"{root/'images'}: {len(alone)} {what}, e.g. {[have[k].name for k in alone[:5]]}")
    if not renders: raise FileNotFoundError(f"{root/'images'}: no renderNNNN.png/groundNNNN.png pairs in its folders")
    return [(renders[k], grounds[k]) for k in sorted(renders)]


class RockMask(ItemTransform):
    "`(render, ground)` pair -> `PILMask` of its binarised ground mask (fastai's MaskBlock alone would keep 0/255)."
    def __init__(self, large_only=False): super().__init__(); self.large_only = large_only
    def encodes(self, pair): return PILMask.create(load_mask(pair[1], self.large_only))


def check_pair_sizes(pairs, tolerance=0.01):
    """Raise, naming both files, when a mask's aspect ratio differs from its render's (squishing both to a square
    would then put the mask's rocks in the wrong places). Reads the PNG headers only."""
    for render, ground in pairs:
        with Image.open(render) as r, Image.open(ground) as g: (rw, rh), (gw, gh) = r.size, g.size
        if abs(rw / rh - gw / gh) > tolerance * rw / rh:
            raise ValueError(f"{ground}: mask of {gw}x{gh} px for a render of {rw}x{rh} px ({render.name}): expected "
                             f"the render's aspect ratio")


@dataclass
class MoonSplits:
    "Render/ground pairs of the moon data, split into train / valid / test (seeded, by frame)."
    root: Path
    train: list = field(repr=False)
    valid: list = field(repr=False)
    test: list = field(repr=False)
    notes: str = ''
    shared: bool = False  # one frame serves as train, valid and test: nothing is held out


def moon_splits(root, valid_pct=0.2, test_pct=0.0, seed=42, max_items=None, say=True):
    """The pairs of `root` (the first `max_items`), split at random (seeded) into train, valid (`valid_pct`) and test
    (`test_pct`) frames. One pair alone serves as train, valid and test (`shared`), said loudly (`say`; the lab's
    `build_data` says it itself and saves it with the results): its metrics are not held out."""
    if max_items is not None and max_items < 1: raise ValueError(f"max_items={max_items}: expected at least 1")
    pairs = moon_pairs(root)[slice(max_items)]
    if len(pairs) < 2:
        if say: print(f"WARNING: only one render/ground pair ({pairs[0][0].name} of {root}): it is used for train, "
                      f"valid and test, so the valid and test metrics are NOT held-out metrics.")
        return MoonSplits(Path(root), pairs, pairs, pairs if test_pct else [],
                          'one frame shared by train, valid and test: not held out', shared=True)
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_test = min(max(round(test_pct * len(pairs)), int(test_pct > 0)), len(pairs) - 2) if test_pct else 0
    n_valid = min(max(round(valid_pct * len(pairs)), 1), len(pairs) - n_test - 1)
    test, valid, train = (sorted(order[a:b]) for a, b in ((0, n_test), (n_test, n_test + n_valid),
                                                           (n_test + n_valid, len(pairs))))
    notes = f"random split of the frames, seed {seed}: valid_pct={valid_pct}, test_pct={test_pct}"
    return MoonSplits(Path(root), *([pairs[i] for i in part] for part in (train, valid, test)), notes)


def moon_dls(source, size=128, bs=8, valid_pct=0.2, test_pct=0.0, seed=42, augment='seg', large_only=False,
             max_items=None, val_bs=None, device=None, num_workers=0):
    """fastai DataLoaders of (render, rock mask): TensorImage (B,3,size,size), TensorMask (B,size,size) long in {0,1}.

    `source`: a `MoonSplits` or a moon folder (split here with `valid_pct`, `test_pct`, `seed`, `max_items`).
    Frames are squished to size x size (the 3:2 renders lose their aspect ratio, the U-Nets want square inputs).
    `augment`: a preset of `data.augment` (default 'seg': horizontal flips only, so the horizon stays at the top,
    rotation <= 5 deg, zoom <= 1.1, brightness/contrast 0.2; masks move with their images), True/False meaning
    'seg'/'none'; then ImageNet normalisation."""
    from .augment import augment_tfms
    splits = source if isinstance(source, MoonSplits) else moon_splits(source, valid_pct, test_pct, seed, max_items)
    aug = augment_tfms({True: 'seg', False: 'none'}.get(augment, augment), size=size)
    items = splits.train + splits.valid
    block = DataBlock(blocks=(ImageBlock(RGBImage), MaskBlock(codes=CODES)),
                      get_x=ItemGetter(0), get_y=RockMask(large_only),
                      splitter=IndexSplitter(range(len(splits.train), len(items))),
                      item_tfms=Resize(size, method=ResizeMethod.Squish),
                      batch_tfms=[*aug, Normalize.from_stats(*imagenet_stats)])
    # The train loader drops its last partial batch: a batch larger than the train set would leave it empty.
    bs = min(bs, len(splits.train))
    return block.dataloaders(items, bs=bs, val_bs=val_bs or 4 * bs, device=device, num_workers=num_workers)
