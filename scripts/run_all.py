#!/usr/bin/env python
"""Run every experiment of the lab in order, in this one process, then the report.

Task 1 probes -> Task 2 stages (baseline, 3.1, 3.2, 3.3, final; each stage reads the previous one's choice) ->
Task 3 (128 px classifier, U-Net, U-Net on the classifier's backbone) -> report (REPORT.md, REPORT.html). Without a
GPU the quick profile runs (say --full to override). The scripts run in this process (fastai is imported once), each
as if called on its own with the flags given here: the recipe flags go to every training script. Stops at the first
failing script; `--resume` continues every stage where it stopped (finished stages and runs are kept, not redone).
Times go to results/run_all/<timestamp>/times.json. After its first training stage it estimates the time the rest
of the lab will take from the runs each script trains (`SCRIPTS`), as each stage does for its own runs after its
first epoch.
"""
import sys, time
from pathlib import Path

from fastai_lab.cli import run_script, script
from fastai_lab.flags import TASK_ONLY, parse_jobs, parse_seeds, recipe_argv, recipe_flags, runtime_flags
from fastai_lab.io import write_json
from fastai_lab.machine import announce, select_device
from fastai_lab.progress import duration
from fastai_lab.recipe import pick_profile
from fastai_lab.results import stage_dir

HERE = Path(__file__).resolve().parent  # the scripts folder

# script, the data it takes (Tiny ImageNet / moon), the training runs it makes per seed (0: it trains nothing; the
# others take the recipe and runtime flags; stage 4: its greedy ablation's rows at most, and the final model), for the
# estimate of the lab's time. The probes take --out, --data and --quick, the report --out alone.
SCRIPTS = [('task1_variance', 'tiny', 0), ('task1_gradients', 'tiny', 0),
           ('stage2_baseline', 'tiny', 1), ('stage3_1_channels', 'tiny', 2), ('stage3_2_blocks', 'tiny', 3),
           ('stage3_3_activations', 'tiny', 4), ('stage4_final', 'tiny', 12),
           ('task3_classifier128', 'tiny', 1), ('task3_unet', 'moon', 1), ('task3_unet_backbone', 'moon', 2),
           ('report', None, 0)]


def estimate(name, seconds, runs, later, n_seeds):
    """One line: the rest of the lab (`later`: the training scripts still to run, with their runs per seed) at the mean
    time of a run of `name` (`runs` per seed took `seconds`), one run after another."""
    per_run = seconds / max(1, runs * n_seeds)
    left = sum(r for _, r in later) * n_seeds
    if not later or per_run <= 0: return None
    return (f"run_all: {len(later)} training script{'s' if len(later) > 1 else ''} and {left} runs left, about "
            f"{duration(left * per_run)} at {per_run:.1f} s a run (every run as long as {name}'s; the final model's and "
            f"the 128 px classifier's take longer, stage 4 may train fewer rows)")


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
    argv += [f'--{profile}', '--jobs', str(args.jobs)] + (['--device', args.device] if args.device else [])
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
    select_device(args.device)
    profile = pick_profile(args.quick, args.full)
    announce(getattr(args, 'precision', None) or 'auto')
    if args.seeds: parse_seeds(args.seeds)
    parse_jobs(args.jobs)
    names = [s for s, *_ in SCRIPTS]
    unknown = sorted(set(args.only.split(',')) - set(names)) if args.only else []
    if unknown: raise ValueError(f"--only {args.only!r}: unknown scripts {unknown}; expected some of {names}")
    chosen = [(name, runs) for name, _, runs in SCRIPTS if not args.only or name in args.only.split(',')]
    times, start, estimated = {}, time.perf_counter(), False
    for name, data_kind, runs in SCRIPTS:
        trains = runs > 0
        if args.only and name not in args.only.split(','): continue
        script_argv = argv_for(name, data_kind, trains, args, profile)
        print(f"\n=== {name}: {script_argv}", flush=True)
        t0 = time.perf_counter()
        try: run_script(HERE / f'{name}.py', script_argv)
        except SystemExit as e:
            if e.code not in (None, 0):
                raise RuntimeError(f"{name} failed (exit {e.code}); later scripts were not run; rerun with "
                                   f"--resume to continue where it stopped") from None
        times[name] = round(time.perf_counter() - t0, 1)
        if trains and not estimated:  # after the first training stage: the rest of the lab at its speed
            estimated = True
            later = [(n, r) for n, r in chosen[[n for n, _ in chosen].index(name) + 1:] if r]
            line = estimate(name, times[name], runs, later, len(parse_seeds(args.seeds)) if args.seeds else 1)
            if line: print(f"\n{line}", flush=True)
    total = round(time.perf_counter() - start, 1)
    with stage_dir(args.out, 'run_all') as folder:
        write_json(folder / 'times.json', dict(profile=profile, seconds=times, total=total, argv=sys.argv[1:]))
    print(f"\nall done in {total:.0f} s: " + ', '.join(f'{k} {v:.0f}s' for k, v in times.items()))


main = script(run, flags)
if __name__ == '__main__': main()
