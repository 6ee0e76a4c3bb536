"""Caveats: what a saved result cannot support, in one wording each, made in one place.

Every caveat the console says is saved with the result it concerns: a run's `config.json` and `summary.json` (data
caveats: quick profile, generated data, not held out, no rock), a stage's `summary.json` and `table.md` (those, and
one seed, `--from` a stage on other data), `evaluate.py`'s `evaluation.json` and `metrics.md` (those of its data, an
unfinished run, a test scored on request); the report shows each section's caveats under its heading.
"""

__all__ = ['caveat', 'data_caveats', 'run_caveats', 'stage_caveats', 'caveat_notes', 'merged', 'TEXTS']

TEXTS = dict(
    quick="quick profile: these numbers say that the code runs, nothing about the models",
    generated="generated data (a seeded stand-in, not the real dataset): the numbers are not the real dataset's",
    one_seed="one seed: seed noise unknown",
    other_data="--from {path} ran on other data, classes, split or profile ({difference}); its choice was used "
               "because it was named",
    unfinished="unfinished run: {done} of {epochs} epochs trained (no summary.json); evaluated at its best "
               "checkpoint so far, not as a {epochs}-epoch run",
    on_request="test set scored on request (evaluate.py) for a run that is not the final model: the lab's one test "
               "evaluation is the final model's, and choosing by this number would choose by the test set",
)


def caveat(kind, **values):
    "The one wording of caveat `kind` (a key of `TEXTS`), filled with `values`."
    return TEXTS[kind].format(**values)


def data_caveats(profile, source):
    "The caveats of a recipe's data by its profile ('quick'/'full') and source ('real'/'synthetic')."
    return ([caveat('quick')] if profile == 'quick' else []) + ([caveat('generated')] if source != 'real' else [])


def run_caveats(recipe, source, found=()):
    "A run's caveats: its profile's and data source's, then what its data cannot support (`found`: `Data.caveats`)."
    return merged(data_caveats(recipe.profile, source), found)


def stage_caveats(recipe, data_info, seeds, chosen=()):
    """A stage's caveats: its runs' (`data_info`: the stage's `Data.info`), one seed, then those of setting the
    stage up (`chosen`: e.g. --from a stage on other data)."""
    info = data_info or {}
    return merged(run_caveats(recipe, info.get('source', 'real'), info.get('caveats')),
                  [caveat('one_seed')] if len(seeds) == 1 else [], chosen)


def merged(*lists):
    "The caveats of `lists` in order, each once."
    out = []
    for c in (c for l in lists for c in l or ()):
        if c not in out: out.append(c)
    return out


def caveat_notes(caveats):
    "The caveats as the lines a table's notes end with ('' when there are none)."
    return ''.join(f"\n\n**Caveat:** {c}." for c in caveats)
