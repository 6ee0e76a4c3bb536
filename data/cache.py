"""Data decoded once, cached on disk, batches gathered on the device.

`item_cache` runs a fastai loader's item pipeline (open, decode, resize, to tensor) once for every item and keeps the
result as one uint8 tensor per tuple element in a `torch.save` file keyed by the files, their sizes and mtimes and the
item transforms. `DeviceDL` is a `TfmdDL` whose batches are gathered from those tensors (on the GPU when they fit,
pinned CPU memory otherwise) instead of decoded file by file; sampling, the batch transforms (augmentation,
normalisation), decoding and showing stay fastai's. `to_device_dls` swaps the train and valid loaders of a
`DataLoaders` for `DeviceDL`s. Item transforms run once, so they must not be random per epoch: put augmentation in the
batch transforms (`data.augment`). `lab.data.build_data` uses it for every recipe whose images fit in memory.

On Apple's MPS GPU the tensors sit in its (unified) memory when they fit and can be gathered there, else in CPU memory
(each batch copied over), said in one line; `cpu_fallback` runs a batch transform that needs an op MPS lacks on the
CPU instead, said once, rather than stopping the run.
"""
import hashlib, importlib, itertools, json, os, random, re, stat, warnings
from functools import partial
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from fastai.data.core import TfmdDL
from fastai.torch_core import to_device
from fastai.vision.augment import RandTransform, Resize, ResizeMethod
from fasttransform.transform import Pipeline

from fastai_lab.data.locate import data_home
from ..io import atomic_write
from ..machine import default_device

__all__ = ['CACHE_VERSION', 'rng_preserved', 'cache_dir_for', 'item_cache', 'check_items', 'check_item_files',
           'is_image_file', 'DeviceDL', 'to_device_dls', 'FallbackPipeline', 'cpu_fallback']

CACHE_VERSION = 1  # bump when the file format or what a cache holds changes: old files then stop matching
GiB = 2**30


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

@contextmanager
def rng_preserved():
    "Restore python, numpy and torch (CPU and initialised CUDA) RNG states afterwards, so caching changes no numbers."
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try: yield
    finally:
        random.setstate(states[0]); np.random.set_state(states[1]); torch.set_rng_state(states[2])
        if cuda is not None: torch.cuda.set_rng_state_all(cuda)


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


# ----- the loader ---------------------------------------------------------------------------------------------------

