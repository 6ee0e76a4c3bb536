"""The machine a run is on: its device, precision, torch threads and loader workers, and the provenance of a number
(device, library versions, host, git commit) that every run's config.json records, and the seeding of its random
number generators (`seed_everything`, `rng_preserved`).

The one place that decides device and precision. `--device` (`select_device`) says where this process trains:
auto = a CUDA GPU, else Apple's MPS GPU, else the CPU; `cuda` = this process's GPU (each `--jobs` worker takes the
next one, each torchrun process its LOCAL_RANK's), `cuda:N` = GPU N, `mps`, `cpu`. A recipe's `precision`
(`resolve_precision`) then becomes one of:
  bf16  mixed, where the GPU has native bf16 (compute capability >= 8.0: A100, RTX 30xx/40xx, H100, H200...);
  fp16  mixed with loss scaling (fastai's `MixedPrecision` in fp16 mode, torch's GradScaler) on older CUDA GPUs
        (T4, V100, P100...), whose tensor cores run fp16 and only emulate bf16;
  fp32  on MPS and the CPU: fastai's `MixedPrecision` autocasts CUDA only.
`torch.cuda.is_bf16_supported()` is not used for this: by default it counts emulation, and is True on a T4.
Explicit asks the machine cannot serve (`--device cuda` without CUDA, `--precision bf16` on a T4, `--precision fp16`
on the CPU) are one-line errors naming the flag and the card. `announce` prints the choice and why, once per process.
"""
import os, platform, random, socket, subprocess, sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

__all__ = ['DEVICE_HELP', 'PRECISION_WORDS', 'select_device', 'selected_device', 'default_device', 'device_reason',
           'has_gpu', 'n_gpus', 'worker_device', 'device_name', 'resolve_precision', 'machine_info', 'announce',
           'loader_workers', 'cpu_threads', 'seed_everything', 'rng_preserved', 'environment_info', 'git_state',
           'release_device_memory']

REPO = Path(__file__).resolve().parents[1]

DEVICE_HELP = ("where to train: auto (a CUDA GPU, else Apple's MPS GPU, else the CPU), cpu, cuda (this process's "
               "GPU; --jobs spreads the runs over all of them), cuda:N (GPU N) or mps")
PRECISION_WORDS = {'bf16': 'bf16 mixed', 'fp16': 'fp16 mixed (loss scaling)', 'fp32': 'fp32'}
NATIVE_BF16 = (8, 0)  # compute capability from which CUDA GPUs run bf16 on their tensor cores (Ampere)

_selected = 'auto'  # this process's --device (select_device); 'auto' until a script says otherwise
_said = set()       # the lines `announce` has printed in this process


# ----- device ---------------------------------------------------------------------------------------------------------

def _mps_available():
    mps = getattr(torch.backends, 'mps', None)
    return bool(mps is not None and mps.is_available())


def _parse_device(spec):
    "('auto' | 'cpu' | 'cuda' | 'mps', GPU index or None) of a --device value; a ValueError names the flag."
    text = str(spec).strip().lower()
    kind, _, index = text.partition(':')
    if kind in ('auto', 'cpu', 'mps') and not index: return kind, None
    if kind == 'cuda' and (not index or index.isdigit()): return kind, int(index) if index else None
    raise ValueError(f"--device {spec!r}: expected auto, cpu, cuda, cuda:N (N a GPU number) or mps")


def _resolve_device(spec):
    "(torch.device, why) for a --device value on this machine; a ValueError for a device it does not have."
    kind, index = _parse_device(spec)
    if kind == 'auto':
        if torch.cuda.is_available(): return torch.device('cuda', torch.cuda.current_device()), 'auto: a CUDA GPU'
        if _mps_available(): return torch.device('mps'), "auto: no CUDA GPU, so Apple's MPS GPU"
        return torch.device('cpu'), 'auto: no CUDA or MPS GPU'
    if kind == 'cuda':
        if not torch.cuda.is_available():
            build = 'torch built without CUDA' if torch.version.cuda is None else 'no CUDA GPU or driver visible'
            raise ValueError(f"--device {spec}: this machine has no CUDA GPU ({build}); use --device auto or cpu")
        n = torch.cuda.device_count()
        if index is not None and int(os.environ.get('WORLD_SIZE', 1)) > 1:
            raise ValueError(f"--device {spec}: under torchrun each process takes its LOCAL_RANK's GPU; use --device "
                             f"cuda or auto")
        if index is not None and index >= n:
            raise ValueError(f"--device {spec}: only {n} CUDA GPU(s) visible here (cuda:0 to cuda:{n - 1})")
        return torch.device('cuda', torch.cuda.current_device() if index is None else index), f'--device {spec}'
    if kind == 'mps':
        if not _mps_available():
            raise ValueError("--device mps: Apple's MPS GPU is not available here (it needs an Apple Silicon Mac, "
                             "macOS 12.3+ and torch built with MPS); use --device auto or cpu")
        return torch.device('mps'), '--device mps'
    return torch.device('cpu'), '--device cpu'


