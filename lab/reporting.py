"""The lab's report: one document of the newest finished run of every stage, as REPORT.md and a self-contained REPORT.html.

`write_report(out)` reads ``<out>/<stage>/<timestamp>/`` folders (never trains), and writes REPORT.md, REPORT.html and
the table of all Task 2 experiments (experiments.md/csv) into ``<out>/report/<timestamp>/`` (`lab.runs.stage_dir`), then
copies REPORT.md and REPORT.html to ``<out>/``. The sections follow the assignment: Task 1 (variance, gradients), Task 2
(baseline, 3.1, 3.2, 3.3, final with its recipe ablation, all experiments), Task 3 (128 px classifier, U-Net, backbone
U-Net). Each section gives where its numbers come from (results folder, data folder and source, profile, seeds), the
design as read from the runs' own recipes (models rebuilt with `lab.train.build_model` to count their parameters), its
table, its figures and the conclusion its stage computed. Sections on other data, profiles or seeds than the others
are flagged; a section whose stage has not finished says 'not run yet'.

Figures are relative links in REPORT.md (each copy gets the links that resolve from where it lies) and base64 data
URIs in REPORT.html, which therefore opens offline, anywhere. Markdown is rendered to HTML with markdown-it-py.
"""
import base64, html, json, math, os, re, urllib.parse
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from .report import markdown_rows, wilson
from .runs import key_difference, latest_stage_summary, read_json, stage_dir

__all__ = ['SECTIONS', 'SectionSpec', 'Figure', 'Found', 'find_section', 'collect', 'provenance_warnings',
           'augment_descriptions', 'describe_resnet', 'describe_unet', 'describe_backbone', 'describe_training',
           'describe_data', 'build_report', 'render_markdown', 'markdown_to_html', 'write_report', 'image_links']


@dataclass(frozen=True)
class SectionSpec:
    "One section of the report: the stage folder it reads, its title, the spec items it answers, how to render it."
    stage: str   # folder under <out>, e.g. 'stage2_baseline' or 'task1/variance'
    title: str
    spec: str
    kind: str    # variance, gradients, resnet, final, classifier, unet, backbone
    data: str    # 'tiny', 'moon' or None (Task 1)
    chapter: str


TASK1, TASK2, TASK3 = ('Task 1: weight variance and gradients through depth', 'Task 2: a ResNet on 10 Tiny ImageNet classes',
                       'Task 3: 128 px classifier and U-Nets')
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
EXPERIMENTS_TITLE = 'All Task 2 experiments (T2.13)'


@dataclass(frozen=True)
class Figure:
    "An image of a results folder and its caption; rendered as a relative link (Markdown) or a data URI (HTML)."
    path: Path
    caption: str


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


# ----- finding the runs ---------------------------------------------------------------------------------------------

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
            for f in odd: flag(f.spec.stage, f"ran on other data than the other {what} sections "
                                             f"({key_difference(f.data_key, ref, ('here', 'in the others'))}): its numbers do not compare with theirs")
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


# ----- describing the design from the recipes -----------------------------------------------------------------------

ACTS = {'relu': 'ReLU', 'leakyrelu': 'LeakyReLU', 'elu': 'ELU', 'gelu': 'GELU'}
STEMS = {'3x3': ('3x3 conv, stride 1', 1), '3x3s2': ('3x3 conv, stride 2 (halves the input)', 2),
         '7x7': ('7x7 conv, stride 2, + 3x3 max-pool, stride 2', 4)}
OPTIMIZERS = {'adam': 'Adam', 'adamw': 'AdamW (decoupled weight decay)', 'sgd': 'SGD (momentum 0.9)'}
SCHEDULES = {'constant': 'constant learning rate (`learn.fit`)',
             'one_cycle': 'one-cycle schedule (`learn.fit_one_cycle`, the lr is its peak)'}
LOSSES = {'ce': 'cross-entropy', 'bce': 'BCE with logits', 'dice': 'soft Dice',
          'bce_dice': '0.5 BCE with logits + 0.5 soft Dice'}
MIXES = {'none': 'no sample mixing', 'mixup': 'MixUp (fastai callback: two images and their labels blended)',
         'cutmix': 'CutMix (fastai callback: a patch of another image pasted in, labels mixed by its area)'}


def augment_descriptions():
    "The augmentation presets as `data.augment.AUGMENTATIONS` documents them: name -> the comment above its entry."
    import data.augment
    text = Path(data.augment.__file__).read_text()
    start = text.find('AUGMENTATIONS = {')
    out, comment = {}, []
    for line in text[start:].splitlines()[1:] if start >= 0 else []:
        s = line.strip()
        if s.startswith('}'): break
        if s.startswith('#'): comment.append(s.lstrip('#').strip()); continue
        m = re.match(r"'(\w+)'\s*:", s)
        if m: out[m.group(1)] = ' '.join(comment); comment = []
    return out


