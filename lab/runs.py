"""The results contract (D7): every stage invocation gets a folder of its own, written atomically.

Layout: ``<out>/<stage>/<timestamp>/`` holds the stage's ``summary.json``, ``table.md``/``table.csv`` and one
sub-folder per training run (``config.json``, ``metrics.csv``, ``summary.json``, plots, checkpoint). While it
is being written the folder is ``<out>/<stage>/.<timestamp>.partial``; it gets its final name only when the
stage finishes, and is removed if the stage fails, so ``results/`` never holds half-written output and a
run never overwrites another.
"""
import json, math, os, platform, shutil, subprocess, sys, time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

__all__ = ['stage_dir', 'latest_stage_summary', 'write_json', 'read_json', 'environment_info', 'parse_seeds']


def _clean(o):
    "JSON-safe copy: Paths to str, NaN/inf to None, numpy/torch scalars to Python."
    if isinstance(o, dict): return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)): return [_clean(v) for v in o]
    if isinstance(o, Path): return str(o)
    if hasattr(o, 'item') and getattr(o, 'ndim', 1) == 0: o = o.item()
    if isinstance(o, float) and not math.isfinite(o): return None
    return o


def write_json(path, obj):
    "Write `obj` as indented JSON (via a temporary file, so a reader never sees half of it)."
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(_clean(obj), indent=2, default=str))
    os.replace(tmp, path)
    return path


def read_json(path):
    "Read a JSON file, with an error that names it when it is missing or broken."
    path = Path(path)
    try: return json.loads(path.read_text())
    except FileNotFoundError: raise FileNotFoundError(f"{path}: no such file (expected a JSON summary)") from None
    except json.JSONDecodeError as e: raise ValueError(f"{path}: not valid JSON ({e})") from None


@contextmanager
def stage_dir(out, stage):
    "Yield a fresh folder for one invocation of `stage` under `out`; publish it on success, remove it on failure."
    root = Path(out) / stage
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime('%Y%m%d-%H%M%S')
    name, k = stamp, 1
    while (root / name).exists() or (root / f'.{name}.partial').exists():
        k += 1; name = f'{stamp}-{k}'
    partial = root / f'.{name}.partial'
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    final = root / name
    os.replace(partial, final)
    print(f"results: {final}")


def latest_stage_summary(out, stage):
    "The `summary.json` of the newest finished invocation of `stage` under `out`, or None (with its path under 'path')."
    root = Path(out) / stage
    done = sorted(p for p in root.glob('*/summary.json') if not p.parent.name.startswith('.')) if root.exists() else []
    if not done: return None
    summary = read_json(done[-1])
    summary['path'] = str(done[-1].parent)
    return summary


def _git_commit():
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except Exception: return None


def environment_info():
    "Device, library versions, host and commit: what a config.json needs to say where a number came from."
    import torch, torchvision, fastai, numpy
    cuda = torch.cuda.is_available()
    return dict(device=torch.cuda.get_device_name(0) if cuda else f'cpu ({os.cpu_count()} cores)',
                python=sys.version.split()[0], torch=torch.__version__, torchvision=torchvision.__version__,
                fastai=fastai.__version__, numpy=numpy.__version__, platform=platform.platform(),
                git_commit=_git_commit(), started=datetime.now().isoformat(timespec='seconds'),
                command=' '.join([Path(sys.argv[0]).name] + sys.argv[1:]))


def parse_seeds(seeds):
    "Seeds from a flag: '0,1,2' or 3 (meaning 0,1,2) or a list."
    if isinstance(seeds, (list, tuple)): return [int(s) for s in seeds]
    text = str(seeds).strip()
    try:
        if ',' in text or text.startswith('['): return [int(s) for s in text.strip('[]').split(',') if s.strip()]
        n = int(text)
    except ValueError:
        raise ValueError(f"--seeds {seeds!r}: expected a count like 2 or a list like 0,1") from None
    if n < 1: raise ValueError(f"--seeds {seeds!r}: expected at least one seed")
    return list(range(n))
