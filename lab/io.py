"""Files written whole or not at all: the lab's one atomic writer, and JSON in and out.

Every file a reader may open while it is being written (summaries, checkpoints, caches, reports) goes through
`atomic_write`: the bytes land in a temporary file beside the target, which then replaces it in one step, so a
reader, or a kill mid-write, never sees half a file.
"""
import json, math, os, re
from contextlib import contextmanager
from dataclasses import is_dataclass
from pathlib import Path

__all__ = ['atomic_write', 'write_text', 'write_json', 'read_json', 'json_safe', 'same_json', 'check_out', 'writing',
           'error_line']


@contextmanager
def atomic_write(path):
    "Yield a temporary path beside `path`; when the body finishes it replaces `path` at once; on an error it goes."
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        with writing(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp.exists(): tmp.unlink()


@contextmanager
def writing(path):
    """A failed write inside names `path`: an OSError (a full disk, a read-only folder) or torch's RuntimeError of
    a failed write becomes OSError('<path>: not written (<reason>)'), the original as its cause."""
    try: yield
    except (OSError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and 'write' not in str(e).lower(): raise
        if str(path) in str(e): raise
        why = os.strerror(e.errno) if getattr(e, 'errno', None) else _first_line(e)
        error = OSError(f"{path}: not written ({why})")
        error.errno = getattr(e, 'errno', None)
        raise error from e


def write_text(path, text):
    "Write `text` to `path` atomically; return the path."
    with atomic_write(path) as tmp: Path(tmp).write_text(text)
    return Path(path)


def json_safe(o):
    """JSON-safe copy: records (their to_dict), Paths to str, NaN/inf to None, numpy/torch scalars to Python, tuples
    to lists, slices to text."""
    if isinstance(o, dict): return {str(k): json_safe(v) for k, v in o.items()}
    if is_dataclass(o) and hasattr(o, 'to_dict'): return json_safe(o.to_dict())  # a record or a table row
    if isinstance(o, (list, tuple)): return [json_safe(v) for v in o]
    if isinstance(o, Path): return str(o)
    if isinstance(o, slice): return f'slice({o.start}, {o.stop})'
    if hasattr(o, 'item') and getattr(o, 'ndim', 1) == 0: o = o.item()
    if isinstance(o, float) and not math.isfinite(o): return None
    return o


def write_json(path, obj):
    "Write `obj` as indented JSON, atomically; return the path."
    return write_text(path, json.dumps(json_safe(obj), indent=2, default=str))


def read_json(path):
    "Read a JSON file, with an error that names it when it is missing or broken."
    path = Path(path)
    try: return json.loads(path.read_text())
    except FileNotFoundError: raise FileNotFoundError(f"{path}: no such file (expected a JSON summary)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e: raise ValueError(f"{path}: not valid JSON ({e})") from None


def same_json(a, b):
    "Whether `a` and `b` are equal once written as JSON (tuples and lists alike, key order aside)."
    return json.dumps(json_safe(a), sort_keys=True) == json.dumps(json_safe(b), sort_keys=True)


def check_out(path, flag='--out'):
    """A ValueError naming `flag` when `path` cannot hold results: a file, below a file, or in a folder this user
    may not write. Checked before anything is read or decoded; nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir(): raise ValueError(f"{flag} {path}: a file, not a folder (expected a "
                                                             f"folder to write the results into)")
    there = path
    while not there.exists() and there != there.parent: there = there.parent
    if not there.is_dir(): raise ValueError(f"{flag} {path}: {there} is a file, so no folder can be made below it")
    if not os.access(there, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {there} is not writable by this user (expected a folder to write into)")
    return path


_FASTAI_WRAP = re.compile(r"Exception occured in `(\w+)` when calling event `(\w+)`:\s*(.*)", re.S)


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0].strip() if text else type(e).__name__


def error_line(e):
    """One line for the error `e`, with what it wraps: fastai rewrites an error raised in a callback into "Exception
    occured in `Checkpoints` when calling event `after_epoch`:" and the original's first argument (for a 2-argument
    OSError its bare errno), so the original message (or its errno's words and file) is put back, with the callback
    after it; a cause (`__cause__`/`__context__`) that says more is appended."""
    text = str(e).strip()
    m, where = _FASTAI_WRAP.match(text), ''
    if m: text, where = m[3].strip(), f" (in fastai's {m[1]} callback, {m[2]})"
    line = text.splitlines()[0].strip() if text else ''
    if isinstance(e, OSError) and e.strerror and (not line or line.lstrip('-').isdigit()):
        line = f"{e.filename + ': ' if e.filename else ''}{e.strerror}"
    cause = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    if cause is not None and getattr(cause, 'strerror', None) and cause.strerror not in line:
        line += f" ({type(cause).__name__}: {cause.strerror})"
    return (line or type(e).__name__) + where
