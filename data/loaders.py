"""A recipe's data: where it is, which classes and split, and its fastai DataLoaders (held in memory on the device).

`resolve_data(recipe)` makes the recipe explicit (the data folder found, the class list spelled out), so that the
recipe saved with a run names exactly the data it saw. `build_data(recipe)` gives the DataLoaders: every image is
decoded once into a cached uint8 tensor (`data.cache`, `data.device`), kept on the GPU when it fits, and batches are gathered
and augmented there. Decoding every image before the first epoch also checks every file: a bad one stops the
run up front with its path. The file path (fastai's usual per-item decoding) remains for data too big for memory.
"""
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import torch

from fastai_lab.data.locate import data_source, find_moon, find_tiny_imagenet, moon_places
from fastai_lab.data.moon import CODES, check_pair_sizes, moon_dls, moon_splits
from fastai_lab.data.tiny_imagenet import load_tiny_imagenet, read_wnids, parse_classes, tiny_imagenet_dls
from ..machine import default_device, loader_workers

__all__ = ['resolve_data', 'build_data', 'Data', 'real_moon_pair', 'MEMORY_SHARE']

MEMORY_SHARE = 0.25  # the in-memory path is used while the decoded images take at most this share of the RAM


@dataclass
class Data:
    "A recipe's DataLoaders and what a report needs to say about them."
    dls: object
    test_items: list = field(repr=False)
    names: list
    root: Path
    source: str
    info: dict

    def test_dl(self, items=None):
        "A labelled loader over the test items (Tiny ImageNet: the official val split; moon: the held-out frames)."
        return self.dls.test_dl(self.test_items if items is None else items, with_labels=True)

    @cached_property
    def real_pairs(self):
        """(place, pairs) of the real Kaggle frame(s) a U-Net is scored on after training (sim-to-real:
        `real_moon_pair`), or None (also for a classifier); looked up once, by `check` or the evaluation."""
        return real_moon_pair() if self.info['task'] == 'segment' else None

    @property
    def caveats(self):
        "What the numbers on this data cannot say (e.g. one frame, so nothing is held out); saved with every result."
        return self.info.get('caveats', [])

    def check(self, say=True):
        """Decode every image a run of this data reads that `build_data` has not decoded yet: the test items, the real
        Kaggle frame(s) a U-Net is scored on (`real_pairs`), and on the file path (data too big for memory) the
        train and valid items too. A file PIL cannot read stops here,
        before the first epoch, with its path. Each set is checked once: a mark under the cache's key remembers it.
        Segmentation: a split none of whose masks holds rock gets a caveat (its IoU and Dice are undefined).
        `say`: print the caveats found here. Returns self. Global RNG states are left as they were (the loaders made
        here draw their seeds from Python's `random`), so checking changes no run's numbers."""
        from ..machine import rng_preserved
        with rng_preserved(): self._check(say)
        return self

    def _check(self, say):
        from .cache import check_items, item_cache
        segment = self.info['task'] == 'segment'
        if self.info['data_path'] not in ('device', 'pinned', 'cpu'):  # the file path: nothing decoded yet
            for split, dl in (('train', self.dls.train), ('valid', self.dls.valid)):
                nonzero = check_items(dl, self.root)
                if segment and nonzero: self._no_rock_caveat(split, nonzero[1], say)
            if self.test_items:
                nonzero = check_items(self.test_dl(), self.root)
                if segment and nonzero: self._no_rock_caveat('test', nonzero[1], say)
        elif self.test_items:
            cached = item_cache(self.test_dl(), self.root)
            if segment: self._no_rock_caveat('test', bool(cached[1].as_subclass(torch.Tensor).any()), say)
        if segment:  # the real Kaggle frame(s) every U-Net run scores after training (sim-to-real)
            from .cache import check_item_files
            for pair in (self.real_pairs or (None, []))[1]: check_item_files(pair)

    def _no_rock_caveat(self, split, rock, say):
        "Add (and with `say` print) the caveat of a split whose masks hold no rock (`rock` False)."
        if rock: return
        text = (f"no mask of the {split} split contains rock: {split} IoU and Dice are undefined (no rock pixels), "
                f"only its pixel accuracy is scored")
        if text not in self.caveats:
            self.info.setdefault('caveats', []).append(text)
            if say: print(f"WARNING: {text}")


def resolve_data(recipe, say=False):
    """`recipe` with its data folder found (or generated) and, for Tiny ImageNet, its classes spelled out as wnids.
    `say`: print the notice when the data is a generated stand-in."""
    if recipe.task == 'classify':
        root, _ = find_tiny_imagenet(recipe.data, quiet=not say)
        wnids = parse_classes(recipe.classes, read_wnids(root), source=str(Path(root) / 'wnids.txt'))
        return replace(recipe, data=str(Path(root).resolve()), classes=','.join(wnids))
    root, _ = find_moon(recipe.data, quiet=not say)
    return replace(recipe, data=str(Path(root).resolve()))


