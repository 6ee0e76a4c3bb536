"Datasets, DataBlocks and offline generators for Tiny ImageNet and the lunar-rock data."
from .tiny_imagenet import (TinyImageNetDataset, TinySplits, class_names, load_tiny_imagenet, read_wnids, read_words,
                            test_dl, tiny_imagenet_dls)
from .moon import binarize_mask, load_mask, mask_scheme, moon_dls, moon_pairs
from .synthetic import make_moon_like, make_tiny_imagenet_like
from .locate import find_moon, find_tiny_imagenet
