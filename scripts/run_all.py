#!/usr/bin/env python
"""Run every experiment of the lab in order, each as its own script, then the report.

Task 1 probes -> Task 2 stages (baseline, 3.1, 3.2, 3.3, final; each stage reads the previous one's choice)
-> Task 3 (128 px classifier, U-Net, U-Net on the classifier's backbone) -> report. Without a GPU the quick
profile runs (say --full to override). Stops at the first failing script; times go to results/run_all/<timestamp>/times.json.
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import subprocess, time
from fastcore.script import call_parse

from lab.profile import pick_profile
from lab.runs import stage_dir, write_json

HERE = Path(__file__).resolve().parent
# script, takes --data (Tiny ImageNet) / --moon, trains (takes --epochs/--seeds)
SCRIPTS = [('task1_variance', 'tiny', False), ('task1_gradients', None, False),
           ('stage2_baseline', 'tiny', True), ('stage3_1_channels', 'tiny', True), ('stage3_2_blocks', 'tiny', True),
           ('stage3_3_activations', 'tiny', True), ('stage4_final', 'tiny', True),
           ('task3_classifier128', 'tiny', True), ('task3_unet', 'moon', True), ('task3_unet_backbone', 'moon', True),
           ('report', None, False)]


@call_parse
def main(data: str = None,  # Tiny ImageNet folder (default: known places, else a generated offline set)
         moon: str = None,  # moon data folder (default: known places, else a generated offline set)
         out: str = 'results',  # results folder
         quick: bool = False,  # quick profile: few images and epochs (default on a CPU)
         full: bool = False,  # full profile even without a GPU
         seeds: str = '1',  # seeds for every training script: a count (2) or a list (0,1)
         only: str = None):  # comma-separated script names to run (default: all)
    profile = pick_profile(quick, full)['name']
    chosen = [s for s in SCRIPTS if not only or s[0] in only.split(',')]
    unknown = set(only.split(',')) - {s[0] for s in SCRIPTS} if only else set()
    if unknown: raise SystemExit(f"--only: unknown scripts {sorted(unknown)}; expected some of {[s[0] for s in SCRIPTS]}")
    times = {}
    for name, data_kind, trains in chosen:
        cmd = [sys.executable, str(HERE / f'{name}.py'), '--out', out]
        if profile == 'quick' or trains: cmd.append(f'--{profile}')
        if data_kind == 'tiny' and data: cmd += ['--data', data]
        if data_kind == 'moon' and moon: cmd += ['--data', moon]
        if name == 'task3_unet_backbone' and data: cmd += ['--tiny', data]
        if trains: cmd += ['--seeds', seeds]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call(cmd)
        times[name] = round(time.perf_counter() - t0, 1)
        if code: raise SystemExit(f"{name} failed with exit code {code}; later scripts were not run")
    with stage_dir(out, 'run_all') as folder:
        write_json(folder / 'times.json', dict(profile=profile, seconds=times, total=round(sum(times.values()), 1)))
    print(f"\nall done in {sum(times.values()):.0f} s: " + ', '.join(f'{k} {v:.0f}s' for k, v in times.items()))
