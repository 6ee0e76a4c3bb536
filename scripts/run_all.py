#!/usr/bin/env python
"""Run every experiment of the lab in order, in this one process, then the report.

Task 1 probes -> Task 2 stages (baseline, 3.1, 3.2, 3.3, final; each stage reads the previous one's choice) ->
Task 3 (128 px classifier, U-Net, U-Net on the classifier's backbone) -> report (REPORT.md, REPORT.html). Without a
GPU the quick profile runs (say --full to override). The scripts run in this process (fastai is imported once), each
as if called on its own with the flags given here: the recipe flags go to every training script. Stops at the first
failing script; `--resume` continues every stage where it stopped (finished stages and runs are kept, not redone).
Times go to results/run_all/<timestamp>/times.json.
"""
import importlib, sys, time

from lab.cli import TASK_ONLY, parse_jobs, parse_seeds, recipe_argv, recipe_flags, runtime_flags, script
from lab.io import write_json
from lab.recipe import pick_profile
from lab.results import stage_dir

# script, the data it takes (Tiny ImageNet / moon), whether it trains (takes the recipe and runtime flags); the probes
# take --out, --data and --quick, the report --out alone
SCRIPTS = [('task1_variance', 'tiny', False), ('task1_gradients', 'tiny', False),
           ('stage2_baseline', 'tiny', True), ('stage3_1_channels', 'tiny', True), ('stage3_2_blocks', 'tiny', True),
           ('stage3_3_activations', 'tiny', True), ('stage4_final', 'tiny', True),
           ('task3_classifier128', 'tiny', True), ('task3_unet', 'moon', True), ('task3_unet_backbone', 'moon', True),
           ('report', None, False)]


def flags(p):
    runtime_flags(p)
    recipe_flags(p)
    p.add_argument('--moon', default=None, help='moon data folder (default: known places, else a generated offline set)')
    p.add_argument('--only', default=None,
                   help=f"comma-separated scripts to run (default: all): {', '.join(s for s, *_ in SCRIPTS)}")


def argv_for(name, data_kind, trains, args, profile):
    "The command line `name` gets: its data, the profile, and for training scripts the recipe and runtime flags."
    data = getattr(args, 'data', None) if data_kind == 'tiny' else args.moon
    argv = ['--out', args.out] + (['--data', data] if data_kind and data else [])
    if not trains: return argv + (['--quick'] if data_kind and profile == 'quick' else [])
    argv += [f'--{profile}', '--jobs', str(args.jobs)]
    argv += ['--seeds', args.seeds] if args.seeds else []
    argv += ['--resume'] if args.resume else []
    argv += ['--tiny', args.data] if name == 'task3_unet_backbone' and getattr(args, 'data', None) else []
    # a recipe flag only the other task reads (e.g. --classes for the moon scripts) goes to the scripts that read it
    other = TASK_ONLY['segment' if data_kind == 'tiny' else 'classify']
    return argv + recipe_argv(args, skip=('data', *other))


def run(args):
    for flag, value in (('--from', args.from_), ('--config', args.config), ('--lr-find', args.lr_find)):
        if value: raise ValueError(f"{flag}: run_all.py does not take it (every stage reads the newest finished one "
                                   f"before it); give it to a single stage's script")
    profile = pick_profile(args.quick, args.full)
    if args.seeds: parse_seeds(args.seeds)
    parse_jobs(args.jobs)
    names = [s for s, *_ in SCRIPTS]
    unknown = sorted(set(args.only.split(',')) - set(names)) if args.only else []
    if unknown: raise ValueError(f"--only {args.only!r}: unknown scripts {unknown}; expected some of {names}")
    times, start = {}, time.perf_counter()
    for name, data_kind, trains in SCRIPTS:
        if args.only and name not in args.only.split(','): continue
        script_argv = argv_for(name, data_kind, trains, args, profile)
        print(f"\n=== {name}: {script_argv}", flush=True)
        t0 = time.perf_counter()
        try: importlib.import_module(f'scripts.{name}').main(script_argv)
        except SystemExit as e:
            if e.code not in (None, 0):
                raise RuntimeError(f"{name} failed (exit {e.code}); later scripts were not run; rerun with "
                                   f"--resume to continue where it stopped") from None
        times[name] = round(time.perf_counter() - t0, 1)
    total = round(time.perf_counter() - start, 1)
    with stage_dir(args.out, 'run_all') as folder:
        write_json(folder / 'times.json', dict(profile=profile, seconds=times, total=total, argv=sys.argv[1:]))
    print(f"\nall done in {total:.0f} s: " + ', '.join(f'{k} {v:.0f}s' for k, v in times.items()))


main = script(run, flags)
if __name__ == '__main__': main()
