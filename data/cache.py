"""Images decoded once and cached on disk: where caches go, their keys, and the checks that decode every item.

`item_cache` runs a fastai loader's item pipeline (open, decode, resize, to tensor) once for every item and keeps the
result as one uint8 tensor per tuple element in a `torch.save` file keyed by the files, their sizes and mtimes and the
item transforms. `check_items` decodes data read file by file once and keeps only a mark that it passed. Item
transforms run once, so they must not be random per epoch: put augmentation in the batch transforms (`data.augment`).
`data.device.to_device_dls` serves batches from these caches.
"""
import hashlib, importlib, json, os, re, stat, warnings
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from fastai.vision.augment import RandTransform, Resize, ResizeMethod

from .home import data_home
from ..io import atomic_write
from ..machine import rng_preserved

__all__ = ['CACHE_VERSION', 'cache_dir_for', 'item_cache', 'check_items', 'check_item_files', 'is_image_file']

CACHE_VERSION = 1  # bump when the file format or what a cache holds changes: old files then stop matching



# ----- where caches go ----------------------------------------------------------------------------------------------

def _writable(folder):
    "Whether the current user may write `folder` by its permission bits (root passes `os.access` regardless)."
    st = folder.stat()
    if st.st_uid == os.geteuid(): bit = stat.S_IWUSR
    elif st.st_gid == os.getegid() or st.st_gid in os.getgroups(): bit = stat.S_IWGRP
    else: bit = stat.S_IWOTH
    return bool(st.st_mode & bit) and os.access(folder, os.W_OK)


def cache_dir_for(root):
    """`<root>/.lab-cache` when `root` is writable, else `<fastai data folder>/lab-cache/<name>-<hash of the root>`.

    Read-only data (e.g. the shared ``dr-xr-xr-x`` folders) is never written to, even when running as root."""
    root = Path(root).resolve()
    if not root.is_dir(): raise FileNotFoundError(f"{root}: no such folder (expected the data folder of the cache)")
    cache = root/'.lab-cache'
    if _writable(root) and (not cache.exists() or _writable(cache)): return cache
    return data_home()/'lab-cache'/f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:10]}"


# ----- cache keys ---------------------------------------------------------------------------------------------------

_ADDRESS = re.compile(r' at 0x[0-9a-fA-F]+')  # default reprs hold memory addresses, which differ from run to run


def _qualname(o):
    return f"{getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', type(o).__qualname__)}"


def _describe(v, depth=0):
    "A run-independent description of a transform setting: simple values, types and functions by name, else the type."
    if v is None or isinstance(v, (bool, int, float, str, bytes, Path)): return repr(v)
    if depth > 4: return type(v).__qualname__
    if isinstance(v, dict): return '{' + ', '.join(f'{k!r}: {_describe(x, depth + 1)}' for k, x in v.items()) + '}'
    if isinstance(v, (list, tuple)) or type(v).__name__ in ('L', 'CategoryMap'):
        return '[' + ', '.join(_describe(x, depth + 1) for x in v) + ']'
    if isinstance(v, type): return _qualname(v)
    if type(v).__module__.startswith('plum') and hasattr(v, 'methods'):  # a Transform made from a function holds one
        return '<' + ', '.join(_describe(getattr(m, 'implementation', m), depth + 1) for m in v.methods) + '>'
    if callable(v) and hasattr(v, '__qualname__'):
        # Bound classmethods (PILImage.create vs PILImageBW.create) differ only by what they are bound to.
        owner = getattr(v, '__self__', None)
        if owner is None: return _qualname(v)
        return f"{_qualname(v)} of {_qualname(owner if isinstance(owner, type) else type(owner))}"
    return type(v).__qualname__


def _describe_pipeline(p):
    "repr of a Pipeline plus each transform's settings (reprs leave some out, e.g. RockMask's `large_only`)."
    fs = getattr(p, 'fs', [])
    return _ADDRESS.sub('', repr(p)) + ''.join(
        f"\n  {_qualname(type(f))} {_describe({k: v for k, v in sorted(vars(f).items()) if k != '__signature__'})}"
        for f in fs)


def _leaves(item):
    "The scalars of an item, nested tuples/lists flattened."
    if isinstance(item, (list, tuple)):
        for o in item: yield from _leaves(o)
    else: yield item