def select_device(spec=None):
    """Make `spec` (a --device value; None keeps the current choice, 'auto' at first) this process's device, checked
    now: a device this machine lacks is a ValueError naming the flag. fastai's own default device (used e.g. by
    `Normalize.from_stats`) and, for cuda:N, torch's current GPU follow it. Returns the torch.device."""
    global _selected
    spec = _selected if spec is None else str(spec).strip().lower()
    device, _ = _resolve_device(spec)
    _selected = spec
    if device.type == 'cuda': torch.cuda.set_device(device)
    import fastai.torch_core
    fastai.torch_core.defaults.use_cuda = device.type != 'cpu'  # fastai: True = CUDA, else MPS; False = the CPU
    return device


def selected_device():
    "This process's --device value (as `select_device` was given it; 'auto' by default)."
    return _selected


def default_device():
    "This process's device: the --device choice, resolved now (a `cuda` choice is the process's current GPU)."
    return _resolve_device(_selected)[0]


def device_reason():
    "Why this process trains where it does (auto's reasoning, or '--device')."
    return _resolve_device(_selected)[1]


def has_gpu():
    "Whether this process trains on a GPU, CUDA or Apple's MPS (the full profile's default)."
    return default_device().type in ('cuda', 'mps')


def n_gpus():
    "The CUDA GPUs this process's runs spread over: all visible ones for auto or cuda, one for cuda:N, none otherwise."
    kind, index = _parse_device(_selected)
    if default_device().type != 'cuda': return 0
    return 1 if index is not None else torch.cuda.device_count()


def worker_device(spec, index):
    "In the `index`-th --jobs worker process: the parent's --device `spec`; a plain cuda choice takes GPU index mod n."
    select_device(spec)
    if n_gpus() > 1: torch.cuda.set_device(index % n_gpus())


def _card(device):
    "(name, (major, minor)) of CUDA `device`."
    props = torch.cuda.get_device_properties(device)
    return props.name, (props.major, props.minor)


def device_name(device=None):
    "Words for `device` (default: this process's): 'NVIDIA H200 (cuda:0, compute capability 9.0)', 'cpu (2 cores)'."
    device = torch.device(device) if device is not None else default_device()
    if device.type == 'cuda':
        name, (major, minor) = _card(device)
        return f"{name} ({device}, compute capability {major}.{minor})"
    if device.type == 'mps': return f"Apple MPS GPU ({platform.machine()}, {os.cpu_count()} CPU cores)"
    return f"cpu ({os.cpu_count()} cores)"


# ----- precision ------------------------------------------------------------------------------------------------------

def resolve_precision(precision='auto', device=None):
    """(precision, why) for a recipe's `precision` ('auto', 'bf16', 'fp16', 'fp32') on `device` (default: this
    process's): 'bf16', 'fp16' or 'fp32'. An ask the device cannot serve is a ValueError naming the flag and card."""
    device = torch.device(device) if device is not None else default_device()
    if precision not in ('auto', 'bf16', 'fp16', 'fp32'):
        raise ValueError(f"--precision {precision!r}: expected one of auto, bf16, fp16, fp32")
    if device.type == 'cuda':
        name, cc = _card(device)
        native = cc >= NATIVE_BF16 or bool(torch.version.hip)  # ROCm GPUs run bf16 natively
        card = f"{name} (compute capability {cc[0]}.{cc[1]})"
        if precision == 'bf16' and not native:
            raise ValueError(f"--precision bf16: the {card} has no native bf16 (it needs compute capability >= 8.0) "
                             f"and would only emulate it; use --precision fp16 or auto")
        if precision != 'auto': return precision, f'--precision {precision}'
        if native: return 'bf16', f'auto: native bf16 (compute capability {cc[0]}.{cc[1]} >= 8.0)'
        return 'fp16', f'auto: no native bf16 (compute capability {cc[0]}.{cc[1]} < 8.0)'
    where = 'the CPU' if device.type == 'cpu' else "Apple's MPS GPU"
    if precision in ('bf16', 'fp16'):
        raise ValueError(f"--precision {precision}: needs a GPU with CUDA (fastai's MixedPrecision autocasts CUDA "
                         f"only), and this run is on {where}; use --precision fp32 or auto")
    return 'fp32', ('--precision fp32' if precision == 'fp32' else
                    f"auto on {where}: fastai's MixedPrecision autocasts CUDA only")


