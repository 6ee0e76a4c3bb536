"""Describing runs from their recipes, in words: the models (rebuilt to count their parameters), their training and
their data."""
import math, re
from dataclasses import replace
from pathlib import Path

from ..recipe import LOSSES, MIXES, OPTIMIZERS, SCHEDULES, Recipe
from ..record import DATA_COUNTS
from .blocks import _epochs


ACT_NAMES = {'relu': 'ReLU', 'leakyrelu': 'LeakyReLU', 'elu': 'ELU', 'gelu': 'GELU'}
STEM_WORDS = {'3x3': ('3x3 conv, stride 1', 1), '3x3s2': ('3x3 conv, stride 2 (halves the input)', 2),
         '7x7': ('7x7 conv, stride 2, + 3x3 max-pool, stride 2', 4)}


def augment_descriptions():
    "The augmentation presets as `data.augment.AUGMENTATIONS` documents them: name -> the comment above its entry."
    from importlib.util import find_spec  # the module's file, not the module: it imports fastai.vision.all (seconds)
    text = Path(find_spec('fastai_lab.data.augment').origin).read_text()
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
    try: return Recipe.from_dict(d) if isinstance(d, dict) else None
    except (TypeError, ValueError): return None


def _build(recipe):
    "(model, parameter count) of `recipe`, built without loading any checkpoint."
    from fastai_lab.arch.layers import count_params  # here, not above: arch and lab.learner import fastai (seconds)
    from ..models import build_model
    model = build_model(replace(recipe, init=None))
    return model, count_params(model)


def _dash(v): return '-'.join(map(str, v))


def _fmt_params(n): return f"**{n:,} parameters** ({n / 1e6:.2f}M)"


def describe_resnet(recipe):
    "The classifier's architecture in words from its recipe, with its parameter count (the model is rebuilt)."
    from ..models import n_classes_of  # here, not above: it imports fastai (seconds)
    m = recipe.model
    channels, blocks, stem, act = list(m['channels']), list(m['blocks']), m.get('stem', '3x3'), m.get('act', 'relu')
    stem_text, reduction = STEM_WORDS.get(stem, (stem, 1))
    sizes = [math.ceil(recipe.size / (reduction * 2 ** i)) for i in range(len(channels))]
    _, n = _build(recipe)
    return (f"ResNet: stem {stem_text} -> BN -> {ACT_NAMES.get(act, act)}; {len(channels)} stages of {_dash(channels)} "
            f"channels with {_dash(blocks)} BasicBlocks ({ACT_NAMES.get(act, act)}; the first block of stages "
            f"2-{len(channels)} has stride 2, 1x1 conv + BN skips where the shape changes), feature maps "
            f"{_dash(sizes)} px for {recipe.size} px inputs -> global average pool -> "
            f"Linear({channels[-1]} -> {n_classes_of(recipe)}); {_fmt_params(n)}.")


def describe_unet(recipe):
    "The hand-written U-Net in words from its recipe: levels, widths, down/up sampling, head, parameter count."
    model, n = _build(recipe)
    m = recipe.model
    depth, act = m.get('depth', 4), ACT_NAMES.get(m.get('act', 'relu'), m.get('act'))
    down = {'maxpool': '2x2 max-pool', 'stride': 'a stride-2 first conv'}.get(m.get('down', 'maxpool'), m.get('down'))
    up = {'transpose': '2x2 transposed conv', 'bilinear': 'bilinear x2 + 1x1 conv'}.get(m.get('up', 'transpose'),
                                                                                         m.get('up'))
    return (f"U-Net: {depth} down levels ({down}) and {depth} up levels ({up}) with concatenated skip connections; "
            f"widths {_dash(model.widths)} from full size to the bottleneck at 1/{2 ** depth} "
            f"({math.ceil(recipe.size / 2 ** depth)} px for {recipe.size} px inputs); every level two 3x3 "
            f"conv-BN-{act}; "
            f"a 1x1 conv head to 1 channel of logits (sigmoid and threshold 0.5 at prediction); {_fmt_params(n)}.")


def describe_backbone(recipe, checkpoint=None):
    "The backbone U-Net in words: encoder (the classifier's stem and stages), adapters and resizing, decoder, counts."
    from fastai_lab.arch.layers import count_params  # here, not above: arch imports fastai (seconds)
    model, n = _build(recipe)
    enc = recipe.model['encoder']
    channels, blocks, stem = list(enc['channels']), list(enc['blocks']), enc.get('stem', '3x3')
    stem_text, r0 = STEM_WORDS.get(stem, (stem, 1))
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
    return (f"Encoder: the T3.1 classifier's stem ({stem_text}) and {len(channels)} stages ({_dash(channels)} "
            f"channels, {_dash(blocks)} BasicBlocks), head and global pool dropped: {n_enc:,} parameters"
            + (f", loaded from `{checkpoint}`" if checkpoint else '') + ". "
            f"Adapters (1x1 conv-BN-act, then resized to the decoder level): {'; '.join(skips)}. "
            f"Bottleneck: {bottleneck}. "
            f"Decoder: widths {_dash(dec)} (full size first), transposed-conv upsampling and concatenated skips, a 1x1 "
            f"head to 1 channel of logits; {_fmt_params(n)} in all, {n - n_enc:,} outside the encoder.")


