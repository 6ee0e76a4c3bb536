"""Profiles (D5) and the machine: the full spec on a GPU, the quick profile on a CPU; devices, threads, precision."""
import os

import torch

__all__ = ['pick_profile', 'default_device', 'loader_workers', 'cpu_threads', 'use_bf16', 'n_gpus']


def n_gpus():
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def loader_workers():
    "DataLoader worker processes for the file path: decoding in parallel feeds a GPU; on a CPU the main process is faster."
    return min(8, os.cpu_count() or 1) if torch.cuda.is_available() else 0


def default_device():
    "This process's device: its current GPU when there is one (--jobs and DDP pick it), else the CPU."
    return torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() else torch.device('cpu')


def cpu_threads(jobs=1):
    """Torch threads of one training process: OMP_NUM_THREADS when set, else the cores shared among `jobs`.
    On a CPU the thread count changes the order of float sums, so runs are bit-identical only at equal thread counts."""
    if os.environ.get('OMP_NUM_THREADS', '').isdigit(): return max(1, int(os.environ['OMP_NUM_THREADS']))
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def use_bf16(precision='auto'):
    "bf16 mixed precision for `precision` ('auto': on a GPU that supports it; 'bf16'; 'fp32')."
    if precision == 'fp32': return False
    supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if precision == 'bf16' and not torch.cuda.is_available():
        return True  # CPU autocast supports bf16 too (slow; asked for explicitly)
    return supported


def pick_profile(quick=False, full=False):
    "'quick' or 'full'. Without a flag: full on a GPU, quick on a CPU (said)."
    if quick and full: raise ValueError("--quick and --full contradict each other: give one")
    if quick: return 'quick'
    if full or torch.cuda.is_available(): return 'full'
    print("NOTICE: no GPU found, so the quick profile runs (few images, few epochs, quarter-size images); "
          "pass --full to run the full spec on this CPU anyway.")
    return 'quick'
