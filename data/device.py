"""Batches gathered on the device from the decoded-image caches (`data.cache.item_cache`).

`DeviceDL` is a `TfmdDL` whose batches are gathered from those tensors (on the GPU when they fit, pinned CPU memory
otherwise) instead of decoded file by file; sampling, the batch transforms (augmentation, normalisation), decoding and
showing stay fastai's. `to_device_dls` swaps the train and valid loaders of a `DataLoaders` for `DeviceDL`s.
`data.loaders.build_data` uses it for every recipe whose images fit in memory.

On Apple's MPS GPU the tensors sit in its (unified) memory when they fit and can be gathered there, else in CPU memory
(each batch copied over), said in one line; `cpu_fallback` runs a batch transform that needs an op MPS lacks on the
CPU instead, said once, rather than stopping the run.
"""
import itertools, random

import torch
from torch import Tensor
from fastai.data.core import TfmdDL
from fastai.torch_core import to_device
from fasttransform.transform import Pipeline

from .cache import item_cache
from ..machine import default_device, rng_preserved

__all__ = ['DeviceDL', 'to_device_dls', 'FallbackPipeline', 'cpu_fallback']

GiB = 2**30


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
    "`dls` whose train and valid loaders run their batch transforms through `FallbackPipeline` (for MPS)."
    for dl in (dls.train, dls.valid):
        if not isinstance(dl.after_batch, FallbackPipeline):
            dl.after_batch = FallbackPipeline(dl.after_batch, split_idx=dl.after_batch.split_idx)
    return dls
