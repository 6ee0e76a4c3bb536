"""The lab's flags: every `Recipe` field and model key as a flag, the runtime flags (--out, --seeds, --jobs...), and the
recipe a run trains resolved from them (`resolve_recipe`): the script's `RECIPE` scaled to the profile, or with
`--config <run>/config.json` that run's saved recipe, then every flag given. A flag the invocation would ignore (a
recipe or model flag of another task or model family, `--from` where no earlier stage is read, a script's own flags
with --config) is refused, naming it. `lab.cli.script` builds a script's command line from these.
"""
import argparse
from dataclasses import dataclass, field, fields, replace

from .machine import DEVICE_HELP
from .recipe import Recipe, pick_profile, scale_to_profile

__all__ = ['RUNTIME_HELP', 'Options', 'Parser', 'probe_flags', 'parse_seeds', 'parse_jobs', 'recipe_flags',
           'runtime_flags', 'recipe_argv', 'resolve_recipe', 'TASK_ONLY', 'FAMILIES']


RUNTIME_HELP = dict(
    out='results folder',
    quick='quick profile: few images, few epochs, quarter-size images (the default without a GPU)',
    full='full profile even without a GPU',
    seeds='seeds: a count (2 means 0,1) or a list (0,1); default 1 (with --config: the run\'s own seed)',
    jobs="training runs at once in separate processes: a number, or auto (several per GPU; 1 on a CPU)",
    device=DEVICE_HELP + "; how the run executes, recorded in config.json with the precision and why",
    resume='continue the newest unfinished invocation of this stage: finished runs are kept, an interrupted run '
           'continues from its last finished epoch',
    config="a run's config.json: train exactly that recipe again, into <out>/rerun/ (flags given as well override it)",
    from_="a finished stage folder to take the previous stage's choice from (default: the newest finished one on the "
          "same data); only the scripts that read an earlier stage take it",
    lr_find="run fastai's lr_find for the stage's first configuration, save the plot and suggestions, and stop",
    debug='show the full traceback on errors',
)


@dataclass
class Options:
    "How a stage runs (not what it trains): results folder, seeds, parallel jobs, resume, lr-finder."
    out: str = 'results'
    seeds: list = field(default_factory=lambda: [0])
    jobs: object = 1
    resume: bool = False
    config: str = None
    from_: str = None
    lr_find: bool = False
    profile: str = 'full'
    model_overrides: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def parse_seeds(seeds):
    "Seeds from a flag: '0,1,2', or a count 3 (meaning 0,1,2), or a list; a ValueError names --seeds otherwise."
    if isinstance(seeds, (list, tuple)): values = [int(s) for s in seeds]
    else:
        text = str(seeds).strip()
        try:
            if ',' in text or text.startswith('['):
                values = [int(s) for s in text.strip('[]').split(',') if s.strip()]
            else:
                n = int(text)
                if n < 1: raise ValueError(f"--seeds {seeds!r}: expected at least one seed")
                values = list(range(n))
        except ValueError as e:
            if str(e).startswith('--seeds'): raise
            raise ValueError(f"--seeds {seeds!r}: expected a count like 2 or a list like 0,1") from None
    if not values: raise ValueError(f"--seeds {seeds!r}: expected at least one seed")
    if any(s < 0 for s in values): raise ValueError(f"--seeds {seeds!r}: expected seeds >= 0")
    if len(set(values)) < len(values):
        raise ValueError(f"--seeds {seeds!r}: each seed may appear once (a repeated seed would repeat a run)")
    return values


def parse_jobs(jobs):
    "'auto' or a whole number >= 1."
    if str(jobs) == 'auto': return 'auto'
    try: n = int(jobs)
    except ValueError: n = 0
    if n < 1: raise ValueError(f"--jobs {jobs!r}: expected a whole number >= 1 or auto")
    return n


def _optional(kind):
    "A parser for a field that may be empty (None): '', 'none' -> None."
    def parse(text):
        return None if str(text).strip().lower() in ('', 'none', 'null') else kind(text)
    parse.__name__ = kind.__name__
    return parse


def _int_list(text):
    try: return [int(v) for v in str(text).replace(' ', '').split(',') if v]
    except ValueError: raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None