def _file_stat(o):
    "os.stat of `o` when it is a str/path naming an existing regular file, else None."
    if not isinstance(o, (str, os.PathLike)): return None
    try: st = os.stat(o)
    except (OSError, ValueError): return None
    return st if stat.S_ISREG(st.st_mode) else None


def _item_files(item):
    "The paths of the leaves of `item` that name existing files."
    return [Path(o) for o in _leaves(item) if _file_stat(o) is not None]


def _where(ds, i):
    "The first file of item `i` of `ds`, for error messages, else 'item i'."
    return next(iter(map(str, _item_files(ds.items[i]))), f"item {i}")


def _cache_key(dl):
    "sha1 over the format version, the split, the item transforms and every item (files with size and mtime)."
    ds = dl.dataset
    h = hashlib.sha1(f"version {CACHE_VERSION}\nsplit {getattr(ds, 'split_idx', None)}\n".encode())
    for p in [tl.tfms for tl in ds.tls] if hasattr(ds, 'tls') else [getattr(ds, 'tfms', None)]:
        h.update(f"tfms {_describe_pipeline(p)}\n".encode())
    h.update(f"after_item {_describe_pipeline(dl.after_item)}\n".encode())
    for item in ds.items:
        leaves = [(o, _file_stat(o)) for o in _leaves(item)]
        h.update(repr([(str(Path(o).absolute()), st.st_size, st.st_mtime_ns) if st else repr(o)
                       for o, st in leaves]).encode() + b'\n')
    return h.hexdigest()


# ----- building and storing -----------------------------------------------------------------------------------------

def is_image_file(path):
    "Whether `path` has the suffix of an image format PIL reads (a mask or render, not a label file)."
    return Path(path).suffix.lower() in Image.registered_extensions()


def check_item_files(item):
    """Decode every image file of `item` (a path, or a tuple such as (path, label) or (render, mask)) in full; a
    ValueError naming the first file PIL cannot read (`fastai_lab.data.images.check_image`)."""
    from .images import check_image
    for p in _item_files(item):
        if is_image_file(p): check_image(p)


def _do_item(dl, i):
    "`dl.do_item(i)`; an error names the file: an undecodable image, or the item whose pipeline failed."
    try: item = dl.do_item(i)
    except Exception as e:
        paths = _item_files(dl.dataset.items[i])
        try: check_item_files(dl.dataset.items[i])
        except ValueError as bad: raise bad from e
        if any(str(e).startswith(str(p)) for p in paths): raise  # already names its file (e.g. load_mask)
        where = paths[0] if paths else f"item {i} ({dl.dataset.items[i]!r})"
        raise ValueError(f"{where}: the item pipeline failed ({type(e).__name__}: {e})") from e
    if not isinstance(item, tuple) or not all(isinstance(o, Tensor) for o in item):
        raise TypeError(f"{_where(dl.dataset, i)}: the item pipeline gave {type(item).__name__}, expected a tuple of "
                        f"tensors (a fastai Datasets with a ToTensor item transform)")
    return item


def _build(dl):
    "Run the item pipeline of `dl` over its whole dataset: one stacked tensor per tuple element, typed like the items."
    ds, n = dl.dataset, len(dl.dataset)
    if n == 0: raise ValueError("item_cache: the loader's dataset is empty (expected at least one item)")
    old_split = dl.after_item.split_idx
    dl.after_item.split_idx = getattr(ds, 'split_idx', None)  # as TfmdDL.before_iter would set it
    try:
        with rng_preserved():
            first = _do_item(dl, 0)
            out = [torch.empty((n, *o.shape), dtype=o.dtype) for o in first]
            for i in range(n):
                item = first if i == 0 else _do_item(dl, i)
                got, want = [(o.shape, o.dtype) for o in item], [(o.shape, o.dtype) for o in first]
                if got != want:
                    raise ValueError(f"{_where(ds, i)}: the item pipeline gave {got}, item 0 gave {want} (expected one "
                                     f"size and dtype for all: resize in item_tfms)")
                for k, o in enumerate(item): out[k][i] = o
    finally: dl.after_item.split_idx = old_split
    return tuple(t.as_subclass(type(o)) for t, o in zip(out, first))


def _type_name(cls): return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(name):
    "The Tensor subclass `module:qualname` names; ValueError when it is not one."
    mod, _, qual = name.partition(':')
    obj = importlib.import_module(mod)
    for part in qual.split('.'): obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Tensor)): raise ValueError(f"{name}: not a Tensor type")
    return obj


