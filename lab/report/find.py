"""Finding the runs a report is about: the report's sections (`SECTIONS`), the newest finished invocation of each
(`find_section`, `collect`) with its provenance, and the warnings for sections whose numbers do not compare."""
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..io import read_json
from ..lookup import key_difference, latest_stage_summary


@dataclass(frozen=True)
class SectionSpec:
    "One section of the report: the stage folder it reads, its title, the spec items it answers, how to render it."
    stage: str   # folder under <out>, e.g. 'stage2_baseline' or 'task1/variance'
    title: str
    spec: str
    kind: str    # variance, gradients, resnet, final, classifier, unet, backbone
    data: str    # 'tiny', 'moon' or None (Task 1)
    chapter: str


TASK1, TASK2, TASK3 = ('Task 1: weight variance and gradients through depth',
                       'Task 2: a ResNet on 10 Tiny ImageNet classes', 'Task 3: 128 px classifier and U-Nets')
SECTIONS = [
    SectionSpec('task1/variance', 'Task 1.1-1.2: doubled layer-3 weight variance and the GAP activations', 'T1.1, T1.2',
                'variance', None, TASK1),
    SectionSpec('task1/gradients', 'Task 1.3-1.4: gradients through depth', 'T1.3, T1.4', 'gradients', None, TASK1),
    SectionSpec('stage2_baseline', 'Stage 2: baseline ResNet', 'T2.5, T2.6', 'resnet', 'tiny', TASK2),
    SectionSpec('stage3_1_channels', 'Stage 3.1: channels', 'T2.7', 'resnet', 'tiny', TASK2),
    SectionSpec('stage3_2_blocks', 'Stage 3.2: blocks per stage', 'T2.8', 'resnet', 'tiny', TASK2),
    SectionSpec('stage3_3_activations', 'Stage 3.3: activations', 'T2.9', 'resnet', 'tiny', TASK2),
    SectionSpec('stage4_final', 'Stage 4: final model, recipe ablation and test report', 'T2.10-T2.12', 'final', 'tiny',
                TASK2),
    SectionSpec('task3_classifier128', 'Task 3.1: 128 px classifier', 'T3.1', 'classifier', 'tiny', TASK3),
    SectionSpec('task3_unet', 'Task 3.2: baseline U-Net', 'T3.2', 'unet', 'moon', TASK3),
    SectionSpec('task3_unet_backbone', 'Task 3.3: U-Net on the classifier backbone', 'T3.3', 'backbone', 'moon', TASK3),
]


@dataclass
class Found:
    "The finished invocation a section reports on (summary None: not run yet), with its provenance."
    spec: SectionSpec
    summary: dict = None
    folder: Path = None
    run: Path = None          # the run folder whose config.json tells the data (the best or first run)
    config: dict = None       # that run's config.json (Task 1: the probe's config.json)
    profile: str = None
    seeds: list = None
    data_key: dict = None
    data_path: str = None
    source: str = None
    newer: list = None        # newer invocations that did not finish: (folder name, status)

    @property
    def ran(self): return self.summary is not None

def _seeds(summary, config=None):
    seeds = summary.get('seeds') if summary else None
    if seeds is None and config: seeds = config.get('seeds')
    return list(seeds) if isinstance(seeds, (list, tuple)) else seeds


def _run_folder(spec, summary, folder):
    "The run folder that stands for the section: its best (or kept) run, else the first run folder with a config."
    seeds = _seeds(summary) or [0]
    names = {'final': [f'final-seed{seeds[0]}'], 'unet': [f'unet-seed{seeds[0]}'],
             'backbone': [f'B-seed{seeds[0]}', f'A-seed{seeds[0]}'],
             'classifier': [str(summary.get('checkpoint', '')).split('/')[0]],
             'resnet': [f"{summary.get('best')}-seed{seeds[0]}"]}.get(spec.kind, [])
    for name in names:
        if name and (folder / name / 'config.json').is_file(): return folder / name
    return next((p for p in sorted(folder.iterdir()) if (p / 'config.json').is_file() and p.is_dir()), None)