def _flag(name): return '--' + name.rstrip('_').replace('_', '-')


def recipe_flags(parser, model=None):
    "Add every Recipe field (and the keys of `model`, the script's model config) as flags that default to 'not given'."
    group = parser.add_argument_group('recipe (saved in config.json; default: the script\'s recipe, scaled to the profile)')
    for f in fields(Recipe):
        if f.name in ('model', 'profile', 'seed'): continue  # --quick/--full and --seeds set these
        if f.type is bool:
            group.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=f.metadata['help'])
        else:
            group.add_argument(_flag(f.name), dest=f.name, type=_optional(f.type), default=argparse.SUPPRESS,
                               metavar=f.type.__name__.upper(), help=f.metadata['help'])
    group.add_argument('--no-augment', dest='augment', action='store_const', const='none', default=argparse.SUPPRESS,
                       help='no augmentation (the same as --augment none)')
    if model:
        mgroup = parser.add_argument_group('model (keys of the script\'s model config)')
        for key, value in model.items():
            if isinstance(value, dict): continue  # nested configs (the backbone's encoder) come with their checkpoint
            kind = _int_list if isinstance(value, (list, tuple)) else _optional(type(value)) if value is not None else str
            mgroup.add_argument(_flag(key), dest=f'model.{key}', type=kind, default=argparse.SUPPRESS,
                                help=f'model: {key} (default: {value})')
    return parser


def recipe_argv(args, skip=()):
    "The recipe flags given in `args` (a namespace parsed with `recipe_flags`) as command-line tokens, to hand on."
    tokens = []
    for f in fields(Recipe):
        if f.name in skip or not hasattr(args, f.name): continue
        value = getattr(args, f.name)
        if f.type is bool: tokens.append(_flag(f.name) if value else '--no-' + f.name.replace('_', '-'))
        else: tokens += [_flag(f.name), '' if value is None else str(value)]
    return tokens


def runtime_flags(parser):
    "The flags that say how a stage runs: results folder, profile, seeds, jobs, resume, config, lr-finder, debug."
    g = parser.add_argument_group('how the stage runs')
    g.add_argument('--out', default='results', help=RUNTIME_HELP['out'])
    g.add_argument('--quick', action='store_true', help=RUNTIME_HELP['quick'])
    g.add_argument('--full', action='store_true', help=RUNTIME_HELP['full'])
    g.add_argument('--seeds', default=None, help=RUNTIME_HELP['seeds'])
    g.add_argument('--jobs', default='auto', help=RUNTIME_HELP['jobs'])
    g.add_argument('--device', default=None, help=RUNTIME_HELP['device'] + " (default: auto)")
    g.add_argument('--resume', action='store_true', help=RUNTIME_HELP['resume'])
    g.add_argument('--config', default=None, help=RUNTIME_HELP['config'])
    g.add_argument('--from', dest='from_', default=None, help=RUNTIME_HELP['from_'])
    g.add_argument('--lr-find', action='store_true', help=RUNTIME_HELP['lr_find'])
    g.add_argument('--debug', action='store_true', help=RUNTIME_HELP['debug'])
    return parser


def probe_flags(parser, stage, seeds, quick, data):
    """The flags every Task 1 probe has: --data (`data`: what real images are for), --out (it writes
    <out>/<stage>/<timestamp>/), --quick (`quick`: what it makes smaller), --seeds (default `seeds`)."""
    parser.add_argument('--data', default=None, help=data)
    parser.add_argument('--out', default='results', help=f'results root; this probe writes <out>/{stage}/<timestamp>/')
    parser.add_argument('--quick', action='store_true', help=f'{quick} (a fast CPU check)')
    parser.add_argument('--seeds', default=seeds, help="seeds: a count (3 means 0,1,2) or a list like 0,5")


class Parser(argparse.ArgumentParser):
    "argparse with the lab's one-line errors (a bad flag exits 2 with one line, not the usage)."
    def error(self, message):
        raise SystemExit(f"{self.prog}: error: {message} (see --help)")


# Recipe fields only one task reads: given for the other, they would be ignored (the moon frames have no classes, a
# U-Net's loss no label smoothing...), so they are refused instead.
TASK_ONLY = {'classify': ('classes', 'label_smoothing', 'tta', 'mix', 'train_on_valid'), 'segment': ('test_pct',)}
FAMILIES = {'resnet': 'ResNet classifier', 'unet': 'U-Net', 'backbone_unet': 'backbone U-Net'}


