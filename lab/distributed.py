"""Distributed training under torchrun (DDP): one model trained by several processes, of which rank 0 speaks and
writes. Everything the lab does differently under torchrun is here; without torchrun every function is a no-op.

Two fastai problems on CPUs are worked around: `DistributedDL._broadcast` only works on CUDA (patched for gloo), and
`to_detach` gathers whenever WORLD_SIZE > 1, which hung rank 0's evaluation after training (`evaluating_alone`).
"""
import os, sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

__all__ = ['dist_rank', 'is_rank0', 'is_distributed', 'init_distributed', 'broadcast_path', 'all_reduce_sum',
           'barrier', 'ddp_context', 'evaluating_alone']


def dist_rank():
    "This process's rank under torchrun (0 without distributed training)."
    return int(os.environ.get('RANK', 0))


def is_rank0(): return dist_rank() == 0


def is_distributed():
    "Whether this process is one of several training one model under torchrun (WORLD_SIZE > 1)."
    return int(os.environ.get('WORLD_SIZE', 1)) > 1


def init_distributed():
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPUs), take this rank's GPU, and
    silence the other ranks' stdout, so that one rank speaks and writes. A no-op otherwise."""
    if not is_distributed(): return
    import torch.distributed as dist
    if torch.cuda.is_available(): torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    if not dist.is_initialized(): dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')
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
