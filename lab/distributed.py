"""Distributed training under torchrun (DDP): one model trained by several processes, of which rank 0 speaks and
writes. Everything the lab does differently under torchrun is here; without torchrun every function is a no-op.

Two fastai problems on CPUs are worked around: `DistributedDL._broadcast` only works on CUDA (patched for gloo), and
`to_detach` gathers whenever WORLD_SIZE > 1, which hung rank 0's evaluation after training (`evaluating_alone`).
"""
import os, sys
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path

import torch

__all__ = ['dist_rank', 'is_rank0', 'is_distributed', 'world_size', 'init_distributed', 'DIST_TIMEOUT_MIN',
           'broadcast_path', 'gather_objects', 'all_reduce_sum', 'barrier', 'ddp_context', 'evaluating_alone',
           'on_rank0', 'real_items', 'check_shards']

# Rank 0 evaluates and writes the test report while the others wait in a collective: NCCL's 10-minute default
# watchdog would kill them during a long report. --dist-timeout sets it.
DIST_TIMEOUT_MIN = 120


def dist_rank():
    "This process's rank under torchrun (0 without distributed training)."
    return int(os.environ.get('RANK', 0))


def is_rank0(): return dist_rank() == 0


def is_distributed():
    "Whether this process is one of several training one model under torchrun (WORLD_SIZE > 1)."
    return int(os.environ.get('WORLD_SIZE', 1)) > 1


def world_size(): return int(os.environ.get('WORLD_SIZE', 1))


def init_distributed(timeout_min=DIST_TIMEOUT_MIN):
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPUs) with a collective timeout
    of `timeout_min` minutes, take this rank's GPU, and silence the other ranks' stdout, so that one rank speaks and
    writes. A no-op otherwise."""
    if not is_distributed(): return
    import torch.distributed as dist
    if torch.cuda.is_available(): torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    if not dist.is_initialized():
        dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo', timeout=timedelta(minutes=timeout_min))
    if not is_rank0(): sys.stdout = open(os.devnull, 'w')


def _group():
    "Whether a process group of more than one process is running."
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_path(path):
    "Under torchrun, rank 0's `path` on every rank (all ranks must read and load the same checkpoints)."
    if not _group(): return path
    import torch.distributed as dist
    box = [str(path) if path is not None else None]
    dist.broadcast_object_list(box, src=0)
    return Path(box[0])


def all_reduce_sum(t):
    "`t` summed over the processes of a distributed run (DDP under torchrun); `t` itself otherwise."
    if _group():
        import torch.distributed as dist
        t = t.clone(); dist.all_reduce(t)
    return t


def gather_objects(obj):
    "[`obj` of rank 0, of rank 1, ...] on every rank under torchrun (picklable objects); [`obj`] otherwise."
    if not _group(): return [obj]
    import torch.distributed as dist
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier():
    "Wait for every process (a no-op without a process group)."
    if _group():
        import torch.distributed as dist
        dist.barrier()


def _broadcast_on_backend(self, t, rank):
    "fastai's DistributedDL broadcasts the epoch's shuffled indices on CUDA only; gloo (CPU DDP) needs CPU tensors."
    import torch.distributed as dist
    t = torch.tensor(t, dtype=torch.long, device='cuda' if dist.get_backend() == 'nccl' else 'cpu')
    dist.broadcast(t, rank)
    return t.cpu().tolist()


def ddp_context(learn):
    "fastai's `distrib_ctx` under torchrun (synchronised BatchNorm on GPUs, gloo on CPUs); a no-op context otherwise."
    if not is_distributed(): return nullcontext()
    import fastai.distributed  # adds Learner.distrib_ctx
    fastai.distributed.DistributedDL._broadcast = _broadcast_on_backend
    kw = {} if torch.cuda.is_available() else dict(cpu=True)
    return learn.distrib_ctx(sync_bn=torch.cuda.is_available(), **kw)


@contextmanager
def evaluating_alone():
    "Rank 0 evaluating by itself after DDP: fastai gathers predictions from every process whenever WORLD_SIZE > 1."
    world = os.environ.get('WORLD_SIZE')
    if world: os.environ['WORLD_SIZE'] = '1'
    try: yield
    finally:
        if world: os.environ['WORLD_SIZE'] = world


def on_rank0(fn):
    """`fn()` computed once, by rank 0 alone on the whole (unsharded) data, and its picklable result broadcast to every
    rank: the numbers are those of one process, whatever the number of processes. `fn()` itself without torchrun."""
    if not _group(): return fn()
    import torch.distributed as dist
    box = [None]
    if is_rank0():
        with evaluating_alone(): box[0] = fn()
    dist.broadcast_object_list(box, src=0)
    return box[0]


def real_items(dl, n_batch):
    """How many of the batch of `n_batch` items that `dl` just gave are real: fastai's `DistributedDL` pads the last
    shard with repeats of the first items (so that every rank has as many), and trims them in `get_preds` only; the
    metrics must drop them too. `n_batch` for any other loader."""
    if type(dl).__name__ != 'DistributedDL' or not all(hasattr(dl, a) for a in ('i', 'n', 'n_padded')): return n_batch
    start = dl.rank * dl.n_padded // dl.world_size + dl.i - n_batch  # this batch's place in the padded order
    return max(0, min(n_batch, dl.n - start))


def check_shards(n_train, bs, world=None):
    """Refuse, before anything is trained, a torchrun run whose processes would each get fewer training images than
    one batch: fastai's DistributedDL shards the images and each process drops its last partial batch: none trains."""
    world = world or world_size()
    if world <= 1: return
    per_rank = -(-n_train // world)
    if per_rank < bs:
        raise ValueError(f"--bs {bs}: under torchrun each of the {world} processes trains on {per_rank} of the "
                         f"{n_train} training images, fewer than one batch; pass --bs {per_rank} or less, or use "
                         f"fewer processes")
