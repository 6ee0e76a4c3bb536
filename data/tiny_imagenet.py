"""Tiny ImageNet (T2.1, T3.1): the original on-disk layout as item lists, a torch `Dataset` and fastai `DataLoaders`.

Layout: ``wnids.txt``, ``words.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG``, ``val/val_annotations.txt``
The official test split has no labels, so the official train folder is split (stratified, seeded) into
train/valid and the official **val** split is used as the **test** set.
"""
import os, zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import ToTensor
from fastai.vision.all import (CategoryBlock, DataBlock, ImageBlock, IndexSplitter, ItemGetter, ItemTransform,
                               Normalize, Resize, ResizeMethod, imagenet_stats)

from .images import RGBImage, open_rgb

__all__ = ['read_wnids', 'read_words', 'class_names', 'parse_classes', 'TinySplits', 'load_tiny_imagenet',
           'valid_idxs', 'TinyImageNetDataset', 'tiny_imagenet_dls', 'test_dl']

IMAGE_SUFFIXES = {'.jpeg', '.jpg', '.png'}


def _need(path, what):
    "`path`, or a FileNotFoundError that says what was expected there."
    if not path.exists(): raise FileNotFoundError(f"{path}: not found (expected {what})")
    return path


def read_wnids(root):
    "The class ids listed in `root/wnids.txt`, in file order."
    return _need(Path(root)/'wnids.txt', 'the class list of Tiny ImageNet, one wnid a line').read_text().split()


def read_words(root, wnids=None):
    """`root/words.txt` as a dict wnid -> words (e.g. 'n02124075' -> 'Egyptian cat'); with `wnids`, theirs only, found
    in the file's bytes (the real file has 82k lines: decoding and splitting them all took 35 ms of every data build)."""
    path = _need(Path(root)/'words.txt', 'wnid<TAB>words lines')
    if wnids is None: return dict(line.split('\t', 1) for line in path.read_text().splitlines() if '\t' in line)
    data, words = b'\n' + path.read_bytes(), {}
    for w in wnids:
        line, start = f'\n{w}\t'.encode(), -1
        while (found := data.find(line, start + 1)) >= 0: start = found  # the last line of a wnid wins, as in the dict
        if start < 0: continue
        end = data.find(b'\n', start + 1)
        words[w] = data[start + len(line):end if end >= 0 else None].decode().rstrip('\r')
    return words


def class_names(wnids, words):
    "Short human names (first comma-separated part of the words); a name two classes share gets its wnid appended."
    short = [words.get(w, w).split(',')[0].strip() or w for w in wnids]
    return [f'{s} ({w})' if short.count(s) > 1 else s for s, w in zip(short, wnids)]


def valid_idxs(n, valid_pct, rng):
    "Sorted indices of the `valid_pct` share of `n` items drawn with `rng`; at least one each side when n >= 2."
    if not 0 <= valid_pct < 1: raise ValueError(f"valid_pct={valid_pct}: expected a fraction in [0, 1)")
    n_valid = min(max(round(valid_pct * n), int(valid_pct > 0)), n - 1) if n > 1 else 0
    return np.sort(rng.permutation(n)[:n_valid])


@dataclass
class TinySplits:
    "Item lists `(path, label_index)` of a Tiny ImageNet subset; `names[label_index]` is the class name."
    root: Path
    wnids: list
    names: list
    train: list = field(repr=False)
    valid: list = field(repr=False)
    test: list = field(repr=False)
    notes: str = ''

    def __str__(self):
        return (f"Tiny ImageNet at {self.root}: {len(self.names)} classes, {len(self.train)} train, "
                f"{len(self.valid)} valid, {len(self.test)} test ({self.notes})")


def _identity(path):
    "(device, inode) of the file `path` names, following links; None when there is none."
    try: st = os.stat(path)
    except FileNotFoundError: return None
    return st.st_dev, st.st_ino


def _class_images(root, wnid):
    """The image files of class `wnid`'s train folder, sorted by name, as `{name: (device, inode)}`. os.scandir gives
    the inode of a plain file without a stat call (a link is followed to the file it names): the real subset has 500
    files a class, and a data build lists them all before the quick profile's cap."""
    folder = _need(root/'train'/wnid/'images', f"the train images of class {wnid}, which wnids.txt lists")
    device = folder.stat().st_dev
    with os.scandir(folder) as entries:
        # '.'-files are not images: macOS leaves .DS_Store and '._<name>' AppleDouble files in copied folders
        found = {e.name: (device, e.inode()) if not e.is_symlink() else _identity(e.path) for e in entries
                 if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and not e.name.startswith('.')}
    if not found: raise ValueError(f"{folder}: no images (expected *.JPEG files of class {wnid})")
    return folder, dict(sorted(found.items()))