def _model_keys(arch):
    "The model-config keys the model of `arch` accepts (its constructor's arguments the lab does not set itself)."
    import inspect
    from .models import MODELS  # here: the models (and fastai) only when a recipe is checked
    return [k for k in inspect.signature(MODELS[arch]).parameters if k not in ('n_classes', 'in_ch')]


def _check_fits(recipe, overrides, model_overrides, source):
    """A ValueError naming the flag when a given flag does not fit the recipe's model family: a model flag of another
    family (e.g. --channels for a U-Net), --arch for another family's model config, or a recipe field only the other
    task reads. `source`: where the recipe came from, for the message."""
    family = f"{FAMILIES[recipe.arch]} ({recipe.arch}, from {source})"
    accepted = _model_keys(recipe.arch)
    for key in model_overrides:
        if key not in accepted:
            raise ValueError(f"{_flag(key)}: not a model flag of the {family}; its model flags are "
                             f"{', '.join(_flag(k) for k in recipe.model if k in accepted) or 'none'}")
    odd = [k for k in recipe.model if k not in accepted]
    if odd:
        raise ValueError(f"--arch {recipe.arch}: the model config {dict(recipe.model)} is not one of a "
                         f"{FAMILIES[recipe.arch]} ({', '.join(odd)} are not its arguments); give a config of its "
                         f"family with --config, or drop --arch")
    unused = [k for k in overrides if k in TASK_ONLY['segment' if recipe.task == 'classify' else 'classify']]
    if unused:
        other = 'segmentation (moon)' if recipe.task == 'classify' else 'classifiers (Tiny ImageNet)'
        raise ValueError(f"{_flag(unused[0])}: not used by the {family}: it applies to {other} only")


def resolve_recipe(default, args):
    "The recipe to train: `default` scaled to the profile, or the --config recipe; then the flags given."
    given = vars(args)
    overrides = {k: v for k, v in given.items() if k in {f.name for f in fields(Recipe)}}
    model_overrides = {k.split('.', 1)[1]: v for k, v in given.items() if k.startswith('model.')}
    if args.config:
        recipe = Recipe.load(args.config)
        print(f"recipe: {args.config} (the saved recipe of that run; flags given override it)")
    else:
        recipe = scale_to_profile(default, pick_profile(args.quick, args.full))
    recipe = replace(recipe, **overrides)
    source = args.config or (f"--arch {recipe.arch}" if 'arch' in overrides else "the script's recipe")
    _check_fits(recipe, overrides, model_overrides, source)
    if model_overrides: recipe = replace(recipe, model=dict(recipe.model, **model_overrides))
    return recipe, model_overrides


def _check_used(parser, args, prog, reads):
    """A ValueError naming a runtime or script flag that this invocation would ignore: --from where no earlier stage
    is read (`reads` None, or a --config rerun), the script's own flags with --config (a rerun trains the saved
    recipe alone)."""
    if args.from_ and (reads is None or args.config):
        why = (f"--config retrains the saved recipe of {args.config} as it is and reads no stage" if args.config else
               f"{prog} reads no earlier stage (it trains its own recipe)")
        raise ValueError(f"--from {args.from_}: {why}, so there is nothing to take from it; drop --from")
    if args.config:
        for name in parser.own_flags:
            if getattr(args, name) != parser.get_default(name):
                flag = next(a.option_strings[0] for a in parser._actions if a.dest == name)
                raise ValueError(f"{flag}: not used with --config, which retrains the saved recipe of {args.config} "
                                 f"alone, without {prog}'s own steps; drop {flag}")


def _options(args, recipe, model_overrides, extra_names=()):
    seeds = parse_seeds(args.seeds) if args.seeds is not None else ([recipe.seed] if args.config else [0])
    return Options(out=args.out, seeds=seeds, jobs=parse_jobs(args.jobs), resume=args.resume, config=args.config,
                   from_=args.from_, lr_find=args.lr_find, profile=recipe.profile, model_overrides=model_overrides,
                   extra={k: getattr(args, k) for k in extra_names})