def _recipe(d):
    "A Recipe from a summary's or config's dict, or None when it does not parse (an older run)."
    from .recipe import Recipe
    try: return Recipe.from_dict(d) if isinstance(d, dict) else None
    except (TypeError, ValueError): return None


def _build(recipe):
    "(model, parameter count) of `recipe`, built without loading any checkpoint."
    from arch.layers import count_params
    from .train import build_model
    model = build_model(replace(recipe, init=None))
    return model, count_params(model)


def _dash(v): return '-'.join(map(str, v))


def _epochs(n): return f"{n} epoch{'' if n == 1 else 's'}"


def _fmt_params(n): return f"**{n:,} parameters** ({n / 1e6:.2f}M)"


def describe_resnet(recipe):
    "The classifier's architecture in words from its recipe, with its parameter count (the model is rebuilt)."
    from .train import n_classes_of
    m = recipe.model
    channels, blocks, stem, act = list(m['channels']), list(m['blocks']), m.get('stem', '3x3'), m.get('act', 'relu')
    stem_text, reduction = STEMS.get(stem, (stem, 1))
    sizes = [math.ceil(recipe.size / (reduction * 2 ** i)) for i in range(len(channels))]
    _, n = _build(recipe)
    return (f"ResNet: stem {stem_text} -> BN -> {ACTS.get(act, act)}; {len(channels)} stages of {_dash(channels)} channels "
            f"with {_dash(blocks)} BasicBlocks ({ACTS.get(act, act)}; the first block of stages 2-{len(channels)} has stride "
            f"2, 1x1 conv + BN skips where the shape changes), feature maps {_dash(sizes)} px for {recipe.size} px "
            f"inputs -> global average pool -> Linear({channels[-1]} -> {n_classes_of(recipe)}); {_fmt_params(n)}.")


def describe_unet(recipe):
    "The hand-written U-Net in words from its recipe: levels, widths, down/up sampling, head, parameter count."
    model, n = _build(recipe)
    m = recipe.model
    depth, act = m.get('depth', 4), ACTS.get(m.get('act', 'relu'), m.get('act'))
    down = {'maxpool': '2x2 max-pool', 'stride': 'a stride-2 first conv'}.get(m.get('down', 'maxpool'), m.get('down'))
    up = {'transpose': '2x2 transposed conv', 'bilinear': 'bilinear x2 + 1x1 conv'}.get(m.get('up', 'transpose'), m.get('up'))
    return (f"U-Net: {depth} down levels ({down}) and {depth} up levels ({up}) with concatenated skip connections; "
            f"widths {_dash(model.widths)} from full size to the bottleneck at 1/{2 ** depth} "
            f"({math.ceil(recipe.size / 2 ** depth)} px for {recipe.size} px inputs); every level two 3x3 conv-BN-{act}; "
            f"a 1x1 conv head to 1 channel of logits (sigmoid and threshold 0.5 at prediction); {_fmt_params(n)}.")


def describe_backbone(recipe, checkpoint=None):
    "The backbone U-Net in words: encoder (the classifier's stem and stages), adapters and resizing, decoder, counts."
    from arch.layers import count_params
    model, n = _build(recipe)
    enc = recipe.model['encoder']
    channels, blocks, stem = list(enc['channels']), list(enc['blocks']), enc.get('stem', '3x3')
    stem_text, r0 = STEMS.get(stem, (stem, 1))
    names = ['stem'] + [f'layer{i + 1}' for i in range(len(channels))]
    feat_ch, reductions = [channels[0], *channels], [r0] + [r0 * 2 ** i for i in range(len(channels))]
    def move(r, level):
        if r == 2 ** level: return 'as is'
        return ('bilinear-upsampled' if r > 2 ** level else 'average-pooled') + \
            (' to full size' if level == 0 else f' to 1/{2 ** level}')
    dec = list(model.decoder_channels)
    skips = [f"{names[i]} ({feat_ch[i]} ch at 1/{reductions[i]}) -> {dec[i]} ch, {move(reductions[i], i)}"
             for i in range(len(dec))]
    bottleneck = f"{names[-1]} ({feat_ch[-1]} ch at 1/{reductions[-1]}, {move(reductions[-1], len(dec))})"
    n_enc = count_params(model.encoder)
    return (f"Encoder: the T3.1 classifier's stem ({stem_text}) and {len(channels)} stages ({_dash(channels)} channels, "
            f"{_dash(blocks)} BasicBlocks), head and global pool dropped: {n_enc:,} parameters"
            + (f", loaded from `{checkpoint}`" if checkpoint else '') + ". "
            f"Adapters (1x1 conv-BN-act, then resized to the decoder level): {'; '.join(skips)}. Bottleneck: {bottleneck}. "
            f"Decoder: widths {_dash(dec)} (full size first), transposed-conv upsampling and concatenated skips, a 1x1 "
            f"head to 1 channel of logits; {_fmt_params(n)} in all, {n - n_enc:,} outside the encoder.")


