"""A run's recipe: everything a training run depends on, in one dataclass.

Each script states its defaults as one `Recipe` block at its top; the profile only scales it (images per class,
epochs, image size, batch); the command line overrides any field (`lab.cli`); the resolved recipe is saved in the
run's `config.json` and checkpoint, and `--config <run>/config.json` reruns that run exactly. Stages hand each
other recipes through `lab.lookup.stage_choice`, never through printed strings or summary keys.

The named recipes below are the lab's: `SPEC` (T2.5, every Task 2 comparison, so that they stay like for like),
`FINAL` (the final model: each ingredient is measured one at a time by stage 4's recipe ablation), `CLASSIFIER_128`
(T3.1), `UNET` (T3.2) and `BACKBONE_UNET` (T3.3).
"""
import dataclasses, json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .machine import default_device, has_gpu

__all__ = ['Recipe', 'PROFILES', 'scale_to_profile', 'pick_profile', 'SPEC', 'FINAL', 'CLASSIFIER_128', 'UNET',
           'BACKBONE_UNET', 'ARCHS', 'OPTIMIZERS', 'SCHEDULES', 'LOSSES', 'AUGMENTS', 'MIXES', 'PRECISIONS',
           'ROCKS', 'describe_model', 'describe_recipe']

ARCHS = ('resnet', 'unet', 'backbone_unet')
# the choices of a field, each with the words the report describes it in
OPTIMIZERS = {'adam': 'Adam', 'adamw': 'AdamW (decoupled weight decay)', 'sgd': 'SGD (momentum 0.9)',
              # fastai's own `ranger` (RAdam + Lookahead, k=6, alpha 0.5) with the settings of fastai's Imagenette
              # example (nbs/examples/train_imagenette.py: mom 0.9, sqr_mom 0.99, eps 1e-6), decoupled weight decay
              'ranger': "fastai's ranger (RAdam + Lookahead; mom 0.9, sqr_mom 0.99, eps 1e-6, decoupled weight decay)",
              # torch's SGD with Nesterov momentum (Sutskever et al. 2013), L2 weight decay: the classic CIFAR ResNet
              'sgd_nesterov': 'SGD with Nesterov momentum 0.9 (L2 weight decay)'}
SCHEDULES = {'constant': 'constant learning rate (`learn.fit`)',
             'one_cycle': 'one-cycle schedule (`learn.fit_one_cycle`, the lr is its peak)',
             # fastai's `fit_flat_cos`, the schedule of fastai's Imagenette leaderboard recipe (with ranger)
             'flat_cos': 'flat, then cosine annealing (`learn.fit_flat_cos`: the lr held for 75% of the steps)'}
LOSSES = {'ce': 'cross-entropy', 'bce': 'BCE with logits', 'dice': 'soft Dice',
          'bce_dice': '0.5 BCE with logits + 0.5 soft Dice'}
AUGMENTS = ('none', 'flip', 'light', 'padcrop', 'rrc', 'seg')
MIXES = {'none': 'no sample mixing', 'mixup': 'MixUp (fastai callback: two images and their labels blended)',
         'cutmix': 'CutMix (fastai callback: a patch of another image pasted in, labels mixed by its area)'}
PRECISIONS = ('auto', 'bf16', 'fp16', 'fp32')
ROCKS = ('all', 'large')


def _help(text, **kw): return field(metadata={'help': text}, **kw)