def describe_training(recipe, precision=None, label='Training', bs_used=None):
    """The optimisation in words from a recipe: optimiser, lr, weight decay, schedule, epochs, batch, loss, mixing.
    `bs_used`: the batch the run used (config.json's data.bs), when the recipe's was capped at the training images."""
    lr = f"lr {recipe.lr:g}" + (f" (encoder {recipe.encoder_lr:g})" if recipe.encoder_lr else '')
    loss = LOSSES.get(recipe.loss, recipe.loss) + (f" with label smoothing {recipe.label_smoothing:g}"
                                                     if recipe.label_smoothing else '')
    parts = [f"{OPTIMIZERS.get(recipe.opt, recipe.opt)}, {lr}, weight decay {recipe.wd:g}",
             SCHEDULES.get(recipe.schedule, recipe.schedule),
             f"{_epochs(recipe.epochs)}, batch " + (f"{bs_used} (the recipe's {recipe.bs} capped at the training set)"
                                                    if bs_used and bs_used < recipe.bs else f"{recipe.bs}"),
             f"loss {loss}"]
    if recipe.task == 'classify':
        parts.append(MIXES.get(recipe.mix, recipe.mix) + (f", for the epochs that end by {recipe.mix_until:.0%} of the "
                                                          f"run" if recipe.mix_until < 1 else ''))
    if recipe.ema: parts.append(f"weight EMA, decay {recipe.ema:g} (the averaged weights validated and kept)")
    if recipe.tta:
        from ..ingredients import view_words  # here, not above: it imports fastai (seconds)
        parts.append(f'test-time augmentation measured ({view_words(recipe.tta_views)})' if recipe.tta_views else
                     'test-time augmentation (`learn.tta`) measured')
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
    if recipe.augment == 'rrc': aug += f" (min_scale {recipe.min_scale:g})"
    resize = (f"Images squished to {recipe.size}x{recipe.size} px (fastai `Resize`, method squish: the whole image "
              f"resized, nothing cropped); augmentation `{recipe.augment}`" + (f": {aug}" if aug else '') + '.')
    counts = '/'.join(str(info.get(k, '?')) for k in DATA_COUNTS)
    if found.spec.data == 'tiny':
        names = info.get('classes') or []
        shown = ', '.join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else '')
        text = (f"Data: Tiny ImageNet, {source}{stand_in}, `{found.data_path}`: {len(names)} classes ({shown}); "
                f"{counts} train/valid/test images (stratified split of the train folder, valid share "
                f"{recipe.valid_pct:g}, "
                f"seed {recipe.split_seed}; test = the official val split)"
                + (f"; at most {recipe.max_items} train images per class" if recipe.max_items else '') + '. ')
    elif info.get('held_out') is False:  # one frame: train, valid and test are the same frame
        text = (f"Data: moon renders, {source}{stand_in}, `{found.data_path}`: **one frame, shared by train, valid "
                f"and test, so its valid and test scores are not held out**"
                + "; masks binarised as rock = green or blue of the Kaggle RGB masks. ")
    else:
        text = (f"Data: moon renders, {source}{stand_in}, `{found.data_path}`: {counts} train/valid/test frames "
                f"(seeded split, valid {recipe.valid_pct:g}, test {recipe.test_pct:g})"
                + (f"; first {recipe.max_items} frames" if recipe.max_items else '')
                + "; masks binarised as rock = green or blue of the Kaggle RGB masks. ")
    return text + resize


def _data_info(f):
    "The data section of the section's run's config.json (counts, batch used, caveats), or {}."
    info = (f.config or {}).get('data')
    return info if isinstance(info, dict) else {}


def _training(f, recipe, **kw):
    "describe_training of `recipe` with the precision and the batch the section's run actually used."
    return describe_training(recipe, (f.config or {}).get('precision'), bs_used=_data_info(f).get('bs'), **kw)


def _design(f, recipe, source, model_text):
    "A section's design paragraphs: the model (`model_text`, read from `source`), its training and its data."
    return [f"**Design** ({source}): {model_text}", _training(f, recipe), describe_data(f, recipe)]
