"""fastai_lab.data: everything about images. Datasets and their splits (`tiny_imagenet`, `moon`), where they are
(`locate`, `home`), reading and checking a file (`images`), augmentation (`augment`), the decoded-image cache
(`cache`), device-resident DataLoaders (`device`), a recipe's DataLoaders (`loaders.build_data`), offline
stand-ins (`synthetic`) and the Task 1 probes' images (`probes`)."""
from .tiny_imagenet import (TinyImageNetDataset, TinySplits, class_names, load_tiny_imagenet, read_wnids, read_words,
                            test_dl, tiny_imagenet_dls)
from .moon import binarize_mask, load_mask, mask_scheme, moon_dls, moon_pairs
from .synthetic import make_moon_like, make_tiny_imagenet_like
from .locate import find_moon, find_tiny_imagenet