@dataclass(frozen=True)
class Recipe:
    "Everything one training run depends on; `replace(recipe, lr=...)` makes a variant."
    # what is trained
    arch: str = _help('model family: resnet (classifier), unet (T3.2), backbone_unet (T3.3)', default='resnet')
    model: dict = _help("the model's arguments (see arch.resnet.ResNet, arch.unet.UNet, arch.unet.BackboneUNet)",
                        default_factory=dict)
    init: str = _help('checkpoint to start from: a classifier for the backbone U-Net encoder, or a whole model',
                      default=None)
    freeze: bool = _help('backbone U-Net: train with the encoder frozen (variant A)', default=False)
    # data
    data: str = _help('dataset folder (default: known places, else a generated offline stand-in)', default=None)
    classes: str = _help("Tiny ImageNet classes: a count '10', count@offset '10@20', or wnids 'n01443537,n01629819'",
                         default='10')
    valid_pct: float = _help('share of the training folder (per class) held out as valid', default=0.2)
    test_pct: float = _help('moon only: share of the frames held out as test (Tiny ImageNet: test = official val)',
                            default=0.1)
    # D4's "large rocks only": the Kaggle masks' blue (large rocks) alone is rock; green (small rocks) is background
    rocks: str = _help('moon masks: all (small and large rocks are rock) or large (the large, blue rocks only)',
                       default='all')
    split_seed: int = _help('seed of the train/valid(/test) split, the same for every run so all see one split',
                            default=42)
    size: int = _help('image size in px (square; images are squished, not cropped)', default=64)
    augment: str = _help('batch augmentation on the device: none, flip, light (flip/rotate/zoom/lighting), padcrop '
                         '(reflect-pad 8 + random crop + flip), rrc (random resized crop + flip), seg '
                         '(flip/rotate/zoom/lighting, masks follow)', default='flip')
    # rrc: the smallest crop, as a share of the image's area; 0.35 is fastai's Imagenette recipe
    # (RandomResizedCrop(size, min_scale=0.35) in nbs/examples/train_imagenette.py)
    min_scale: float = _help('augment rrc: the smallest crop area, as a share of the image (0.35: fastai\'s Imagenette '
                             'recipe)', default=0.35)
    mix: str = _help('sample mixing: none, mixup or cutmix (fastai callbacks)', default='none')
    # Mixing for the first part of training only: fastai's Imagenette notes say mixup "tends to only help for 80+
    # epochs"; switching it off for the last epochs lets a short run fit the real images (lab.ingredients.MixUntil)
    mix_until: float = _help('mixing only in the epochs that end by this share of the run (0.8: off for the last '
                             'fifth; 1: all epochs)', default=1.0)
    max_items: int = _help('images kept per class (moon: frames kept); empty: all', default=None)
    train_on_valid: bool = _help('train on train + valid (stage 4\'s --refit row, once the recipe is fixed on '
                                 'valid; never the headline): the last epoch is kept', default=False)
    # optimisation
    opt: str = _help('optimiser: adam (no weight decay, T2.5), adamw (decoupled decay), sgd (momentum 0.9), '
                     'sgd_nesterov (Nesterov momentum 0.9), ranger (fastai: RAdam + Lookahead)', default='adam')
    lr: float = _help('learning rate (the peak of one_cycle)', default=1e-3)
    encoder_lr: float = _help('backbone U-Net: learning rate of the encoder group (empty: lr)', default=None)
    wd: float = _help('weight decay', default=0.0)
    schedule: str = _help('constant (fit), one_cycle (fit_one_cycle) or flat_cos (fit_flat_cos)', default='constant')
    epochs: int = _help('epochs', default=25)
    bs: int = _help('batch size (validation uses 4x)', default=128)
    loss: str = _help('ce (cross-entropy), bce, dice, bce_dice (0.5 + 0.5)', default='ce')
    label_smoothing: float = _help('label smoothing of the cross-entropy (0: none)', default=0.0)
    # Weight EMA (lab.ingredients.WeightEMA): airbench's weight averaging (and Lookahead) cut its CIFAR-10 epochs
    # from 13.5 to 12 (Keller Jordan, airbench); the decay warms up like TensorFlow's ExponentialMovingAverage
    ema: float = _help('average the weights over the optimiser steps with this decay (e.g. 0.999; 0: off); the '
                       'averaged weights are validated, checkpointed and exported', default=0.0)
    tta: bool = _help('also evaluate with test-time augmentation; the test report then rests on its predictions',
                      default=False)
    # Multi-view TTA (lab.ingredients.multi_view_logits): airbench's flip + translate test-time augmentation cut its
    # epochs further, to 10.8; fastbook ch. 7 measures +1.1 points with `learn.tta` on Imagenette
    tta_views: int = _help("tta: 0 = fastai's learn.tta (4 passes with the training augmentation, blended with the "
                           "plain one); 2-10 = that many fixed views (the image, its flip, shifted copies and their "
                           "flips), logits averaged", default=0)
    precision: str = _help('auto (bf16 mixed on a GPU with native bf16, fp16 mixed with loss scaling on older CUDA '
                           'GPUs, fp32 on MPS and the CPU: lab.machine), bf16, fp16 or fp32', default='auto')
    deterministic: bool = _help('GPU: deterministic cuDNN kernels (slower); CPU runs always are', default=False)
    seed: int = _help('seed of the initialisation, batch order and augmentation', default=0)
    profile: str = _help('the profile the recipe was scaled to (quick or full)', default='full')

    def __post_init__(self):
        # JSON has no tuples: hold lists, so that a recipe read back from config.json compares equal
        object.__setattr__(self, 'model', json.loads(json.dumps(dict(self.model))))
        self.validate()

    def validate(self):
        "Raise a ValueError naming the flag for a value the lab cannot run."
        def need(ok, flag, value, expected):
            if not ok: raise ValueError(f"--{flag} {value!r}: expected {expected}")
        choices = dict(arch=ARCHS, opt=OPTIMIZERS, schedule=SCHEDULES, loss=LOSSES, augment=AUGMENTS, mix=MIXES,
                       precision=PRECISIONS, rocks=ROCKS)
        for name, allowed in choices.items():
            need(getattr(self, name) in allowed, name.replace('_', '-'), getattr(self, name), f"one of {', '.join(allowed)}")
        need(isinstance(self.epochs, int) and self.epochs >= 1, 'epochs', self.epochs, 'a whole number >= 1')
        need(isinstance(self.bs, int) and self.bs >= 1, 'bs', self.bs, 'a whole number >= 1')
        need(isinstance(self.size, int) and self.size >= 8, 'size', self.size, 'a whole number of pixels >= 8')
        need(self.lr > 0, 'lr', self.lr, 'a positive number')
        need(self.encoder_lr is None or self.encoder_lr > 0, 'encoder-lr', self.encoder_lr, 'a positive number')
        need(self.wd >= 0, 'wd', self.wd, 'a number >= 0')
        need(0 <= self.label_smoothing < 1, 'label-smoothing', self.label_smoothing, 'a number in [0, 1)')
        need(0 < self.min_scale <= 1, 'min-scale', self.min_scale, 'a share of the image area in (0, 1]')
        need(0 < self.mix_until <= 1, 'mix-until', self.mix_until, 'a share of the epochs in (0, 1]')
        need(self.mix_until == 1 or self.mix != 'none', 'mix-until', self.mix_until, '1 without --mix (nothing to stop)')
        need(0 <= self.ema < 1, 'ema', self.ema, 'a decay in [0, 1) (0: off)')
        need(isinstance(self.tta_views, int) and (self.tta_views == 0 or 2 <= self.tta_views <= 10), 'tta-views',
             self.tta_views, "0 (fastai's learn.tta) or a number of views from 2 to 10")
        need(0 < self.valid_pct < 1, 'valid-pct', self.valid_pct, 'a fraction in (0, 1)')
        need(0 <= self.test_pct < 1 and self.valid_pct + self.test_pct < 1, 'test-pct', self.test_pct,
             'a fraction in [0, 1) that leaves frames to train on')
        need(self.max_items is None or self.max_items >= 2, 'max-items', self.max_items, 'empty (all) or >= 2')
        need(self.profile in PROFILES, 'profile', self.profile, f"one of {', '.join(PROFILES)}")
        seg = self.arch != 'resnet'
        need(seg == (self.loss != 'ce'), 'loss', self.loss,
             'bce, dice or bce_dice for a U-Net' if seg else 'ce for a classifier')
        need(not (seg and self.mix != 'none'), 'mix', self.mix, "'none' for segmentation")
        return self

    @property
    def task(self):
        "'classify' (Tiny ImageNet) or 'segment' (moon)."
        return 'classify' if self.arch == 'resnet' else 'segment'

    @property
    def monitor(self):
        "The valid metric that picks the best epoch (and its checkpoint)."
        return 'valid_accuracy' if self.task == 'classify' else 'valid_iou'

    def to_dict(self): return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d, source='recipe'):
        "A Recipe from a dict (e.g. config.json's 'recipe'); unknown keys are an error that names them."
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown: raise ValueError(f"{source}: unknown recipe fields {unknown}")
        return cls(**d)

    @classmethod
    def load(cls, path):
        "The recipe saved in a run's config.json (or a checkpoint's 'recipe'), with an error that names the file."
        path = Path(path)
        try: d = json.loads(path.read_text())
        except FileNotFoundError: raise FileNotFoundError(f"{path}: no such file (expected a run's config.json)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e: raise ValueError(f"{path}: not a JSON file ({e})") from None
        if not isinstance(d, dict) or 'recipe' not in d:
            raise ValueError(f"{path}: no 'recipe' in it (expected a run's config.json)")
        return cls.from_dict(d['recipe'], source=str(path))

    def data_key(self):
        "What two runs must share for their numbers to be compared: data, classes, split, image size and profile."
        keys = ('data', 'classes', 'valid_pct', 'split_seed', 'max_items', 'profile')
        seg = ('test_pct',) + (('rocks',) if self.rocks != 'all' else ()) if self.task == 'segment' else ()
        return {k: getattr(self, k) for k in keys + seg}  # rocks only when set: keys of earlier runs stay the same


# What a profile changes, and nothing else. quick: runs every script end to end on a 2-core CPU in minutes; its
# numbers mean nothing. Images are a quarter of the size (64 -> 16 px, 128 -> 32 px) because CPU time grows with the
# pixels, and 15 images per class (12 train, 3 valid; 15 test) or 20 moon frames.
PROFILES = {
    'full': dict(),
    'quick': dict(epochs=2, max_items_classify=15, max_items_segment=20, bs_classify=32, bs_segment=4, size_div=4),
}


def scale_to_profile(recipe, profile):
    "`recipe` scaled to `profile` ('quick' or 'full'); a recipe already scaled is returned as it is."
    if profile not in PROFILES: raise ValueError(f"profile {profile!r}: expected one of {', '.join(PROFILES)}")
    if recipe.profile == profile or profile == 'full': return replace(recipe, profile=profile)
    p, task = PROFILES[profile], recipe.task
    return replace(recipe, profile=profile, epochs=min(recipe.epochs, p['epochs']), size=recipe.size // p['size_div'],
                   max_items=p[f'max_items_{task}'], bs=min(recipe.bs, p[f'bs_{task}']))


def pick_profile(quick=False, full=False):
    "'quick' or 'full'. Without a flag: full on a GPU (CUDA or Apple's MPS), quick on a CPU (said)."
    if quick and full: raise ValueError("--quick and --full contradict each other: give one")
    if quick: return 'quick'
    if full: return 'full'
    if has_gpu():
        if default_device().type == 'mps':
            print("NOTICE: Apple's MPS GPU: the full profile runs, as on any GPU; after the first epoch a line "
                  "estimates how long each stage takes here (pass --quick for a short check).")
        return 'full'
    print("NOTICE: no GPU in use, so the quick profile runs (few images, few epochs, quarter-size images); "
          "pass --full to run the full spec on this CPU anyway.")
    return 'quick'


def describe_recipe(recipe):
    "Every field of `recipe` that is set, as 'name=value' words (the model as `describe_model` gives it)."
    values = {f.name: getattr(recipe, f.name) for f in fields(recipe)}
    values['model'] = describe_model(recipe).replace(' ', ', ')
    return ' '.join(f"{k}={v}" for k, v in values.items() if v not in (None, '', {}))


def describe_model(recipe):
    "A short human description of the model config, e.g. 'channels=32-64-128-256 blocks=2-2-2-2 act=relu stem=3x3'."
    def fmt(v): return '-'.join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    model = dict(recipe.model)
    enc = model.pop('encoder', None)
    text = ' '.join(f'{k}={fmt(v)}' for k, v in model.items())
    return f"encoder[{' '.join(f'{k}={fmt(v)}' for k, v in enc.items())}] {text}".strip() if enc else text


# ----- the lab's recipes ------------------------------------------------------------------------------------------

# T2.5: the baseline ResNet (3x3 stem for 64 px, 4 stages of 2 blocks, ReLU, 2.80M parameters: ResNet18's layout at
# half width, inside the 5M budget with room for stage 3.2's [3,3,3,3]); Adam lr 1e-3, constant, 25 epochs (20-30),
# flips. Every Task 2 comparison trains this recipe, so that only the studied choice differs.
SPEC = Recipe(arch='resnet', model=dict(channels=(32, 64, 128, 256), blocks=(2, 2, 2, 2), act='relu', stem='3x3'),
              opt='adam', lr=1e-3, wd=0.0, schedule='constant', epochs=25, bs=128, loss='ce', size=64,
              augment='flip')

# T2.10: the final model's recipe (what --no-ablation trains). Stage 4 tries its ingredients and the newer ones of
# lab/ablation.py on SPEC greedily (the recipe ablation); every choice is made on valid accuracy, never on the test
# set. Trained on train only, so that its checkpoint is its best epoch by valid accuracy (T2.11); 6-view TTA (the image,
# its flip, two shifted copies and their flips).
FINAL = replace(SPEC, opt='adamw', lr=3e-3, wd=0.05, schedule='one_cycle', label_smoothing=0.1, augment='padcrop',
                mix='cutmix', epochs=35, tta=True, tta_views=6)

# T3.1: 128 px classifier (64 px originals squished up to 128), the U-Net backbone. The 3x3 stride-2 stem brings
# 128 px to the 64 px maps the stages were designed for; the encoder offers features at 1/2..1/16 of the input.
# The final recipe (trained on train only: T3.1 reports valid accuracy), with fastai's learn.tta as before.
CLASSIFIER_128 = replace(FINAL, model=dict(channels=(32, 64, 128, 256), blocks=(2, 2, 2, 2), act='relu',
                                           stem='3x3s2'), size=128, tta_views=0)

# T3.2: the hand-written U-Net, base 32, 4 max-pool downs / 4 transposed-conv ups (2.35M parameters); 0.5 BCE +
# 0.5 soft Dice; Adam one-cycle 1e-3; flips, rotation <= 5 deg, zoom <= 1.1, lighting; 30 epochs, batch 16.
UNET = Recipe(arch='unet', model=dict(base=32, depth=4, down='maxpool', up='transpose', act='relu'),
              opt='adam', lr=1e-3, schedule='one_cycle', epochs=30, bs=16, loss='bce_dice', size=128, augment='seg',
              classes='')

# T3.3: U-Net on the T3.1 classifier's stem and stages (`init`: its checkpoint, filled in by the script).
# A: encoder frozen, decoder trained like the U-Net. B (the script): A's model unfrozen, fine-tuned for half as
# many epochs with discriminative learning rates, encoder 1e-5 and the rest 1e-4.
BACKBONE_UNET = replace(UNET, arch='backbone_unet', model=dict(encoder=CLASSIFIER_128.model), freeze=True)