def describe_training(recipe, precision=None, label='Training'):
    "The optimisation in words from a recipe: optimiser, lr, weight decay, schedule, epochs, batch, loss, mixing."
    lr = f"lr {recipe.lr:g}" + (f" (encoder {recipe.encoder_lr:g})" if recipe.encoder_lr else '')
    loss = LOSSES.get(recipe.loss, recipe.loss) + (f" with label smoothing {recipe.label_smoothing:g}"
                                                     if recipe.label_smoothing else '')
    parts = [f"{OPTIMIZERS.get(recipe.opt, recipe.opt)}, {lr}, weight decay {recipe.wd:g}",
             SCHEDULES.get(recipe.schedule, recipe.schedule), f"{_epochs(recipe.epochs)}, batch {recipe.bs}", f"loss {loss}"]
    if recipe.task == 'classify': parts.append(MIXES.get(recipe.mix, recipe.mix))
    if recipe.tta: parts.append('test-time augmentation (`learn.tta`) measured')
    if recipe.freeze: parts.append('encoder frozen (`learn.freeze()`, its BatchNorm kept in eval mode)')
    if recipe.train_on_valid: parts.append('trained on train + valid, last epoch kept')
    else: parts.append(f"best epoch by {recipe.monitor} kept")
    if precision: parts.append(f"precision {precision}")
    return f'{label}: ' + '; '.join(parts) + '.'


def describe_data(found, recipe):
    "Where the section's data came from, its size, split, resizing and augmentation, from its run's config.json."
    info = found.config.get('data') if isinstance(found.config.get('data'), dict) else {}
    source = found.source or 'unknown source'
    stand_in = (" **(a generated stand-in: its numbers are not those of the real dataset)**" if source == 'synthetic'
                else '')
    aug = augment_descriptions().get(recipe.augment, '').rstrip('.')
    resize = (f"Images squished to {recipe.size}x{recipe.size} px (fastai `Resize`, method squish: the whole image "
              f"resized, nothing cropped); augmentation `{recipe.augment}`" + (f": {aug}" if aug else '') + '.')
    counts = '/'.join(str(info.get(k, '?')) for k in ('n_train', 'n_valid', 'n_test'))
    if found.spec.data == 'tiny':
        names = info.get('classes') or []
        shown = ', '.join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else '')
        text = (f"Data: Tiny ImageNet, {source}{stand_in}, `{found.data_path}`: {len(names)} classes ({shown}); "
                f"{counts} train/valid/test images (stratified split of the train folder, valid share {recipe.valid_pct:g}, "
                f"seed {recipe.split_seed}; test = the official val split)"
                + (f"; at most {recipe.max_items} train images per class" if recipe.max_items else '') + '. ')
    else:
        text = (f"Data: moon renders, {source}{stand_in}, `{found.data_path}`: {counts} train/valid/test frames (seeded "
                f"split, valid {recipe.valid_pct:g}, test {recipe.test_pct:g})"
                + (f"; first {recipe.max_items} frames" if recipe.max_items else '')
                + "; masks binarised as rock = green or blue of the Kaggle RGB masks. ")
    return text + resize


# ----- the sections -------------------------------------------------------------------------------------------------

def _design(f, recipe, source, model_text):
    "A section's design paragraphs: the model (`model_text`, read from `source`), its training and its data."
    return [f"**Design** ({source}): {model_text}", describe_training(recipe, (f.config or {}).get('precision')),
            describe_data(f, recipe)]


def _fig(folder, name, caption):
    path = Path(folder) / name if folder else None
    return Figure(path, caption) if path and path.is_file() else None


def _figs(*figs): return [f for f in figs if f is not None]


def _pct(v): return '-' if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def _num(v, digits=3):
    if v is None or (isinstance(v, float) and math.isnan(v)): return '-'
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _epoch(v):
    "A best epoch (0-based, a mean over seeds) counted from 1: '3', or '3.5' for a mean."
    if v is None or (isinstance(v, float) and math.isnan(v)): return '-'
    v = float(v) + 1
    return str(int(v)) if v == int(v) else f"{v:.1f}"