def _newer_unfinished(out, stage, chosen):
    root = Path(out) / stage
    if not root.is_dir(): return []
    later = []
    for p in sorted(root.iterdir()):
        if p.name.startswith('.') or not p.is_dir() or (p / 'summary.json').is_file(): continue
        if chosen is not None and p.name <= chosen.name: continue
        status = 'unfinished'
        if (p / 'stage.json').is_file():
            try: status = read_json(p / 'stage.json').get('status', status)
            except (OSError, ValueError): pass
        later.append((p.name, status))
    return later


def find_section(out, spec):
    "The `Found` of `spec` under `out`: the newest finished invocation of its stage and where its data came from."
    summary = latest_stage_summary(out, spec.stage, say=False)
    if summary is None: return Found(spec, newer=_newer_unfinished(out, spec.stage, None))
    folder = Path(summary['path'])
    found = Found(spec, summary, folder, newer=_newer_unfinished(out, spec.stage, folder))
    if spec.data is None:  # Task 1 probes: their own config.json
        config = read_json(folder / 'config.json') if (folder / 'config.json').is_file() else {}
        found.config, found.profile = config, ('quick' if config.get('quick') else 'full') if config else None
        found.seeds, found.source = _seeds(None, config), summary.get('images') or config.get('images')
        found.data_path = config.get('data')
        return found
    found.run = _run_folder(spec, summary, folder)
    found.config = read_json(found.run / 'config.json') if found.run else {}
    data = found.config.get('data') if isinstance(found.config.get('data'), dict) else {}
    found.profile, found.seeds, found.data_key = summary.get('profile'), _seeds(summary), summary.get('data_key')
    found.data_path = data.get('data') or summary.get('data')
    found.source = data.get('source') or summary.get('data_source')
    return found


def collect(out):
    "The `Found` of every section, in the report's order."
    return [find_section(out, spec) for spec in SECTIONS]


def _key(v): return json.dumps(v, sort_keys=True, default=str)


def provenance_warnings(found):
    """(report-wide warnings, {stage: warnings}) for sections whose numbers do not compare: Tiny ImageNet (or moon)
    sections on another data key (data folder, classes, split, images kept, profile) than the most common one, and
    sections of another profile or other seeds than the most common ones."""
    general, per = [], {}
    def flag(stage, text): per.setdefault(stage, []).append(text)
    for kind, what in (('tiny', 'Tiny ImageNet'), ('moon', 'moon')):
        group = [f for f in found if f.ran and f.spec.data == kind]
        keys = Counter(_key(f.data_key) for f in group)
        if len(keys) > 1:
            ref = next(f.data_key for f in group if keys[_key(f.data_key)] == max(keys.values()))
            odd = [f for f in group if _key(f.data_key) != _key(ref)]
            for f in odd:
                diff = key_difference(f.data_key, ref, ('here', 'in the others'))
                flag(f.spec.stage, f"ran on other data than the other {what} sections ({diff}): its numbers do not "
                                   "compare with theirs")
            general.append(f"The {what} sections ran on different data, classes, split or profile: "
                           f"{', '.join(f.spec.stage for f in odd)} differ from the others (see those sections).")
    for attr, what, group in (('profile', 'profile', [f for f in found if f.ran]),
                              ('seeds', 'seeds', [f for f in found if f.ran and f.spec.data])):
        values = Counter(_key(getattr(f, attr)) for f in group)
        if len(values) > 1:
            ref = next(getattr(f, attr) for f in group if values[_key(getattr(f, attr))] == max(values.values()))
            for f in group:
                if _key(getattr(f, attr)) != _key(ref):
                    flag(f.spec.stage, f"{what} {getattr(f, attr)} here, {ref} in most other sections")
            general.append(f"Sections ran with different {what}: " +
                           ', '.join(f"{f.spec.stage} {getattr(f, attr)}" for f in group) + '.')
    return general, per
