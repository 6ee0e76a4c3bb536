"""Named augmentation presets as fastai batch transforms (they run on the batch's device, GPU included).

`augment_tfms(name, size)` gives the transforms of a preset; normalisation is not part of them (the caller appends
`Normalize`). `PadCrop` is the CIFAR-style reflect-pad-and-random-crop and `BatchRandomResizedCrop` the Inception-style
random resized crop, both drawn per image and vectorised over the batch; `shift_images` is PadCrop's shift at fixed
offsets (the shifted views of multi-view test-time augmentation).
"""
import math

import torch
import torch.nn.functional as F
from fastai.vision.all import RandTransform, TensorImage, aug_transforms, retain_type

__all__ = ['PadCrop', 'BatchRandomResizedCrop', 'shift_images', 'AUGMENTATIONS', 'augment_tfms']


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

    def encodes(self, x: TensorImage): return _shift(x, self.offs)


def _shift(x, offs):
    "Each image of `x` (n, c, h, w) shifted by its (dy, dx) row of `offs` (n, 2), reflected at the borders."
    n, c, h, w = x.shape
    # Pixel (y, x) of the crop is pixel (y + dy, x + dx) of the image, reflected at the borders: one gather over
    # the flattened pixels (the index is shared by the channels), no padded copy, no Python loop over the images.
    rows = _reflect(torch.arange(h, device=x.device) + offs[:, :1], h)  # (n, h)
    cols = _reflect(torch.arange(w, device=x.device) + offs[:, 1:], w)  # (n, w)
    idx = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, idx).view(n, c, h, w)


def shift_images(x, dy, dx):
    "Every image of the batch `x` shifted by (dy, dx) pixels, reflected at the borders: PadCrop at a fixed offset."
    h, w = x.shape[-2:]
    if max(abs(dy), abs(dx)) >= min(h, w): raise ValueError(f"shift ({dy}, {dx}): expected less than the {h}x{w} images")
    return _shift(x, torch.tensor([[dy, dx]], device=x.device).expand(x.shape[0], 2))


class BatchRandomResizedCrop(RandTransform):
    """Inception-style random resized crop of each image of a batch, resized back to the batch's size (bilinear).

    Per image: an area share in [`min_scale`, 1] and an aspect ratio in [3/4, 4/3] (log-uniform), clipped to the image,
    at a uniform position inside it; one `affine_grid` + `grid_sample` for the batch. fastai's `RandomResizedCropGPU`
    draws one crop for the whole batch and also resamples the valid split; this one is drawn per image from torch's RNG
    on the batch's device (`torch.manual_seed` fixes it), on the training split only (valid batches pass untouched).
    Shape and dtype are kept: integer images are resampled in float and rounded back. TensorImage only (for
    classification)."""
    split_idx, order = 0, 11  # after IntToFloatTensor (10): it resamples float images in [0, 1]

    def __init__(self, min_scale=0.35, ratio=(3 / 4, 4 / 3)):
        if not 0 < min_scale <= 1: raise ValueError(f"BatchRandomResizedCrop(min_scale={min_scale}): expected (0, 1]")
        super().__init__(p=1.)
        self.min_scale, self.ratio, self.theta = min_scale, ratio, None

    def before_call(self, b, split_idx):
        "Draw one crop (width and height as shares of the image, centre) per image, shared by the batch tuple's images."
        x = next((o for o in (b if isinstance(b, (tuple, list)) else (b,)) if isinstance(o, TensorImage)), None)
        self.do = split_idx == self.split_idx and x is not None
        if not self.do: return
        n, dev = x.shape[0], x.device
        area = torch.empty(n, device=dev).uniform_(self.min_scale, 1)
        log_ratio = torch.empty(n, device=dev).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]))
        cw, ch = (area * log_ratio.exp()).sqrt().clamp(max=1), (area / log_ratio.exp()).sqrt().clamp(max=1)
        cx, cy = (torch.rand(n, device=dev) * 2 - 1) * (1 - cw), (torch.rand(n, device=dev) * 2 - 1) * (1 - ch)
        zero = torch.zeros_like(cw)
        # affine_grid's output pixel (u, v) in [-1, 1] samples the input at (cw * u + cx, ch * v + cy): the crop
        self.theta = torch.stack([torch.stack([cw, zero, cx], 1), torch.stack([zero, ch, cy], 1)], 1)

    def encodes(self, x: TensorImage):
        img = x.as_subclass(torch.Tensor)
        grid = F.affine_grid(self.theta.to(torch.float32), list(img.shape), align_corners=False)
        out = F.grid_sample(img.float(), grid, mode='bilinear', padding_mode='reflection', align_corners=False)
        if not img.is_floating_point():
            out = out.round().clamp(torch.iinfo(img.dtype).min, torch.iinfo(img.dtype).max)
        return retain_type(out.to(img.dtype), x)


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
    # Random resized crop (area >= min_scale of the image, aspect 3/4-4/3) + flips: fastai's Imagenette recipe.
    'rrc': lambda size, min_scale=0.35: [BatchRandomResizedCrop(min_scale), *_flip(size)],
    # Moon segmentation: horizontal flips only (horizon on top), rotation <= 5 deg, zoom <= 1.1, lighting; masks follow.
    'seg': lambda size: aug_transforms(size=size, do_flip=True, flip_vert=False, max_rotate=5, max_zoom=1.1,
                                       max_lighting=0.2, max_warp=0),
}


def augment_tfms(name, size=None, min_scale=0.35):
    """The batch transforms of preset `name` (see `AUGMENTATIONS`), without normalisation; `size`: output size or None;
    `min_scale`: the smallest crop area of 'rrc'."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augment {name!r}: expected one of {', '.join(AUGMENTATIONS)}")
    return list(AUGMENTATIONS[name](size, min_scale=min_scale) if name == 'rrc' else AUGMENTATIONS[name](size))
