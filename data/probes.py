"""Task 1's probe inputs: a batch of real Tiny ImageNet train images for the probe networks (`arch.probes`)."""
import math
from pathlib import Path

import torch
from fastai.vision.core import imagenet_stats
from torchvision import transforms as T

from .locate import find_tiny_imagenet
from .tiny_imagenet import TinyImageNetDataset, read_wnids

__all__ = ['probe_images']


def probe_images(data=None, n=256, size=64):
    """Up to `n` Tiny ImageNet train images as an ImageNet-normalised `(n, 3, size, size)` tensor, and where they came from.

    `data`: the dataset root; None looks in the known places (`data.locate`) and returns `(None, reason)` when no
    dataset is there. A `data` path that holds no dataset raises. Images are taken evenly from the classes."""
    try: root, source = find_tiny_imagenet(data, generate=False)   # random inputs need no synthetic stand-in
    except (FileNotFoundError, ValueError) as e:
        if data is not None: raise
        return None, f'no Tiny ImageNet found ({e})'
    n_classes = min(10, len(read_wnids(Path(root))))
    tfm = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(*imagenet_stats)])
    ds = TinyImageNetDataset.from_folder(root, 'train', tfm, n_classes=n_classes, valid_pct=0.0,
                                         max_per_class=math.ceil(n / n_classes))
    images = torch.stack([ds[i][0] for i in range(min(n, len(ds)))])
    return images, f'{len(images)} train images of {root} ({source})'