def _read_annotations(root):
    """Official val split as (path, wnid, identity) triples, in file order, each image once, and how many repeated
    lines were dropped. An image listed twice with two classes is refused, naming both lines. `identity` is the
    file's (device, inode), None for a missing file."""
    ann = _need(root/'val'/'val_annotations.txt', 'filename<TAB>wnid<TAB>box lines for val/images')
    rows, seen, repeated = [], {}, 0
    for i, line in enumerate(ann.read_text().splitlines(), 1):  # splitlines: some copies have CRLF lines
        if not line.strip(): continue
        parts = line.split('\t')
        if len(parts) < 2: raise ValueError(f"{ann}, line {i}: {line!r} (expected filename<TAB>wnid<TAB>boxes)")
        path, wnid = root/'val'/'images'/parts[0].strip(), parts[1].strip()
        identity = _identity(path)
        key = identity or os.path.realpath(path)  # the same file reached by two names (e.g. a symlink) counts once too
        if key in seen:
            first, had = seen[key]
            if had != wnid: raise ValueError(f"{ann}, line {i}: {parts[0].strip()} labelled {wnid}, but line {first} "
                                             f"labelled the same image {had} (expected one class per image)")
            repeated += 1
            continue
        seen[key] = (i, wnid)
        rows.append((path, wnid, identity))
    return rows, repeated


def _distinct(files):
    """The names of `files` (`{name: identity}`) without those that are the same file as an earlier one (symlinks,
    hard links), with their identities, and how many were dropped."""
    kept, seen = {}, set()
    for name, identity in files.items():
        if identity not in seen: seen.add(identity); kept[name] = identity
    return kept, len(files) - len(kept)


def parse_classes(spec, listed, source='wnids.txt'):
    """The wnids a --classes value names, from the `listed` ones: a count '10' (the first ten), 'count@offset'
    '10@20' (ten from the 21st on) or a comma-separated list of wnids."""
    text = str(spec).strip()
    if not text: raise ValueError(f"--classes {spec!r}: expected a count like 10, 10@20 or wnids like n01443537,n01629819")
    if text.replace('@', '').isdigit() and text.count('@') <= 1:
        n, _, offset = text.partition('@')
        n, offset = int(n), int(offset or 0)
        if n < 2: raise ValueError(f"--classes {spec!r}: expected at least 2 classes")
        if n + offset > len(listed):
            raise ValueError(f"--classes {spec!r}: {source} lists {len(listed)} classes, {n} were asked for"
                             + (f" from position {offset + 1}" if offset else ''))
        return listed[offset:offset + n]
    wnids = [w.strip() for w in text.split(',') if w.strip()]
    unknown = [w for w in wnids if w not in listed]
    if unknown: raise ValueError(f"--classes: unknown wnids {unknown}: not in {source}")
    if len(set(wnids)) < len(wnids): raise ValueError(f"--classes {spec!r}: each class may appear only once")
    if len(wnids) < 2: raise ValueError(f"--classes {spec!r}: expected at least 2 classes")
    return wnids


def load_tiny_imagenet(root, n_classes=10, wnids=None, valid_pct=0.2, seed=42, max_per_class=None, classes=None,
                       say=True):
    """Item lists of `n_classes` classes (the first ones of wnids.txt, or the explicit `wnids`, or the --classes
    value `classes`, see `parse_classes`).

    train/valid: seeded stratified split of ``train/`` (`valid_pct` of each class to valid).
    test: the official ``val/`` split, because the official test split has no labels.
    `max_per_class` caps the images per class (train, before the split, and test): the quick profile.
    Images are not opened here; unreadable files fail in `TinyImageNetDataset` / the DataLoaders, naming the file.
    Every image counts once: repeated annotation lines and files reached twice are dropped (`say`: with a notice)."""
    root = Path(root)
    if not root.is_dir(): raise FileNotFoundError(f"{root}: no such folder (expected Tiny ImageNet: wnids.txt, "
                                                  f"words.txt, train/, val/)")
    listed = read_wnids(root)
    if classes is not None: wnids = parse_classes(classes, listed, source=str(root/'wnids.txt'))
    if wnids is None:
        if n_classes > len(listed):
            raise ValueError(f"{root/'wnids.txt'} lists {len(listed)} classes, {n_classes} were asked for")
        wnids = listed[:n_classes]
    wnids = list(wnids)
    unknown = [w for w in wnids if w not in listed]
    if unknown: raise ValueError(f"unknown wnids {unknown}: not in {root/'wnids.txt'}")
    if len(set(wnids)) < len(wnids): raise ValueError(f"wnids {wnids}: each class may appear only once")
    cap = slice(max_per_class)
    train, valid, dropped, identities = [], [], 0, {}
    for label, wnid in enumerate(wnids):
        folder, files = _class_images(root, wnid)
        files, twice = _distinct(files)
        names, dropped = list(files)[cap], dropped + twice
        # A class's split depends only on (seed, wnid), not on which other classes were picked.
        v = set(valid_idxs(len(names), valid_pct, np.random.default_rng([seed, zlib.crc32(wnid.encode())])))
        for i, path in enumerate(folder/name for name in names):
            (valid if i in v else train).append((path, label))
            identities[files[path.name]] = path
    label_of, per_class = {w: i for i, w in enumerate(wnids)}, {w: 0 for w in wnids}
    test, test_identities = [], []
    annotated, repeated = _read_annotations(root)
    for path, wnid, identity in annotated:
        if wnid not in label_of or (max_per_class is not None and per_class[wnid] >= max_per_class): continue
        per_class[wnid] += 1
        test.append((path, label_of[wnid])); test_identities.append(identity)
    missing = [str(p) for (p, _), identity in zip(test, test_identities) if identity is None]
    if missing: raise FileNotFoundError(f"{len(missing)} test images named in {root/'val'/'val_annotations.txt'} "
                                        f"are missing, e.g. {missing[:5]}")
    twice = _reached_twice(identities, zip(test, test_identities), root)
    if twice: raise ValueError(twice)
    if say and (dropped or repeated):
        print(f"NOTICE: {root}: dropped {repeated} repeated line(s) of val/val_annotations.txt and {dropped} train "
              f"file(s) that are the same file as another; every image is counted once")
    notes = (f"test = official val (the official test split has no labels); train/valid = stratified split of "
             f"official train, valid_pct={valid_pct}, seed={seed}")
    return TinySplits(root, wnids, class_names(wnids, read_words(root, wnids)), train, valid, test, notes)