def machine_info(precision='auto', device=None):
    """What config.json records of where and how a run trained: device, its name and why, precision and why.
    Raises the ValueError of `resolve_precision` for an ask the device cannot serve."""
    device = torch.device(device) if device is not None else default_device()
    chosen, why = resolve_precision(precision, device)
    same = device == default_device()
    return dict(device=str(device), device_name=device_name(device), device_reason=device_reason() if same else 'given',
                precision=chosen, precision_words=PRECISION_WORDS[chosen], precision_reason=why)


def announce(precision='auto'):
    """Print this process's device and precision for a recipe's `precision`, and why, once per process (the same line
    is not printed twice: run_all's scripts say it once). Returns `machine_info`; raises its ValueError first."""
    info = machine_info(precision)
    line = (f"device: {info['device_name']}, {info['device_reason']}; precision: {info['precision_words']}, "
            f"{info['precision_reason']}")
    if line not in _said:
        _said.add(line)
        print(line, flush=True)
    return info


# ----- random number generators -----------------------------------------------------------------------------------

def seed_everything(seed, deterministic=False):
    "Seed Python, NumPy and torch (all devices); `deterministic`: cuDNN's deterministic kernels, else its autotuner."
    random.seed(seed); np.random.seed(seed % 2 ** 32); torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, not deterministic
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not deterministic


@contextmanager
def rng_preserved():
    "Restore python, numpy and torch (CPU and initialised CUDA) RNG states afterwards, so caching changes no numbers."
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try: yield
    finally:
        random.setstate(states[0]); np.random.set_state(states[1]); torch.set_rng_state(states[2])
        if cuda is not None: torch.cuda.set_rng_state_all(cuda)


# ----- threads, workers, provenance -------------------------------------------------------------------------------

def loader_workers():
    "DataLoader worker processes for the file path: decoding in parallel feeds a GPU; on a CPU the main process is faster."
    return min(8, os.cpu_count() or 1) if has_gpu() else 0


def release_device_memory():
    """Give the GPU memory this process no longer uses back to the driver (torch's caching allocator keeps it): the
    stage's process reads the data once before its --jobs processes train, each with its own copy."""
    import gc
    cuda, mps = torch.cuda.is_available() and torch.cuda.is_initialized(), torch.backends.mps.is_available()
    if not (cuda or mps): return  # no device cache to give back; a full collection walks every object of the process
    gc.collect()  # fastai's loaders hold reference cycles: the tensors go only with them
    if cuda: torch.cuda.empty_cache()
    if mps: torch.mps.empty_cache()


def cpu_threads():
    """Torch threads of one training process: OMP_NUM_THREADS when set, else every core, whatever --jobs is.
    On a CPU the thread count changes the order of float sums, so runs are bit-identical only at equal thread counts:
    a run keeps the count of a run alone even beside other runs (--jobs N then shares the cores N ways)."""
    if os.environ.get('OMP_NUM_THREADS', '').isdigit(): return max(1, int(os.environ['OMP_NUM_THREADS']))
    return max(1, os.cpu_count() or 1)


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
    commit, dirty = git_state()
    return dict(device=device_name(),
                python=sys.version.split()[0], torch=torch.__version__, torchvision=torchvision.__version__,
                fastai=fastai.__version__, numpy=numpy.__version__, platform=platform.platform(),
                host=socket.gethostname(), git_commit=commit, git_dirty=dirty, torch_threads=torch.get_num_threads(),
                started=datetime.now().isoformat(timespec='seconds'),
                command=' '.join([Path(sys.argv[0]).name] + sys.argv[1:]))
