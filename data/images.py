"""Reading one image file: the lab's one check that a file is a readable image (decoded in full), and its one way
to open an image as 8-bit RGB (`open_rgb`), which every loader, `predict.py` and the overlays go through.

Why not PIL's `convert('RGB')` alone: it clips the values of wider modes to 0..255 instead of scaling them, so a
16-bit grey PNG (mode I;16, 0..65535) turns into a white square. The modes, decided one by one from Pillow's
conversions:
- 8 bits per channel (1, L, P, LA, PA, RGB, RGBA, RGBX, RGBa, CMYK, YCbCr, LAB, HSV): `convert('RGB')`, as fastai's
  `PILImage.create` does, so these pixels are bit-identical to fastai's (alpha is dropped, as there);
- 16-bit unsigned grey (I;16, I;16L, I;16B, I;16N): scaled from the format's range 0..65535 to 0..255 (v / 257,
  rounded), never by the image's own extremes, so every file keeps the same brightness scale;
- 32-bit integer (I) and float (F): no fixed range to scale from; kept when every value is an integer in 0..255
  (then nothing is lost), else refused, naming the file, the mode and its value range;
- anything else (e.g. La, Pillow converts it to nothing): refused, naming the file and the mode.
"""
from pathlib import Path

import numpy as np
from fastai.vision.core import PILImage

__all__ = ['check_image', 'open_rgb', 'to_rgb', 'RGBImage', 'EIGHT_BIT_MODES', 'SIXTEEN_BIT_MODES']

EIGHT_BIT_MODES = {'1', 'L', 'P', 'LA', 'PA', 'RGB', 'RGBA', 'RGBX', 'RGBa', 'CMYK', 'YCbCr', 'LAB', 'HSV'}
SIXTEEN_BIT_MODES = {'I;16', 'I;16L', 'I;16B', 'I;16N'}


def check_image(path, rgb=False):
    """The (width, height) of the image at `path`, decoded in full (`Image.open` alone reads the header only); a
    ValueError naming it when it is not a readable image, or with `rgb` one `open_rgb` refuses. The lab's one image
    check: the data checks (`fastai_lab.data.cache`) run it on a file whose item failed to decode, and `predict.py`
    (`rgb=True`) on every file before it loads the model."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.load()
            if rgb: to_rgb(im, str(path))
            return im.size
    except ValueError as e:
        if str(e).startswith(str(path)): raise  # to_rgb's refusal, already naming the file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    except UnidentifiedImageError: reason = 'not an image format Pillow knows'
    except Exception as e: reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f"{path}: not a readable image ({reason})")


def to_rgb(im, name='image'):
    "The loaded PIL image `im` as 8-bit RGB, mode by mode as the module says; a ValueError naming `name` otherwise."
    from PIL import Image
    if im.mode in EIGHT_BIT_MODES: return im.convert('RGB')
    if im.mode in SIXTEEN_BIT_MODES:
        v = np.asarray(im).astype(np.uint32)
        return Image.fromarray(((v * 255 + 32767) // 65535).astype(np.uint8), 'L').convert('RGB')
    if im.mode in ('I', 'F'):
        v = np.asarray(im)
        lo, hi = v.min(), v.max()
        if lo >= 0 and hi <= 255 and (im.mode == 'I' or np.array_equal(v, np.round(v))):
            return Image.fromarray(v.astype(np.uint8), 'L').convert('RGB')
        kind = '32-bit integer' if im.mode == 'I' else '32-bit float'
        raise ValueError(f"{name}: image mode {im.mode} ({kind}) with values {lo:g}..{hi:g} has no fixed range to "
                         f"scale to 8 bits (expected 8-bit or 16-bit images; save it as one)")
    raise ValueError(f"{name}: image mode {im.mode} is not read by the lab (expected an 8-bit mode such as L, RGB, "
                     f"RGBA, P, or 16-bit grey I;16)")


def open_rgb(path):
    "The image file at `path` as an 8-bit RGB PIL image (see the module for each mode); errors name the file."
    from PIL import Image
    with Image.open(path) as im:
        im.load()
        return to_rgb(im, str(path))


class RGBImage(PILImage):
    "fastai's `PILImage`, opened through `open_rgb` (fastai's own `create` would clip a 16-bit image to white)."
    @classmethod
    def create(cls, fn, **kwargs):
        if isinstance(fn, (str, Path)): return cls(open_rgb(fn))
        return super().create(fn, **kwargs)