def _embed(path, drop_title=True, level=4):
    "A Markdown file of a results folder, its title dropped (or demoted) so it nests under the section."
    path = Path(path)
    if not path.is_file(): return None
    text = path.read_text().strip()
    if drop_title and text.startswith('# '):
        title, _, text = text.partition('\n')
        text = f"**{title[2:].strip()}**\n\n{text.strip()}"
    return re.sub(r'^(#+) ', lambda m: '#' * min(6, len(m.group(1)) + level - 1) + ' ', text, flags=re.M)


def _rel_out(out, path):
    try: return Path(os.path.relpath(Path(path).resolve(), Path(out).resolve())).as_posix()
    except ValueError: return str(path)


def _header(out, found, per_warnings):
    "The section's provenance line and its warnings."
    f = found
    bits = [f"Spec {f.spec.spec}", f"results `{_rel_out(out, f.folder)}`"]
    if f.profile: bits.append(f"profile {f.profile}")
    if f.seeds is not None: bits.append(f"seeds {', '.join(map(str, f.seeds)) if isinstance(f.seeds, list) else f.seeds}")
    if f.summary.get('epochs') is not None: bits.append(_epochs(f.summary['epochs']))
    if f.spec.data: bits.append(f"data `{f.data_path}` ({f.source or 'unknown source'})")
    elif f.source: bits.append(f"inputs: {f.source}")
    items = ['*' + '; '.join(bits) + '.*']
    items += [f"> **Warning:** {w}" for w in per_warnings.get(f.spec.stage, [])]
    if f.newer:
        items.append("> Note: newer invocations of this stage did not finish and are not shown: "
                     + ', '.join(f"`{n}` ({s})" for n, s in f.newer) + '.')
    return items


def _not_run(out, found):
    spec = found.spec
    script = {'task1/variance': 'task1_variance', 'task1/gradients': 'task1_gradients'}.get(spec.stage, spec.stage)
    text = (f"**Not run yet**: no finished `{spec.stage}` run under `{out}` (spec {spec.spec}); "
            f"`python scripts/{script}.py --out {out}` runs it.")
    if found.newer:
        text += ' Unfinished invocations: ' + ', '.join(f"`{n}` ({s})" for n, s in found.newer) + '.'
    return [text]


def _task1(out, f):
    c, s = f.config or {}, f.summary
    if f.spec.kind == 'variance':
        design = (f"Design: a 5-layer probe net (`arch.probes.VarianceProbeNet`: five stride-2 3x3 convs and a global "
                  f"average pool, output (1, 512, 1, 1) per image) whose layer-3 weight variance is {c.get('ratio', 2):g}x "
                  f"that of layers 2 and 4, against an equal-variance control; {c.get('size', '?')} px inputs, "
                  f"weight seeds {c.get('seeds')}; inputs: random N(0,1)"
                  + (f" and {s.get('images')}" if s.get('images') else '') + '.')
        figs = _figs(_fig(f.folder, 'gap_histogram.png', 'GAP activation histograms, x2 net vs control'),
                     _fig(f.folder, 'layer_std.png', 'activation std per layer'))
        tables = [_embed(f.folder / 'table.md'), _embed(f.folder / 'weight_variances.md')]
        verdict = f"Largest relative error of the measured variance ratios: {s.get('max_ratio_error', float('nan')):.2g}."
    else:
        design = (f"Design: `arch.probes.DeepConvReLU`, {c.get('depth', '?')} x (Conv2d 3x3 -> ReLU), output "
                  f"(batch, 64, 8, 8); one backward per seed on a batch of {c.get('batch', '?')}; seeds {c.get('seeds')}; "
                  f"norm: {s.get('norm', 'L2 norm of the weight gradient')}.")
        figs = _figs(_fig(f.folder, 'grad_per_layer.png', 'weight-gradient norm per layer (one backward)'),
                     _fig(f.folder, 'signal_per_layer.png', 'forward and backward signal per layer'),
                     _fig(f.folder, 'init_and_depth.png', 'first/last gradient ratio vs initialisation and depth'))
        tables = [_embed(f.folder / 'table.md')]
        verdict = f"Check T1.3 (first layer's gradient smaller than the last's, every seed): **{'PASS' if s.get('passed') else 'FAIL'}**."
    explanation = _embed(f.folder / 'explanation.md', drop_title=False, level=4)
    return [design, figs, verdict, '**Explanation (computed from the measured numbers):**', explanation,
            *[t for t in tables if t]]


