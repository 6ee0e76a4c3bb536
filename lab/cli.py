"""The one command line of the lab: `main = script(body, flags, recipe)` for every script; for a training script every
`Recipe` field is a flag, declared once in `lab.flags`.

A training script is `run(recipe, opts)` plus its default recipe: `main = script(run, recipe=RECIPE)`; any other
script is `body(args)` plus its flags: `main = script(body, flags)`. `main(argv)` runs it in this process. The recipe
a run trains is resolved in this order: the script's `RECIPE`, scaled to the profile (quick on a CPU unless
--full); or, with `--config <run>/config.json`, that run's saved recipe as it is; then every flag given on the
command line. The model flags are the keys of the script's model config (e.g. --channels 32,64,128 --act gelu).

Errors are one line naming the flag or file and what was expected (exit code 2); so is a flag the invocation would
ignore (`--from` where no earlier stage is read, a recipe or model flag of another task or model family, a script's
own flags with --config). `--debug` or LAB_DEBUG=1 shows the traceback. Ctrl-C or SIGTERM keeps every finished run
(see `lab.results.Stage`) and exits with 130.
"""
import argparse, os, runpy, signal, sys, textwrap, threading, traceback
from contextlib import contextmanager

from .distributed import init_distributed
from .figures import drawing_beside
from .io import check_out, error_line
from .flags import RUNTIME_HELP, Parser, _check_used, _options, recipe_flags, resolve_recipe, runtime_flags
from .machine import announce, select_device
from .recipe import describe_recipe
from .tensorboard import require_tensorboard

__all__ = ['script', 'one_line_errors', 'Interrupted', 'run_script']


class Interrupted(KeyboardInterrupt):
    "Raised by the SIGTERM handler, so that a killed run is treated like Ctrl-C: finished runs are kept."


@contextmanager
def one_line_errors(debug=False):
    """Turn any error into one line on stderr (exit 2) and Ctrl-C/SIGTERM into 'interrupted' (exit 130).
    `debug` (or LAB_DEBUG=1) lets the traceback through."""
    debug = debug or os.environ.get('LAB_DEBUG', '') not in ('', '0')
    previous = signal.getsignal(signal.SIGTERM)
    def on_term(signum, frame): raise Interrupted(f"signal {signum}")
    if _main_thread(): signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except SystemExit: raise
    except KeyboardInterrupt as e:
        if debug: traceback.print_exc()
        print(f"interrupted ({str(e) or 'Ctrl-C'}): finished runs are kept; rerun the same command with --resume "
              f"to continue", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as e:
        if debug: raise
        print(f"error: {_message(e)} (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if _main_thread(): signal.signal(signal.SIGTERM, previous)


def _main_thread():
    return threading.current_thread() is threading.main_thread()


def _message(e):
    text = error_line(e) if str(e).strip() else ''  # fastai's callback wrapper undone: the error itself shows
    if isinstance(e, (ValueError, FileNotFoundError, FileExistsError, PermissionError, OSError, KeyError)) and text:
        return text.strip("'\"") if isinstance(e, KeyError) else text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def script(body, flags=None, recipe=None, reads=None):
    """`main(argv=None)` of a script: its module docstring as --help, the flags `flags(parser)` adds, --debug, then
    `body`, inside the lab's one-line errors (`one_line_errors`).

    With `recipe` (a training script): every Recipe field and every key of `recipe.model` is a flag too, and so are
    the runtime flags (--out, --seeds, --jobs, --resume, --config, --from, --lr-find); `body(recipe, opts)` gets the
    recipe resolved from `recipe`, the profile, --config and the flags, and the runtime `Options`, whose `extra` holds
    the values of the flags `flags` added. Otherwise `body(args)` gets the parsed flags. `reads`: the earlier stage
    the script takes its choice from (what --from names); without it --from is refused, as is any flag the
    invocation would ignore (`_check_fits`, `_check_used`)."""
    module = sys.modules[body.__module__]
    prog = os.path.basename(getattr(module, '__file__', None) or body.__module__)

    def parser():
        epilog = (None if recipe is None else "default recipe (before the profile scales it; every field is a flag):\n"
                  + textwrap.fill(describe_recipe(recipe), 116, break_on_hyphens=False, initial_indent='  ',
                                  subsequent_indent='  '))
        p = Parser(prog=prog, description=module.__doc__, epilog=epilog,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
        if recipe is not None:
            runtime_flags(p)
            recipe_flags(p, recipe.model)
        before = {a.dest for a in p._actions}
        if flags: flags(p)
        if not any(a.dest == 'debug' for a in p._actions):
            p.add_argument('--debug', action='store_true', help=RUNTIME_HELP['debug'])
        p.own_flags = [a.dest for a in p._actions if a.dest not in before | {'debug', 'help'}]
        return p

    def main(argv=None):
        p = parser()
        args = _parse(p, argv)
        with one_line_errors(args.debug), drawing_beside():  # figures drawn on another core (lab.figures)
            if getattr(args, 'out', None): check_out(args.out)  # before any data is read or decoded
            if recipe is None: return body(args)
            if args.dist_timeout <= 0: raise ValueError(f"--dist-timeout {args.dist_timeout:g}: expected minutes > 0")
            init_distributed(args.dist_timeout)  # under torchrun: one model trained by every process (DDP)
            _check_used(p, args, prog, reads)
            select_device(args.device)  # before the profile, which follows the device (full on a GPU)
            resolved, model_overrides = resolve_recipe(recipe, args)
            announce(resolved.precision)  # device and precision, and why (a bad ask fails here, before any folder)
            if args.tensorboard: require_tensorboard()  # missing: one line now, not after the first run
            opts = _options(args, resolved, model_overrides, p.own_flags)
            if args.config:  # that run's recipe alone, not the stage's variants
                from .stage import rerun  # the stage machinery, only for a training run
                return rerun(opts, resolved, args.config)
            return body(resolved, opts)
    main.parser = parser
    return main


def _parse(parser, argv):
    try: return parser.parse_args(argv)
    except SystemExit as e:
        if isinstance(e.code, str): print(e.code, file=sys.stderr); raise SystemExit(2) from None
        raise


def run_script(path, argv):
    """Run the script at `path` in this process as `python <path> <argv...>` would (run_all.py runs every script so,
    fastai imported once); its SystemExit passes through. Scripts are run, never imported as a package."""
    saved = sys.argv
    sys.argv = [str(path), *map(str, argv)]
    try: runpy.run_path(str(path), run_name='__main__')
    finally: sys.argv = saved
