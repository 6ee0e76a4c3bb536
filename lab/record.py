"""A run's result record: `RunRecord`, the fields of its summary.json, written by the run layer (`lab.train`) and read
by attribute everywhere else (tables, report, evaluate, lookup), so that a renamed field fails loudly.

summary.json keeps its format: the keys a run set, in the order it set them; a field it did not set stays absent from
the file (and reads as None). A key this code does not know (a folder of a later version) is kept in `extra` and
written back, never dropped; setting an unknown field by name (`update`) is an error.
"""
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from .io import json_safe, read_json, write_json

__all__ = ['Fields', 'RunRecord', 'Evaluation', 'DATA_COUNTS', 'data_counts', 'UNSET']


class _Unset:
    "The default of a field that was not given: it reads as None and stays out of to_dict."
    def __repr__(self): return 'UNSET'


UNSET = _Unset()
DATA_COUNTS = ('n_train', 'n_valid', 'n_test')  # the image counts of a run's data (`lab.data.loaders.Data.info`)


def data_counts(info):
    "The image counts of a data info dict (`Data.info`, config.json's 'data') as keyword arguments of a record."
    return {k: info.get(k) for k in DATA_COUNTS if k in info}


class Fields:
    """Base of the lab's records (dataclasses whose fields default to UNSET): remembers which fields were given, in
    order, so that `to_dict` gives back exactly those keys in that order."""
    def __post_init__(self):
        object.__setattr__(self, '_given', [f.name for f in fields(self) if f.name != 'extra'
                                            and getattr(self, f.name) is not UNSET])
        for f in fields(self):
            if getattr(self, f.name) is UNSET: object.__setattr__(self, f.name, None)

    def __setattr__(self, name, value):
        given = self.__dict__.get('_given')
        if given is not None and name != 'extra' and name not in given: given.append(name)
        object.__setattr__(self, name, value)

    def __eq__(self, other): return type(self) is type(other) and self.to_dict() == other.to_dict()

    @classmethod
    def names(cls): return [f.name for f in fields(cls) if f.name != 'extra']

    def update(self, **values):
        "Set fields by name (an unknown name is an error: it would be a renamed field); returns self."
        unknown = sorted(set(values) - set(self.names()))
        if unknown: raise TypeError(f"{type(self).__name__} has no field {', '.join(unknown)}")
        for k, v in values.items(): setattr(self, k, v)
        return self

    def drop(self, name):
        "Make field `name` absent again (None, and out of to_dict); returns its value."
        value = getattr(self, name)
        if name in self._given: self._given.remove(name)
        object.__setattr__(self, name, None)
        return value

    def has(self, name): return name in self._given

    def replace(self, **values):
        "A copy with `values` set (the record itself is left as it is)."
        return type(self).from_dict(self.to_dict()).update(**values)

    def to_dict(self):
        "The fields that were set, in the order they were set, then the unknown keys read with it."
        return {**{k: getattr(self, k) for k in self._given}, **(self.extra or {})}

    @classmethod
    def from_dict(cls, d):
        "A record from its dict (e.g. read from JSON): known keys become fields, in the dict's order; others `extra`."
        known = set(cls.names())
        rec = cls(**{k: v for k, v in d.items() if k in known}, extra={k: v for k, v in d.items() if k not in known})
        rec._given[:] = [k for k in d if k in known]
        return rec

    @classmethod
    def of(cls, x):
        "`x` as a record of this class: itself, or read from a dict (an older reader's or a JSON file's)."
        return x if isinstance(x, cls) else cls.from_dict(x)

    # Read-only mapping access, for the code not yet converted to attributes (it goes when that code reads fields).
    def __getitem__(self, k):
        if k in self._given: return getattr(self, k)
        if k in (self.extra or {}): return self.extra[k]
        raise KeyError(k)
    def __contains__(self, k): return k in self._given or k in (self.extra or {})
    def get(self, k, default=None): return self[k] if k in self else default
    def keys(self): return list(self.to_dict())


@dataclass(eq=False)
class _Scores(Fields):
    "What `lab.evaluate.evaluate_run` measures after training (classifier test report, TTA, segmentation scores)."
    valid_acc_tta: float = UNSET
    test_acc: float = UNSET
    test_acc_lo: float = UNSET
    test_acc_hi: float = UNSET
    macro_f1: float = UNSET
    n: int = UNSET                    # the test images the report scored
    test_report_preds: str = UNSET    # 'tta' or 'plain': which predictions the test report shows
    test_acc_tta: float = UNSET
    test_loss: float = UNSET
    test_iou: float = UNSET
    test_dice: float = UNSET
    test_pixel_acc: float = UNSET
    real_loss: float = UNSET
    real_iou: float = UNSET
    real_dice: float = UNSET
    real_pixel_acc: float = UNSET
    real_frames: int = UNSET
    real_data: str = UNSET


@dataclass(eq=False)
class RunRecord(_Scores):
    "A finished run's summary.json (see the module docstring); `best` and `final` are metrics.csv rows."
    best_epoch: int = UNSET
    best: dict = UNSET
    final: dict = UNSET
    min_valid_loss: float = UNSET
    monitor: str = UNSET
    params: int = UNSET
    trainable_params: int = UNSET
    epochs: int = UNSET
    seed: int = UNSET
    wall_seconds: float = UNSET
    epoch_seconds: float = UNSET
    run: str = UNSET
    checkpoint: str = UNSET
    recipe: dict = UNSET
    n_train: int = UNSET
    n_valid: int = UNSET
    n_test: int = UNSET
    data_path: str = UNSET
    bs: int = UNSET
    caveats: list = UNSET
    dead_share: float = UNSET          # statistics (RunOptions(stats=True)): mean share of activations <= 0
    act_std_last: float = UNSET        # last-layer activation std
    grad_first_over_last: float = UNSET  # first over last layer's weight-gradient norm
    cost: dict = UNSET                 # what the run cost (time, images)
    extra: dict = field(default_factory=dict)

    @classmethod
    def read(cls, run_dir):
        "The record of a finished run folder (its summary.json; older folders' too)."
        return cls.from_dict(read_json(Path(run_dir) / 'summary.json'))

    def write(self, run_dir):
        "Write summary.json into `run_dir` (atomically: a folder without it is unfinished); returns its path."
        return write_json(Path(run_dir) / 'summary.json', self.to_dict())

    def as_written(self):
        "This record as `read` gives it back once written (JSON's types: lists, None for NaN, plain numbers)."
        return type(self).from_dict(json.loads(json.dumps(json_safe(self.to_dict()), default=str)))


@dataclass(eq=False)
class Evaluation(_Scores):
    "A run folder evaluated again (`scripts/evaluate.py`): evaluation.json's numbers."
    run: str = UNSET
    task: str = UNSET
    arch: str = UNSET
    data: str = UNSET
    source: str = UNSET
    n_valid: int = UNSET
    n_test: int = UNSET
    valid_loss: float = UNSET
    valid_acc: float = UNSET
    valid_iou: float = UNSET
    valid_dice: float = UNSET
    valid_pixel_acc: float = UNSET
    n_test_scored: int = UNSET
    note: str = UNSET
    on_request: bool = UNSET    # every evaluate.py result: scored when asked, not by the run's own stage
    caveats: list = UNSET
    extra: dict = field(default_factory=dict)