def _variants(f):
    "name -> (Recipe, run config) of the stage's variants, from their first seed's run folder."
    seeds = f.seeds or [0]
    out = {}
    for row in f.summary.get('rows', []):
        run = f.folder / f"{row['name']}-seed{seeds[0]}"
        if (run / 'config.json').is_file():
            config = read_json(run / 'config.json')
            out[row['name']] = (_recipe(config.get('recipe')), config)
    return out


def _resnet_rows(f, stats=False):
    header = ['variant', 'configuration', 'params (M)', 'valid acc (best epoch)', '95% over seeds', 'train acc',
              'best epoch', 'final train-valid gap', 's / run']
    if stats: header += ['share <= 0', 'last-layer act std', 'grad first/last']
    rows = []
    for r in f.summary.get('rows', []):
        ci = r.get('valid_acc_ci')
        row = [r['name'], r.get('config', ''), _num(r.get('params_M')), _pct(r.get('valid_acc')),
               f"+-{ci:.1%}" if ci is not None else 'one seed', _pct(r.get('train_acc')),
               _epoch(r.get('best_epoch')),
               _pct(r.get('final_gap')), _num(r.get('seconds'), 1)]
        if stats: row += [_num(r.get('dead_share')), _num(r.get('act_std_last')), _num(r.get('grad_first_over_last'), 3)]
        rows.append(row)
    return markdown_rows(header, rows) + '\n\nBest epoch counted from 1; valid accuracy at the best epoch by valid accuracy.'


def _design_variants(f):
    lines = []
    variants = _variants(f)
    for name, (recipe, config) in variants.items():
        if recipe is None: lines.append(f"- {name}: {config.get('model', '?')} (recipe not readable)"); continue
        lines.append(f"- **{name}**: {describe_resnet(recipe)}")
    base = _recipe(f.summary.get('recipe')) or next((r for r, _ in variants.values() if r), None)
    return lines, base


def _resnet(out, f):
    stats = f.spec.stage == 'stage3_3_activations'
    lines, base = _design_variants(f)
    items = ['**Design** (read from each variant\'s recipe in its run\'s config.json):', '\n'.join(lines)]
    if f.summary.get('chosen_from'): items.append(f"Configuration taken from: {f.summary['chosen_from']}")
    if base:
        items += [describe_training(base, (f.config or {}).get('precision')), describe_data(f, base)]
    items += [_resnet_rows(f, stats)]
    if f.spec.stage == 'stage2_baseline':
        figs = _figs(_fig(f.run, 'accuracy.png', 'accuracy: train and valid per epoch'),
                     _fig(f.run, 'loss.png', 'loss: train and valid per epoch'))
        if f.run and (f.run / 'model.txt').is_file():
            items.append(f"`print(model)` and the parameter count: `{_rel_out(out, f.run / 'model.txt')}`.")
    else:
        figs = _figs(_fig(f.folder, 'valid_accuracy.png', 'valid accuracy per epoch, all variants'),
                     _fig(f.folder, 'train_accuracy.png', 'train accuracy per epoch'),
                     _fig(f.folder, 'valid_loss.png', 'valid loss per epoch'),
                     _fig(f.folder, 'train_loss.png', 'train loss per epoch'))
        if stats: figs += _figs(_fig(f.folder, 'statistics_per_layer.png', 'activation and gradient statistics per layer'),
                                _fig(f.folder, 'gradients_over_training.png', 'weight-gradient norms over training'))
    items += [figs, '**Conclusion (computed by the stage from its numbers):**',
              f.summary.get('analysis') or f.summary.get('conclusion', '')]
    return items


def _final(out, f):
    s = f.summary
    final = _recipe(s.get('final_recipe') or s.get('best_recipe'))
    items = []
    if final: items += _design(f, final, 'the final recipe of summary.json', describe_resnet(final))
    if s.get('chosen_from'): items.append(f"Configuration taken from: {s['chosen_from']}")
    items += [_embed(f.folder / 'ablation.md') or '*No ablation table (ablation.md) in this run.*']
    run = f.run
    items.append(_embed(run / 'per_class.md') if run else None)
    items += [_figs(_fig(run, 'confusion_matrix.png', 'confusion matrix on the test set'),
                    _fig(run, 'test_samples.png', '10 random test images, true and predicted class'),
                    _fig(run, 'show_results.png', '`learn.show_results` on the test set'),
                    _fig(run, 'accuracy.png', 'accuracy per epoch'), _fig(run, 'loss.png', 'loss per epoch')),
              '**Conclusion (computed):** ' + s.get('conclusion', '')]
    return [i for i in items if i]


