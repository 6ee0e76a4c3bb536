"""The machine a run is on: its device, torch threads, loader workers and precision, and the provenance of a number
(device, library versions, host, git commit) that every run's config.json records."""
import os, platform, socket, subprocess, sys
from datetime import datetime
from pathlib import Path

import torch

__all__ = ['default_device', 'loader_workers', 'cpu_threads', 'use_bf16', 'n_gpus', 'has_gpu', 'environment_info',
           'git_state']

REPO = Path(__file__).resolve().parents[1]


def n_gpus():
    "Visible CUDA GPUs."
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def has_gpu():
    "Whether this process can train on a GPU (the full profile's default)."
    return torch.cuda.is_available()


def loader_workers():
    "DataLoader worker processes for the file path: decoding in parallel feeds a GPU; on a CPU the main process is faster."
    return min(8, os.cpu_count() or 1) if torch.cuda.is_available() else 0


def default_device():
    "This process's device: its current GPU when there is one (--jobs and DDP pick it), else the CPU."
    return torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() else torch.device('cpu')


def cpu_threads():
    """Torch threads of one training process: OMP_NUM_THREADS when set, else every core, whatever --jobs is.
    On a CPU the thread count changes the order of float sums, so runs are bit-identical only at equal thread counts:
    a run keeps the count of a run alone even beside other runs (--jobs N then shares the cores N ways)."""
    if os.environ.get('OMP_NUM_THREADS', '').isdigit(): return max(1, int(os.environ['OMP_NUM_THREADS']))
    return max(1, os.cpu_count() or 1)


def use_bf16(precision='auto'):
    "bf16 mixed precision for `precision` ('auto': on a GPU that supports it; 'bf16'; 'fp32')."
    if precision == 'fp32': return False
    supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if precision == 'bf16' and not torch.cuda.is_available():
        return True  # CPU autocast supports bf16 too (slow; asked for explicitly)
    return supported


def git_state():
    "(short commit, whether tracked files differ from it) of the lab's checkout; (None, None) outside git."
    def git(*args):
        return subprocess.run(['git', *args], capture_output=True, text=True, cwd=REPO, timeout=10).stdout.strip()
    try:
        commit = git('rev-parse', '--short', 'HEAD') or None
        return commit, (bool(git('status', '--porcelain', '--untracked-files=no')) if commit else None)
    except Exception: return None, None


def environment_info():
    "Device, library versions, host, commit (and whether the tree was dirty): where a number came from."
    import torchvision, fastai, numpy
    cuda = torch.cuda.is_available()
    commit, dirty = git_state()
    return dict(device=torch.cuda.get_device_name() if cuda else f'cpu ({os.cpu_count()} cores)',
                python=sys.version.split()[0], torch=torch.__version__, torchvision=torchvision.__version__,
                fastai=fastai.__version__, numpy=numpy.__version__, platform=platform.platform(),
                host=socket.gethostname(), git_commit=commit, git_dirty=dirty, torch_threads=torch.get_num_threads(),
                started=datetime.now().isoformat(timespec='seconds'),
                command=' '.join([Path(sys.argv[0]).name] + sys.argv[1:]))
