"""Finding finished stages: the newest one on the same data, and the choice a stage hands the next one.

A stage summary carries a `data_key` (data folder, classes, split, profile); a later stage, the report and the
backbone script read only finished stages with the same key (or the folder named with --from), and say when a newer
one ran on other data. Stages hand each other a `Recipe` (`chosen_recipe`, through `lab.stage.stage_choice`), never printed strings or
summary keys.
"""
from dataclasses import replace
from pathlib import Path

from .io import read_json, same_json
from .recipe import Recipe

__all__ = ['read_stage', 'finished_stages', 'latest_stage_summary', 'key_difference', 'chosen_recipe']


def read_stage(folder, stage=None, flag='--from'):
    """A finished stage folder's summary (with its path); an error that names `flag` and says what the folder is
    instead (missing, unfinished, one training run of a stage, or a run of a stage other than `stage`)."""
    folder = Path(folder)
    if not (folder / 'summary.json').is_file():
        what = 'an unfinished stage run' if (folder / 'stage.json').is_file() else 'not a stage run folder'
        raise FileNotFoundError(f"{flag} {folder}: no summary.json ({what})")
    summary = dict(read_json(folder / 'summary.json'), path=str(folder))
    expected = f"a finished {stage} folder" if stage else "a finished stage folder"
    if 'stage' not in summary:
        if (folder / 'config.json').is_file():
            raise ValueError(f"{flag} {folder}: one training run (a variant and seed) of the stage in {folder.parent}, "
                             f"not a stage folder; expected {expected}, e.g. {folder.parent}")
        raise ValueError(f"{flag} {folder}: its summary.json is not a stage's; expected {expected}")
    if stage and summary['stage'] != stage:
        raise ValueError(f"{flag} {folder}: a {summary['stage']} run; expected {expected}")
    return summary


def finished_stages(out, stage):
    "The summaries (with 'path') of the finished invocations of `stage` under `out`, newest first."
    root = Path(out) / stage
    done = sorted((p for p in root.glob('*/summary.json') if not p.parent.name.startswith('.')),
                  key=lambda p: p.parent.name) if root.exists() else []
    for p in reversed(done): yield dict(read_json(p), path=str(p.parent))


def latest_stage_summary(out, stage, like=None, say=True):
    """The summary (with 'path') of the newest finished invocation of `stage` under `out`, or None.
    `like`: a resolved Recipe; only an invocation on the same data, classes, split and profile counts (newer ones on
    other data are named in a notice)."""
    for summary in finished_stages(out, stage):
        if like is None or same_json(summary.get('data_key'), like.data_key()): return summary
        if say:
            print(f"NOTICE: {summary['path']} is not used: it ran on other data, classes, split or profile "
                  f"({key_difference(summary.get('data_key'), like.data_key())})")
    return None


def _shown(value, width=60):
    "repr of `value`, its middle elided when longer than `width` (long data paths and class lists)."
    text = repr(value)
    return text if len(text) <= width else f"{text[:width // 2 - 2]}...{text[-(width // 2 - 1):]}"


def key_difference(theirs, ours, names=('there', 'here')):
    """The fields in which two data keys differ, e.g. \"classes: 'n1,n2' there, 'n1,n2,n3' here\" (or 'no key
    recorded'); long values are shortened in their middle, so that the text always ends whole."""
    theirs, ours = theirs or {}, ours or {}
    diff = [f"{k}: {_shown(theirs.get(k))} {names[0]}, {_shown(ours.get(k))} {names[1]}"
            for k in sorted(set(theirs) | set(ours)) if not same_json(theirs.get(k), ours.get(k))]
    return '; '.join(diff) or 'no key recorded'


def chosen_recipe(summary):
    "The Recipe of the best variant of a finished stage (its summary, as `latest_stage_summary` or `read_stage` give it)."
    return Recipe.from_dict(summary['best_recipe'], source=f"{summary['path']}/summary.json")