def _classifier(out, f):
    s = f.summary
    recipe = _recipe(s.get('best_recipe') or s.get('recipe'))
    items = []
    if recipe:
        items += _design(f, recipe, 'its recipe', describe_resnet(recipe))
        items[-1] += (" The 64 px Tiny ImageNet originals are brought to this size by the squish resize (upsampled, "
                      "nothing cropped).")
    rows = []
    for r in s.get('rows', []):
        vlo, vhi = wilson(r['valid_acc'], r.get('n_eval') or 0)
        tlo, thi = wilson(r.get('test_acc', float('nan')), r.get('n_test') or 0) if 'test_acc' in r else (None, None)
        rows.append([r['name'], r.get('config', ''), _num(r.get('params_M')), _pct(r['valid_acc']),
                     f"{_pct(vlo)}-{_pct(vhi)} (n={r.get('n_eval')})", _pct(r.get('test_acc')),
                     f"{_pct(tlo)}-{_pct(thi)} (n={r.get('n_test')})" if tlo is not None else '-',
                     _epoch(r.get('best_epoch')), r.get('n_seeds')])
    items.append(markdown_rows(['model', 'configuration', 'params (M)', 'valid acc', 'Wilson 95%', 'test acc', 'Wilson 95%',
                         'best epoch', 'seeds'], rows))
    items.append(_embed(f.run / 'per_class.md') if f.run else None)
    items += [_figs(_fig(f.run, 'accuracy.png', 'accuracy per epoch'), _fig(f.run, 'loss.png', 'loss per epoch'),
                    _fig(f.run, 'confusion_matrix.png', 'confusion matrix on the test set'),
                    _fig(f.run, 'test_samples.png', '10 random test images')),
              '**Conclusion (computed):** ' + s.get('conclusion', '')]
    if s.get('checkpoint'): items.append(f"Checkpoint kept for Task 3.3: `{_rel_out(out, f.folder / s['checkpoint'])}`.")
    return [i for i in items if i]


def _seg_table(rows):
    header = ['model', 'params (M)', 'trainable (M)', 'valid IoU', 'valid Dice', 'valid pixel acc', 'test IoU', 'test Dice',
              'real-frame IoU', 'real-frame Dice', 'epochs', 'seeds']
    body = [[r['name'], _num(r.get('params_M')), _num(r.get('trainable_M')), _num(r.get('iou')), _num(r.get('dice')),
             _num(r.get('pixel_acc')), _num(r.get('test_iou')), _num(r.get('test_dice')), _num(r.get('real_iou')),
             _num(r.get('real_dice')), r.get('epochs'), r.get('n_seeds')] for r in rows]
    return markdown_rows(header, body) + ('\n\nValid at the best epoch by valid IoU; threshold 0.5, counts summed over all '
                                   'pixels; real frame = the real Kaggle render of a known place (sim-to-real).')


def _real_note(run):
    if not run or not (run / 'summary.json').is_file(): return None
    r = read_json(run / 'summary.json')
    return (f"Real frame(s) scored: {r['real_frames']} from `{r['real_data']}`." if r.get('real_data') else
            "No real frame was available to score (sim-to-real check not done).")


def _unet(out, f):
    s = f.summary
    recipe = _recipe(s.get('best_recipe') or s.get('recipe'))
    items = []
    if recipe: items += _design(f, recipe, 'its recipe', describe_unet(recipe))
    items += [_seg_table(s.get('rows', [])), _real_note(f.run),
              _figs(_fig(f.run, 'prediction_0.png', 'valid frame: input, predicted mask, true mask'),
                    _fig(f.run, 'prediction_1.png', 'another valid frame'),
                    _fig(f.run, 'test_prediction_0.png', 'held-out test frame'),
                    _fig(f.run, 'real_prediction_0.png', 'the real Kaggle frame (sim-to-real)'),
                    _fig(f.run, 'iou.png', 'IoU per epoch'), _fig(f.run, 'loss.png', 'loss per epoch')),
              '**Conclusion (computed):** ' + s.get('conclusion', '')]
    return [i for i in items if i]