def _fits_in_memory(n_images, size):
    try: available = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError): return True
    return n_images * 4 * size * size <= MEMORY_SHARE * available  # 3 image bytes + 1 mask byte a pixel


def build_data(recipe, device=None, say=True, in_memory=None):
    """The DataLoaders of a resolved `recipe` on `device` (default: this process's): in memory when they fit (`in_memory`
    None), else, or with `in_memory=False`, fastai's file path (items decoded per batch in worker processes).
    In memory, every train and valid image is decoded here (`Data.check` decodes the rest), so a bad file stops the
    caller with its path. `info['bs']` is the training batch used: the recipe's, capped at the training images."""
    device = device or default_device()
    fits = _fits_in_memory if in_memory is None else lambda *_: in_memory
    caveats = []
    if recipe.task == 'classify':
        root, source = find_tiny_imagenet(recipe.data, quiet=True)
        splits = load_tiny_imagenet(root, classes=recipe.classes, valid_pct=recipe.valid_pct, seed=recipe.split_seed,
                                    max_per_class=recipe.max_items)
        n = len(splits.train) + len(splits.valid)
        in_memory = fits(n, recipe.size)
        _check_first(splits.train + splits.valid)
        dls = tiny_imagenet_dls(splits, size=recipe.size, bs=recipe.bs, augment=recipe.augment,
                                train_on_valid=recipe.train_on_valid, device=device,
                                num_workers=0 if in_memory else loader_workers(), min_scale=recipe.min_scale)
        test, names = splits.test, splits.names
        info = dict(wnids=splits.wnids, classes=splits.names, n_train=len(splits.train), n_valid=len(splits.valid),
                    n_test=len(splits.test), split=splits.notes)
    else:
        root, source = find_moon(recipe.data, quiet=True)
        splits = moon_splits(root, recipe.valid_pct, recipe.test_pct, recipe.split_seed, recipe.max_items, say=False)
        check_pair_sizes(splits.train + splits.valid + splits.test)
        in_memory = fits(len(splits.train) + len(splits.valid), recipe.size)
        _check_first(splits.train + splits.valid)
        dls = moon_dls(splits, size=recipe.size, bs=recipe.bs, augment=recipe.augment, device=device,
                       num_workers=0 if in_memory else loader_workers())
        test, names = splits.test, CODES
        info = dict(n_train=len(splits.train), n_valid=len(splits.valid), n_test=len(splits.test), split=splits.notes,
                    held_out=not splits.shared)
        if splits.shared:
            caveats.append(f"only {len(splits.train)} frame ({splits.train[0][0].name}): it is the train, valid and "
                           f"test set at once, so the valid and test scores are NOT held out")
    if in_memory:
        from .device import to_device_dls
        dls = to_device_dls(dls, root, device=device)
    if torch.device(device).type == 'mps':  # an op MPS lacks runs that batch transform on the CPU (said) instead
        from .device import cpu_fallback
        dls = cpu_fallback(dls)
    path = getattr(dls, 'data_path', 'file') if in_memory else f'file ({loader_workers()} workers)'
    info.update(data=str(root), source=source, size=recipe.size, augment=recipe.augment, data_path=path,
                train_on_valid=recipe.train_on_valid, bs=dls.train.bs, task=recipe.task)
    if dls.train.bs < recipe.bs:
        info['bs_note'] = (f"batch {recipe.bs} capped at the {dls.train.bs} training "
                           f"{'images' if recipe.task == 'classify' else 'frames'}")
    info['caveats'] = caveats
    data = Data(dls, test, names, Path(root), source, info)
    if recipe.task == 'segment' and in_memory:  # the masks are decoded: say when a split has no rock at all
        for split, dl in (('train', dls.train), ('valid', dls.valid)):
            if getattr(dl, 'tensors', None) is not None:
                data._no_rock_caveat(split, bool(dl.tensors[1].any()), say=False)
    if say:
        counts = f"{info['n_train']} train / {info['n_valid']} valid / {info['n_test']} test"
        print(f"data: {root} ({source}); {counts} {'images' if recipe.task == 'classify' else 'frames'} at "
              f"{recipe.size} px, {path}" + ("; test = the official val split" if recipe.task == 'classify' else ''))
        if 'bs_note' in info:
            print(f"NOTICE: {info['bs_note']}: the batch used is {info['bs']} (config.json records it)")
        for text in caveats: print(f"WARNING: {text}")
    return data


def _check_first(items):
    """Decode the first training item's files: fastai's setup decodes it before any of the lab's checks, and its
    error does not name the file."""
    if items:
        from .cache import check_item_files
        check_item_files(items[0])


def real_moon_pair():
    "The real Kaggle render/ground pair(s) of a known place that is too small to train on (the sim-to-real check), or None."
    from fastai_lab.data.moon import moon_pairs
    for place in moon_places():
        try:
            pairs = moon_pairs(place)
        except (FileNotFoundError, ValueError): continue
        if pairs and data_source(place) == 'real': return place, pairs
    return None