class DeviceDL(TfmdDL):
    """A `TfmdDL` gathering whole batches from tensors of the item pipeline's output (see `item_cache`).

    fastai draws the sample indices (so `dl.rng`, shuffling and `DistributedDL` work as usual); `create_batches` turns
    them into one index tensor per epoch on the tensors' device and yields the gathered, typed batches. Without a
    cache (`tensors` None) it is a plain `TfmdDL`."""
    def __init__(self, dataset=None, bs=64, shuffle=False, num_workers=None, **kwargs):
        # Set before TfmdDL.__init__: a transform's setup may draw a batch, and a missing attribute would be looked up
        # on the dataset (DataLoader delegates unknown attributes to it).
        self.tensors, self.types, self._pinned, self._file_kwargs = None, None, False, {}
        super().__init__(dataset, bs=bs, shuffle=shuffle, num_workers=num_workers, **kwargs)

    @classmethod
    def from_dl(cls, dl, tensors, device=None):
        "A `DeviceDL` like `dl` (dataset, transforms, bs, shuffle, drop_last, rng state) over `tensors`, on `device`."
        if dl.bs is None or not dl.indexed:
            raise ValueError("DeviceDL.from_dl: dl must batch an indexed dataset (expected bs set, as TfmdDL does)")
        if len(dl.before_batch.fs):
            raise ValueError(f"DeviceDL.from_dl: before_batch {dl.before_batch} works on lists of items; a DeviceDL "
                             f"gathers whole batches (expected no before_batch transforms)")
        with rng_preserved():  # DataLoader.__init__ draws its rng seed from python's random
            # num_workers=0: the gather is one indexing op, and worker processes cannot share GPU tensors anyway.
            res = dl.new(cls=cls, num_workers=0, pin_memory=False)
        res.rng = random.Random()
        res.rng.setstate(dl.rng.getstate())  # the same epoch orders as `dl` would have drawn
        res._file_kwargs = dl._file_kwargs if isinstance(dl, DeviceDL) else dict(
            num_workers=dl.fake_l.num_workers, pin_memory=dl.pin_memory)
        res._use(tensors, dl)
        if device is not None: res.to(device)
        return res

    def _use(self, tensors, dl=None):
        "Keep `tensors` (plain storage + the fastai type of each element)."
        tensors = tuple(tensors)
        n = len(self.dataset)
        if not tensors or any(len(t) != n for t in tensors) or len({t.device for t in tensors}) != 1:
            raise ValueError(f"DeviceDL: tensors of lengths {[len(t) for t in tensors]} on "
                             f"{sorted({str(t.device) for t in tensors})}: expected {n} rows each (one per dataset "
                             f"item), all on one device")
        # Plain tensors get the types the loader's batches have (TensorImage...), so the batch transforms dispatch.
        known = getattr(dl, '_types', None)
        known = next(iter(known.values())) if isinstance(known, dict) else None
        if known is None or len(known) != len(tensors): known = [None] * len(tensors)
        self.types = tuple(type(t) if type(t) is not Tensor or k is None else k for t, k in zip(tensors, known))
        self.tensors = tuple(t.as_subclass(Tensor) for t in tensors)
        self._pinned = self.tensors[0].device.type == 'cpu' and self.tensors[0].is_pinned()

    def new(self, dataset=None, cls=None, **kwargs):
        "Keeps the cache for the same dataset and item transforms; another dataset (test_dl, new_empty) gets a TfmdDL."
        same = ((dataset is None or dataset is self.dataset) and self.tensors is not None
                and kwargs.get('after_item', self.after_item) is self.after_item
                and kwargs.get('before_batch', self.before_batch) is self.before_batch)
        if not same:
            return super().new(dataset, TfmdDL if cls is None else cls, **{**self._file_kwargs, **kwargs})
        res = super().new(dataset, cls, **kwargs)
        if isinstance(res, DeviceDL):
            res.tensors, res.types, res._pinned, res._file_kwargs = (self.tensors, self.types, self._pinned,
                                                                      self._file_kwargs)
        return res

    def _gather(self, idx):
        "The typed batch of rows `idx` (a tensor on the storage device), on `self.device`."
        dev, out = self.device, []
        for t, typ in zip(self.tensors, self.types):
            if self._pinned and dev is not None and dev.type == 'cuda':
                # Gather straight into pinned memory so the host-to-device copy is asynchronous.
                g = torch.empty((len(idx), *t.shape[1:]), dtype=t.dtype, pin_memory=True)
                torch.index_select(t, 0, idx, out=g)
                g = g.to(dev, non_blocking=True)
            else:
                g = t.index_select(0, idx)
                if dev is not None: g = g.to(dev)
            out.append(g.as_subclass(typ))
        return tuple(out)

    def create_batches(self, samps):
        "Gathered batches of the sample indices `samps`, `bs` at a time (the last partial one unless `drop_last`)."
        if self.tensors is None:
            yield from super().create_batches(samps)
            return
        n, bs = len(self.tensors[0]), self.bs
        # A whole epoch in one block (one index copy to the device, no per-batch host sync), read lazily all the same:
        # show_batch(unique=True) samples an endless stream of zeros.
        block, samps = -(-max(n, 1) // bs) * bs, iter(samps)
        while True:
            idxs = torch.as_tensor(list(itertools.islice(samps, block)), dtype=torch.long)
            if not len(idxs): return
            if idxs.min() < 0 or idxs.max() >= n:
                raise IndexError(f"DeviceDL: sample indices {idxs.min().item()}..{idxs.max().item()} outside the "
                                 f"{n} cached items")
            for b in idxs.to(self.tensors[0].device).split(bs):  # a block is whole batches but for the last one
                if self.drop_last and len(b) < bs: return
                yield self._gather(b)
            if len(idxs) < block: return


def _storage(device, nbytes):
    """Where `nbytes` of cached tensors for `device` live: 'device' when its free memory exceeds twice their size plus
    1 GiB (MPS: the GPU's recommended share of the unified memory), else 'pinned' CPU memory on CUDA, else 'cpu'."""
    if device.type == 'cuda': return 'device' if torch.cuda.mem_get_info(device)[0] > 2 * nbytes + GiB else 'pinned'
    if device.type == 'mps':
        try: free = torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
        except (AttributeError, RuntimeError): return 'device'  # an older torch: try, `_on_device` falls back
        return 'device' if free > 2 * nbytes + GiB else 'cpu'
    return 'cpu' if device.type == 'cpu' else 'device'


def _one_line(e): return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _on_device(caches, device):
    """`caches` moved to `device`, and one row gathered there as `DeviceDL` does; on MPS an op it lacks (or too
    little memory) keeps them in CPU memory instead, said in one line (None is returned then)."""
    try:
        moved = [tuple(t.to(device) for t in c) for c in caches]
        for c in moved:
            for t in c: t.index_select(0, torch.zeros(1, dtype=torch.long, device=device))
        return moved
    except (RuntimeError, NotImplementedError, TypeError) as e:
        if device.type != 'mps': raise
        print(f"NOTICE: the decoded images cannot be gathered on {device} ({_one_line(e)}): they stay in CPU memory "
              f"and each batch is copied over", flush=True)
        return None


def to_device_dls(dls, root, device=None):
    """`dls` with train and valid replaced by `DeviceDL`s over `item_cache(dl, root)`.

    device: `device`, else `dls.device`, else this process's (`lab.machine.default_device`). On CUDA the tensors stay
    on the GPU when free memory exceeds twice their size plus 1 GiB, else they are pinned in CPU memory and each batch
    is copied asynchronously; on MPS they stay on the GPU likewise, else (or when it cannot gather them) in CPU memory.
    The result records the path taken in `data_path`: 'device', 'pinned' or 'cpu'."""
    if device is None: device = getattr(dls, 'device', None)
    if device is None: device = default_device()
    device = torch.device(device)
    cached = [dl for dl in (dls.train, dls.valid) if len(dl.dataset)]  # an empty valid set keeps its loader
    caches = [item_cache(dl, root) for dl in cached]
    where = _storage(device, sum(t.nbytes for c in caches for t in c))
    if where == 'device':
        moved = _on_device(caches, device)
        if moved is None: where = 'cpu'
        else: caches = moved
    elif where == 'pinned': caches = [tuple(t.pin_memory() for t in c) for c in caches]
    swap = {id(dl): DeviceDL.from_dl(dl, c, device) for dl, c in zip(cached, caches)}
    res = type(dls)(*(swap.get(id(dl), dl) for dl in dls.loaders), path=dls.path, device=device)
    res.data_path = where
    return res


# ----- MPS: an op it lacks runs on the CPU ---------------------------------------------------------------------------

def _missing_op(e):
    "Whether `e` says the device lacks an op or dtype (MPS: NotImplementedError, or a message naming MPS)."
    return isinstance(e, NotImplementedError) or (isinstance(e, (RuntimeError, TypeError)) and 'mps' in str(e).lower())


def _device_of(b):
    "The device of the first tensor in batch `b`."
    for o in (b if isinstance(b, (tuple, list)) else (b,)):
        if isinstance(o, Tensor): return o.device
    return None


class FallbackPipeline(Pipeline):
    """A loader's batch transforms, each on the batch's device until it needs an op that device lacks (Apple's MPS):
    that transform then runs on the CPU, now and for the rest of the run (the batch copied over and back), said in
    one line; the others stay on the device. The same transforms and decodes as the Pipeline it wraps."""
    def __init__(self, funcs=None, split_idx=None):
        super().__init__(funcs, split_idx)
        self.on_cpu = set()  # the names of the transforms that run on the CPU

    def __call__(self, o):
        for f in self.fs:
            name = type(f).__name__
            if name not in self.on_cpu:
                try:
                    o = f(o, split_idx=self.split_idx)
                    continue
                except (NotImplementedError, RuntimeError, TypeError) as e:
                    if not _missing_op(e): raise
                    self.on_cpu.add(name)
                    print(f"NOTICE: batch transform {name} needs an op {_device_of(o)} lacks ({_one_line(e)}): it runs "
                          f"on the CPU from now on", flush=True)
            device = _device_of(o)
            o = to_device(f(to_device(o, 'cpu'), split_idx=self.split_idx), device)
        return o


def cpu_fallback(dls):
    """`dls` whose train and valid loaders run their batch transforms through `FallbackPipeline` (for MPS), and so do
    their copies: fastai's `dl.new()` (`test_dl`, `new_empty`) rebuilds a plain Pipeline from the transforms."""
    for dl in (dls.train, dls.valid): _with_fallback(dl)
    return dls


def _with_fallback(dl, on_cpu=()):
    if not isinstance(dl.after_batch, FallbackPipeline):
        dl.after_batch = FallbackPipeline(dl.after_batch, split_idx=dl.after_batch.split_idx)
        dl.after_batch.on_cpu |= set(on_cpu)  # what already failed on the device stays on the CPU
    dl.new = partial(_new_with_fallback, dl)
    return dl


def _new_with_fallback(dl, *args, **kwargs):
    return _with_fallback(type(dl).new(dl, *args, **kwargs), dl.after_batch.on_cpu)