def _backbone(out, f):
    s = f.summary
    seeds = f.seeds or [0]
    a_run, b_run = f.folder / f'A-seed{seeds[0]}', f.folder / f'B-seed{seeds[0]}'
    a = _recipe(read_json(a_run / 'config.json')['recipe']) if (a_run / 'config.json').is_file() else _recipe(s.get('recipe'))
    b = _recipe(read_json(b_run / 'config.json')['recipe']) if (b_run / 'config.json').is_file() else None
    items = []
    if a:
        checkpoint = _rel_out(out, s['checkpoint']) if s.get('checkpoint') else None
        items += [f"**Design** (variant A's recipe): {describe_backbone(a, checkpoint)}",
                  describe_training(a, (f.config or {}).get('precision'), label='Variant A, training')]
        if b: items.append(describe_training(b, label="Variant B (A's best checkpoint, unfrozen, discriminative "
                                                       "learning rates), training"))
        items.append(describe_data(f, a))
    base = s.get('baseline')
    if base and base != 'trained here' and Path(base, 'summary.json').is_file():
        br = _recipe(read_json(Path(base, 'summary.json')).get('best_recipe'))
        items.append(f"Baseline row: the T3.2 run `{_rel_out(out, base)}`" +
                     (f" ({describe_unet(br).rstrip('.')})" if br else '') + '.')
    elif base: items.append(f"Baseline row: {base}.")
    items += [_seg_table(s.get('rows', [])), _real_note(b_run if b_run.is_dir() else a_run),
              _figs(_fig(a_run, 'prediction_0.png', 'A (frozen encoder): valid frame'),
                    _fig(b_run, 'prediction_0.png', 'B (fine-tuned): valid frame'),
                    _fig(b_run, 'test_prediction_0.png', 'B: held-out test frame'),
                    _fig(b_run, 'real_prediction_0.png', 'B: the real Kaggle frame'),
                    _fig(a_run, 'iou.png', 'A: IoU per epoch'), _fig(b_run, 'iou.png', 'B: IoU per epoch')),
              '**Conclusion (computed):** ' + s.get('conclusion', '')]
    return [i for i in items if i]


RENDER = {'variance': _task1, 'gradients': _task1, 'resnet': _resnet, 'final': _final, 'classifier': _classifier,
          'unet': _unet, 'backbone': _backbone}


def _provenance(out, found, general):
    rows = []
    for f in found:
        if not f.ran: rows.append([f.spec.title, 'not run yet', '-', '-', '-', '-']); continue
        data = f"`{f.data_path}`" if f.spec.data else (f.source or '-')
        rows.append([f.spec.title, f"`{_rel_out(out, f.folder)}`", data, f.source if f.spec.data else '-', f.profile or '-',
                     ', '.join(map(str, f.seeds)) if isinstance(f.seeds, list) else str(f.seeds)])
    items = ['## Where the numbers come from', markdown_rows(['section', 'results', 'data', 'source', 'profile', 'seeds'], rows)]
    items += [f"> **Warning:** {w}" for w in general] or ['All finished sections ran on the same data, profile and seeds.']
    synthetic = [f.spec.stage for f in found if f.ran and f.source == 'synthetic']
    if synthetic:
        items.append(f"> **Note:** {', '.join(synthetic)} ran on generated stand-in data: their numbers say that the code "
                     f"runs, not how the models do on the real datasets.")
    return items


def build_report(out, experiments_folder=None):
    """The report as a list of blocks (Markdown text, or a list of `Figure`s drawn as one row), and the sections' `Found`.
    `experiments_folder`: where `lab.stages.experiments_table` writes experiments.md/csv (None: the T2.13 table is
    not made)."""
    out = Path(out)
    found = collect(out)
    general, per = provenance_warnings(found)
    ran = sum(f.ran for f in found)
    blocks = ['# Lab report',
              f"Generated {datetime.now():%Y-%m-%d %H:%M} from the newest finished run of every stage under "
              f"`{out.resolve()}` ({ran} of {len(found)} sections run). Every table, number and conclusion below is read "
              f"from those runs' summary.json, config.json and tables; the design is read from their recipes.",
              *_provenance(out, found, general)]
    chapter = None
    for f in found:
        if f.spec.chapter != chapter:
            chapter = f.spec.chapter
            blocks.append(f"## {chapter}")
        blocks.append(f"### {f.spec.title}")
        if not f.ran: blocks += _not_run(out, f)
        else:
            blocks += _header(out, f, per)
            try: blocks += RENDER[f.spec.kind](out, f)
            except Exception as e:  # one unreadable section must not cost the whole report
                blocks.append(f"> **Warning:** this section could not be rendered ({type(e).__name__}: {e}).")
        if f.spec.stage == 'stage4_final': blocks += _experiments(out, experiments_folder)
    return blocks, found


def _experiments(out, folder):
    blocks = [f"### {EXPERIMENTS_TITLE}"]
    if folder is None: return blocks + ['*Not made here.*']
    from .stages import experiments_table
    try: experiments_table(out, folder)
    except FileNotFoundError as e: return blocks + [f"**Not run yet**: {e}."]
    return blocks + ["The newest finished run of every Task 2 stage (`lab.stages.experiments_table`; also in "
                     "experiments.md/csv beside this report).", _embed(Path(folder) / 'experiments.md')]


# ----- rendering ----------------------------------------------------------------------------------------------------