def _load(path, key):
    "The typed tensors stored at `path` under `key`, or None when absent, stale or unreadable (then it is rebuilt)."
    if not path.is_file(): return None
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
        if data['version'] != CACHE_VERSION or data['key'] != key: return None
        tensors = tuple(t.as_subclass(_resolve(n)) for t, n in zip(data['tensors'], data['types'], strict=True))
        if not tensors or len({len(t) for t in tensors}) != 1: return None
        return tensors
    except Exception:  # a corrupt or truncated file (e.g. a killed run on a filesystem without atomic rename)
        return None


def _save(path, key, tensors):
    "Write the cache atomically; a failure to write only warns: the run goes on."
    data = {'version': CACHE_VERSION, 'key': key, 'types': [_type_name(type(t)) for t in tensors],
            'tensors': [t.as_subclass(Tensor).contiguous() for t in tensors]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp: torch.save(data, tmp)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        warnings.warn(f"{path}: could not write the item cache ({e}); this run keeps it in memory only")


def _random_item_tfms(dl):
    "The item transforms of a training loader whose output changes from epoch to epoch (a cache would freeze them)."
    if getattr(dl.dataset, 'split_idx', None) != 0: return []
    # Resize is a RandTransform: its crop and pad methods place the window at random on the training split.
    return [f for f in dl.after_item.fs if isinstance(f, RandTransform) and f.split_idx in (None, 0)
            and not (isinstance(f, Resize) and f.method == ResizeMethod.Squish and f.p == 1)]


def item_cache(dl, root):
    """The item pipeline's output (`dl.do_item(i)`) for every item of `dl.dataset`, stacked per tuple element.

    E.g. Tiny ImageNet: (TensorImage uint8 (N,3,H,W), TensorCategory (N,)); moon: (TensorImage, TensorMask (N,H,W)).
    Built once and kept in `cache_dir_for(root)`/<sha1 key>.pt; the key covers every item's files (path, size, mtime),
    the item transforms and `CACHE_VERSION`, so changed files or another size rebuild it. Global RNG states are left
    as they were. An image that cannot be decoded raises a ValueError starting with its path."""
    if not hasattr(dl.dataset, 'items'):
        raise TypeError(f"item_cache: {type(dl.dataset).__name__} dataset has no `items` (expected a fastai Datasets)")
    rand = _random_item_tfms(dl)
    if rand:
        raise ValueError(f"item_cache: item transform(s) {[type(f).__name__ for f in rand]} of the training loader are "
                         f"random per epoch and a cache would freeze them (expected them in batch_tfms, e.g. "
                         f"data.augment presets, with Resize(method='squish') as the item transform)")
    key = _cache_key(dl)
    path = cache_dir_for(root)/f'{key}.pt'
    tensors = _load(path, key)
    if tensors is None:
        tensors = _build(dl)
        _save(path, key, tensors)
    return tensors


def check_items(dl, root):
    """Run the item pipeline of `dl` over its whole dataset once and keep nothing but a mark that it passed
    (`<key>.checked` beside the caches, under the same key as `item_cache`): the check of data read file by file
    (too big to cache in memory). An item that fails raises, naming its file, as in `item_cache`. Returns, per tuple
    element, whether it was nonzero anywhere (e.g. whether any mask holds rock), as `item_cache`'s tensors tell."""
    if not hasattr(dl.dataset, 'items') or not len(dl.dataset): return ()
    key = _cache_key(dl)
    mark = cache_dir_for(root)/f'{key}.checked'
    try: return tuple(json.loads(mark.read_text())['nonzero'])
    except (OSError, ValueError, KeyError, TypeError): pass  # no mark yet (or an unreadable one): check
    old_split = dl.after_item.split_idx
    dl.after_item.split_idx = getattr(dl.dataset, 'split_idx', None)
    nonzero = None
    try:
        with rng_preserved():
            for i in range(len(dl.dataset)):
                seen = [bool(o.as_subclass(Tensor).any()) for o in _do_item(dl, i)]
                nonzero = seen if nonzero is None else [a or b for a, b in zip(nonzero, seen)]
    finally: dl.after_item.split_idx = old_split
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(mark) as tmp: tmp.write_text(json.dumps(dict(items=len(dl.dataset), nonzero=nonzero)))
    except OSError: pass  # the check is redone next time
    return tuple(nonzero)