def _reached_twice(seen, test, root):
    """Why the test set is not held out when one of its files is a train/valid file too (a link), else ''.
    `seen`: {identity: train/valid path}; `test`: ((path, label), identity) pairs."""
    both = [(p, seen[identity]) for (p, _), identity in test if identity in seen]
    if not both: return ''
    return (f"{root/'val'/'val_annotations.txt'}: {len(both)} test image(s) are train/valid files too, e.g. "
            f"{both[0][0]} is {both[0][1]} (expected a held-out test set)")


class TinyImageNetDataset(torch.utils.data.Dataset):
    "`(image, label)` pairs from `(path, label_index)` items; images are RGB (some originals are grayscale)."
    def __init__(self, items, classes, transform=None):
        self.items, self.classes = list(items), list(classes)
        self.transform = transform or ToTensor()
        bad = [(str(p), y) for p, y in self.items if not 0 <= y < len(self.classes)]
        if bad: raise ValueError(f"labels outside 0..{len(self.classes) - 1}: {bad[:5]}")

    @classmethod
    def from_folder(cls, root, split='train', transform=None, **load_kwargs):
        "The `split` ('train', 'valid' or 'test') of `load_tiny_imagenet(root, **load_kwargs)`."
        if split not in ('train', 'valid', 'test'):
            raise ValueError(f"split={split!r}: expected 'train', 'valid' or 'test'")
        splits = load_tiny_imagenet(root, **load_kwargs)
        return cls(getattr(splits, split), splits.names, transform)

    def __len__(self): return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        try: img = open_rgb(path)
        except OSError as e: raise OSError(f"{path}: cannot read the image ({e})") from e
        return self.transform(img), label


class ClassName(ItemTransform):
    "`(path, label_index)` item -> its class name."
    def __init__(self, names): super().__init__(); self.names = names
    def encodes(self, item): return self.names[item[1]]


def tiny_imagenet_dls(splits, size=64, bs=128, augment='light', train_on_valid=False, val_bs=None, device=None,
                      num_workers=0, min_scale=0.35):
    """fastai DataLoaders over `splits.train` + `splits.valid` (the same items as `TinyImageNetDataset`).

    Images are resized to `size` (bilinear squish: 64 -> 128 for T3.1 upsamples the 64 px originals; at 64 they are
    left unchanged). `augment`: a preset of `data.augment` run as batch transforms (on the device), then ImageNet
    normalisation; True means 'light' (flips, rotation <= 10 deg, zoom <= 1.1, lighting), False 'none'.
    `train_on_valid`: the valid images are trained on too (the valid loader then holds seen images).
    `val_bs`: the validation batch (default: 4x `bs`; no gradients, so it fits). `min_scale`: the smallest crop of
    the 'rrc' preset."""
    from .augment import augment_tfms
    aug = augment_tfms({True: 'light', False: 'none'}.get(augment, augment), size=size, min_scale=min_scale)
    train = splits.train + (splits.valid if train_on_valid else [])
    block = DataBlock(blocks=(ImageBlock(RGBImage), CategoryBlock(vocab=splits.names, sort=False)),
                      get_x=ItemGetter(0), get_y=ClassName(splits.names),
                      splitter=IndexSplitter(range(len(train), len(train) + len(splits.valid))),
                      item_tfms=Resize(size, method=ResizeMethod.Squish),
                      batch_tfms=[*aug, Normalize.from_stats(*imagenet_stats)])
    # The train loader drops its last partial batch: a batch larger than the train set would leave it empty.
    bs = min(bs, len(train))
    return block.dataloaders(train + splits.valid, bs=bs, val_bs=val_bs or 4 * bs, device=device,
                             num_workers=num_workers)


def test_dl(dls, splits):
    "A labelled DataLoader over the test set (official val), with the transforms of `dls`."
    return dls.test_dl(splits.test, with_labels=True)


test_dl.__test__ = False  # pytest would collect an imported `test_dl` as a test