def _link(path, base):
    return urllib.parse.quote(Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix(), safe='/')


def _alt(text): return re.sub(r'([\\\[\]`*_])', r'\\\1', text)  # Markdown-escaped: the alt text reads as written


def render_markdown(blocks, base):
    "The report's Markdown, its figures linked relative to `base` (the folder the file will lie in)."
    parts = []
    for b in blocks:
        if isinstance(b, list):
            if not b: continue
            parts.append(' '.join(f"![{_alt(f.caption)}]({_link(f.path, base)})" for f in b))
            parts.append('*Figures, in order: ' + '; '.join(f.caption for f in b) + '.*')
        elif b: parts.append(str(b).strip())
    return '\n\n'.join(parts) + '\n'


def image_links(markdown_text):
    "The image links of a Markdown text, in order (URL-decoded)."
    return [urllib.parse.unquote(m) for m in re.findall(r'!\[(?:\\.|[^\]\\])*\]\(([^)\s]+)\)', markdown_text)]


MIME = {'.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif', '.svg': 'image/svg+xml',
        '.webp': 'image/webp'}

CSS = """
body { font-family: -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; color: #1f2328;
       max-width: 1180px; margin: 2em auto; padding: 0 1.5em; line-height: 1.5; font-size: 15px; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .25em; margin-top: 2.2em; color: #0b3d91; }
h3 { margin-top: 1.8em; color: #24292f; }
h4, h5, h6 { margin-top: 1.2em; }
code { background: #f3f4f6; padding: .1em .3em; border-radius: 4px; font-size: 88%; overflow-wrap: anywhere; }
td code { white-space: nowrap; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; display: block; overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fafbfc; }
img { max-width: 100%; max-height: 620px; margin: 4px 6px 4px 0; border: 1px solid #e5e7eb; vertical-align: top; }
img.pair { max-width: calc(50% - 24px); }
blockquote { margin: .8em 0; padding: .5em 1em; background: #fff8c5; border-left: 4px solid #d4a72c; }
blockquote p { margin: .2em 0; }
em { color: #57606a; }
"""


def _aspect(path):
    "Width / height of an image file (1 when it cannot be read)."
    from PIL import Image
    try:
        with Image.open(path) as im: return im.width / max(1, im.height)
    except (OSError, ValueError): return 1.0


def markdown_to_html(text, base, title='Lab report'):
    """A self-contained HTML page of the report's Markdown (markdown-it-py): every image link, resolved against `base`,
    becomes a base64 data URI."""
    from markdown_it import MarkdownIt
    md = MarkdownIt('commonmark', {'html': False}).enable('table')
    tokens = md.parse(text)
    def walk(ts):
        for t in ts:
            if t.type == 'image':
                path = Path(base) / urllib.parse.unquote(t.attrs['src'])
                t.meta['wide'] = _aspect(path) > 1.9
                data = base64.b64encode(path.read_bytes()).decode('ascii')
                t.attrs['src'] = f"data:{MIME.get(path.suffix.lower(), 'application/octet-stream')};base64,{data}"
            if t.children: walk(t.children)
    walk(tokens)
    for t in tokens:  # a row of several figures: two to a line, except wide ones (a row of panels)
        images = [c for c in (t.children or []) if c.type == 'image' and not c.meta.get('wide')]
        if len(images) > 1:
            for c in images: c.attrSet('class', 'pair')
    body = md.renderer.render(tokens, md.options, {})
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{html.escape(title)}</title>\n'
            f'<style>{CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n')


def _write(path, text):
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_report(out):
    """Write REPORT.md, REPORT.html and experiments.md/csv into ``<out>/report/<timestamp>/`` and copy REPORT.md and
    REPORT.html to ``<out>/``, each copy with figure links that resolve from where it lies. Returns their paths and
    the sections' `Found`."""
    out = Path(out)
    if not out.is_dir(): raise FileNotFoundError(f"{out}: no such results folder (run the experiments first, or pass --out)")
    with stage_dir(out, 'report') as folder:
        blocks, found = build_report(out, folder)
        text = render_markdown(blocks, folder)
        page = markdown_to_html(text, folder)
        _write(folder / 'REPORT.md', text)
        _write(folder / 'REPORT.html', page)
    final = folder.parent / folder.name[1:].removesuffix('.partial')  # stage_dir publishes the folder under this name
    top_md = _write(out / 'REPORT.md', render_markdown(blocks, out))
    top_html = _write(out / 'REPORT.html', page)
    return dict(folder=final, md=final / 'REPORT.md', html=final / 'REPORT.html', top_md=top_md, top_html=top_html,
                found=found)
