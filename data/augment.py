"""Named augmentation presets as fastai batch transforms (they run on the batch's device, GPU included).

`augment_tfms(name, size)` gives the transforms of a preset; normalisation is not part of them (the caller appends
`Normalize`). `PadCrop` is the CIFAR-style reflect-pad-and-random-crop, vectorised over the batch.
"""
import torch
from fastai.vision.all import RandTransform, TensorImage, aug_transforms

__all__ = ['PadCrop', 'AUGMENTATIONS', 'augment_tfms']


def _reflect(i, n):
    "Indices `i` in [-(n-1), 2(n-1)] folded into [0, n-1] like reflection padding (the edge pixel is not repeated)."
    return (n - 1) - ((n - 1) - i.abs()).abs()


class PadCrop(RandTransform):
    """Reflect-pad each image of a batch by `pad` pixels and crop back to its size at a random offset per image.

    Training split only; TensorImage only (masks and labels are untouched, so it is for classification). Offsets come
    from torch's RNG on the batch's device (`torch.manual_seed` fixes them). Runs before `IntToFloatTensor` (order 10)
    so it moves uint8 bytes; it works on any dtype since it only gathers pixels."""
    split_idx, order = 0, 5

    def __init__(self, pad=8):
        if pad < 0: raise ValueError(f"PadCrop(pad={pad}): expected pad >= 0")
        super().__init__(p=1.)
        self.pad, self.offs = pad, None

    def before_call(self, b, split_idx):
        "Draw one (dy, dx) shift in [-pad, pad] per image, shared by every TensorImage of the batch tuple."
        x = next((o for o in (b if isinstance(b, (tuple, list)) else (b,)) if isinstance(o, TensorImage)), None)
        # Decided here, not only by Transform's split check: no random draws and no size check on the valid split.
        self.do = split_idx == self.split_idx and self.pad > 0 and x is not None
        if not self.do: return
        h, w = x.shape[-2:]
        if self.pad >= min(h, w):
            raise ValueError(f"PadCrop(pad={self.pad}): expected pad smaller than the {h}x{w} images (reflection)")
        self.offs = torch.randint(-self.pad, self.pad + 1, (x.shape[0], 2), device=x.device)

    def encodes(self, x: TensorImage):
        n, c, h, w = x.shape
        # Pixel (y, x) of the crop is pixel (y + dy, x + dx) of the image, reflected at the borders: one gather over
        # the flattened pixels (the index is shared by the channels), no padded copy, no Python loop over the images.
        rows = _reflect(torch.arange(h, device=x.device) + self.offs[:, :1], h)  # (n, h)
        cols = _reflect(torch.arange(w, device=x.device) + self.offs[:, 1:], w)  # (n, w)
        idx = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
        return x.reshape(n, c, h * w).gather(2, idx).view(n, c, h, w)


def _flip(size):
    "Horizontal flips (p=0.5) and nothing else: fastai's `Flip`, through `aug_transforms` with the rest switched off."
    return aug_transforms(size=size, do_flip=True, flip_vert=False, max_rotate=0, min_zoom=1, max_zoom=1,
                          max_lighting=0, max_warp=0)


AUGMENTATIONS = {
    # No augmentation: the baseline, and runs that must see the images as stored.
    'none': lambda size: [],
    # Horizontal flips (p=0.5) alone: cheap, label-preserving for natural images.
    'flip': _flip,
    # Tiny ImageNet's default: flips, rotation <= 10 deg, zoom <= 1.1 on 3/4 of the images, lighting on half of them.
    'light': lambda size: aug_transforms(size=size, max_rotate=10, max_zoom=1.1, max_warp=0, p_lighting=0.5),
    # CIFAR-style translation: reflect-pad 8 px + random crop, and flips; for small classification images.
    'padcrop': lambda size: [PadCrop(8), *_flip(size)],
    # Moon segmentation: horizontal flips only (horizon on top), rotation <= 5 deg, zoom <= 1.1, lighting; masks follow.
    'seg': lambda size: aug_transforms(size=size, do_flip=True, flip_vert=False, max_rotate=5, max_zoom=1.1,
                                       max_lighting=0.2, max_warp=0),
}


def augment_tfms(name, size=None):
    "The batch transforms of preset `name` (see `AUGMENTATIONS`), without normalisation; `size`: output size or None."
    if name not in AUGMENTATIONS:
        raise ValueError(f"augment {name!r}: expected one of {', '.join(AUGMENTATIONS)}")
    return list(AUGMENTATIONS[name](size))
