"""Files written whole or not at all: the lab's one atomic writer, and JSON in and out.

Every file a reader may open while it is being written (summaries, checkpoints, caches, reports) goes through
`atomic_write`: the bytes land in a temporary file beside the target, which then replaces it in one step, so a
reader, or a kill mid-write, never sees half a file.
"""
import json, math, os
from contextlib import contextmanager
from dataclasses import is_dataclass
from pathlib import Path

__all__ = ['atomic_write', 'write_text', 'write_json', 'read_json', 'json_safe', 'same_json']


@contextmanager
def atomic_write(path):
    "Yield a temporary path beside `path`; when the body finishes it replaces `path` at once; on an error it goes."
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists(): tmp.unlink()


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
