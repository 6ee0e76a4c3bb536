#!/usr/bin/env python
"""What a training epoch really costs (training images per second), measured three ways in one run; with --models,
instead, what every architecture the lab builds costs (models.md/csv: params, trainable, GMACs per image, inference
images/s at its recipe's batch, batch-1 latency, peak memory; `lab.cost`, `lab.bench.models_table`).

Two workloads: the baseline ResNet (`SPEC`: 32-64-128-256 x [2,2,2,2], 64 px, Tiny ImageNet) and the U-Net (`UNET`:
base 32, 128 px, moon data). Each is trained the same way on each path: the same recipe, model and initial weights,
batch size and precision, one warm-up epoch, then `--epochs` timed epochs. `--precision` (default auto: bf16 on a
GPU with native bf16, fp16 mixed with loss scaling on older CUDA GPUs, fp32 on MPS and the CPU; see `lab.machine`)
and `--device` choose them as for a training script; the table and config.json record the precision used.

  a  plain PyTorch loop, the ceiling: the whole train set as one float tensor on the device (decoded and normalised
     once), a random permutation per epoch, batches by indexing, no augmentation, no metrics, no validation; the
     recipe's torch optimiser (Adam/AdamW, fused on a GPU), the recipe's loss, autocast (bf16, or fp16 with torch's
     GradScaler) + channels_last on a CUDA GPU.
  b  the lab's path end to end, as a stage run trains: `build_data(recipe)` (images decoded once into a cached uint8
     tensor, gathered and augmented on the device) + `make_learner` + `fit_recipe` (the recipe's fit or one-cycle
     schedule) with the stage callbacks that write metrics.csv and the checkpoints (into a temporary folder), i.e.
     augmentation, device-side metrics and validation included.
  c  fastai's default file path: the same DataBlock without `to_device_dls` (each image opened and decoded per item,
     every epoch, `loader_workers()` worker processes), fastai's own `Learner` defaults: fastai's Adam, a per-batch
     `AvgMetric` (`accuracy`; pixel accuracy for the 1-logit U-Net), the progress bar (kept: its per-batch
     `smooth_loss.item()` and bar updates; its output goes to /dev/null), mixed precision through fastai's
     `MixedPrecision` on a CUDA GPU, the model in the default memory format (no channels_last). Same loss, lr, wd and
     schedule as b.

Columns: `*_images_per_s` = training images of the timed epochs / their wall time; for b and c an epoch is counted
from the end of the previous epoch to the end of this one (training, validation, metrics, callbacks, loader start-up),
`*_train_images_per_s` the training phase alone (before_train..after_train). `b_over_a` and `b_over_c` are quotients
of the images/s columns. `*_train_images` = training images each path saw per epoch (counted, not computed).
`b_epoch_s`, `b_train_s`, `b_valid_s` (and c's) = mean seconds of a timed epoch, of its training phase and of its
validation phase; what is left of an epoch is the callbacks' epoch work (b: metrics.csv and two checkpoint writes).
`peak_mem_*_mib` = torch.cuda.max_memory_allocated during each path, the data it holds on the device included
('-' on a CPU).

Data: --data (Tiny ImageNet: the recipe's first 10 classes, all when fewer) and --moon; without them the lab's known
places, else a generated stand-in (said, and marked in the `data_source` column).

Quick mode (the default on a CPU): the quick profile (few images, quarter-size images, small batches), 1 timed epoch; its
numbers only show that the paths run. Full mode (the default on a GPU): full data, batch 128 (ResNet) / 16 (U-Net),
2 timed epochs. Numbers compare only within one run of this script (one machine, one moment): other runs, machines or
loads give other numbers.
"""
from dataclasses import replace

import torch

from fastai_lab.bench import (WARMUP_EPOCHS, device_words, fastai_default_path, lab_path, models_table, peak_mib,
                              peak_reset, plain_loop)
from fastai_lab.cli import script
from fastai_lab.cost import LEFT_OUT
from fastai_lab.data.loaders import build_data, resolve_data
from fastai_lab.data.locate import find_tiny_imagenet
from fastai_lab.data.tiny_imagenet import read_wnids
from fastai_lab.io import write_json
from fastai_lab.learner import setup_torch
from fastai_lab.machine import DEVICE_HELP, announce, environment_info, loader_workers, resolve_precision, select_device
from fastai_lab.recipe import PRECISIONS, SPEC, UNET, pick_profile, scale_to_profile
from fastai_lab.record import data_counts
from fastai_lab.results import stage_dir
from fastai_lab.tables import markdown_table, write_table

WORKLOADS = {'resnet': ('ResNet', SPEC), 'unet': ('U-Net', UNET)}


# ----- the workloads' recipes -----------------------------------------------------------------------------------------

def workload_recipe(kind, profile, data):
    """The recipe of workload `kind` scaled to `profile`, its data found (a wrong path raises here, before any timing).
    Tiny ImageNet: the recipe's 10 classes, or all of them when the folder has fewer (small test sets)."""
    recipe = scale_to_profile(replace(WORKLOADS[kind][1], data=data), profile)
    if kind == 'resnet':
        root, _ = find_tiny_imagenet(data, quiet=True)
        recipe = replace(recipe, classes=str(min(int(recipe.classes), len(read_wnids(root)))))
    return resolve_data(recipe, say=True)


# ----- one workload, three paths -----------------------------------------------------------------------------------------
def measure(kind, recipe, device, epochs, debug):
    "The table row of one workload: a, b and c on `recipe`."
    precision = resolve_precision(recipe.precision, device)[0]
    setup_torch()
    data = build_data(recipe, device=device)
    results, peaks = {}, {}
    paths = dict(a=lambda: plain_loop(recipe, data, device, precision, epochs),
                 b=lambda: lab_path(recipe, data, device, epochs, debug),
                 c=lambda: fastai_default_path(recipe, device, precision, epochs, debug))
    for name, run in paths.items():
        peak_reset(device)
        results[name] = run()
        peaks[name] = peak_mib(device)
        print(f"{WORKLOADS[kind][0]} {name}: {results[name]['images_per_s']:,.1f} images/s", flush=True)
    speed = {k: round(r['images_per_s'], 1) for k, r in results.items()}
    row = dict(workload=f"{WORKLOADS[kind][0]} {recipe.size} px", device=device_words(device),
               precision=precision + (' + channels_last' if device.type == 'cuda' else ''),
               batch=data.dls.train.bs,
               **{k: v for k, v in data_counts(data.info).items() if k != 'n_test'}, timed_epochs=epochs,
               **{f'{k}_train_images': r['train_images'] for k, r in results.items()},
               **{f'{k}_images_per_s': v for k, v in speed.items()},
               b_train_images_per_s=round(results['b']['train_images_per_s'], 1),
               c_train_images_per_s=round(results['c']['train_images_per_s'], 1),
               b_over_a=round(speed['b'] / speed['a'], 3), b_over_c=round(speed['b'] / speed['c'], 3),
               **{f'{k}_{part}_s': round(results[k][f'{part}_s'], 3) for k in 'bc' for part in ('epoch', 'train', 'valid')},
               **{f'peak_mem_{k}_mib': v for k, v in peaks.items()},
               data_path=data.info['data_path'], c_data_path=f'file ({loader_workers()} workers)',
               data_source=data.info['source'])
    counts = {row[f'{k}_train_images'] for k in 'abc'}
    if len(counts) != 1: print(f"WARNING: {row['workload']}: the paths saw different numbers of training images per "
                               f"epoch ({[row[f'{k}_train_images'] for k in 'abc']}); the speeds are still per image")
    return row, dict(recipe=recipe.to_dict(), data=data.info, precision=row['precision'], paths=results)


def flags(p):
    p.add_argument('--out', default='results', help='results folder (writes <out>/benchmark/<timestamp>/)')
    p.add_argument('--quick', action='store_true', help='quick profile: few small images, 1 timed epoch (default on a CPU)')
    p.add_argument('--full', action='store_true', help='full data and batches (default on a GPU), 2 timed epochs')
    p.add_argument('--data', default=None, help='Tiny ImageNet folder (default: known places, else generated)')
    p.add_argument('--moon', default=None, help='moon folder (default: known places, else generated)')
    p.add_argument('--epochs', type=int, default=None, help='timed epochs after the warm-up one (default: 1 quick, 2 full)')
    p.add_argument('--only', choices=tuple(WORKLOADS), default=None, help='one workload only')
    p.add_argument('--precision', choices=PRECISIONS, default='auto',
                   help='auto (bf16 on a GPU with native bf16, fp16 mixed with loss scaling on older CUDA GPUs, fp32 on '
                        'MPS and the CPU), bf16, fp16 or fp32; recorded in the table and config.json')
    p.add_argument('--device', default=None, help=DEVICE_HELP + ' (default: auto)')
    p.add_argument('--models', action='store_true',
                   help="instead: the cost table of every architecture the lab builds, at its recipe's size and batch "
                        "scaled to the profile (params, GMACs, inference images/s, batch-1 latency, peak memory)")


def run(args):
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs {args.epochs}: expected a whole number >= 1 (timed epochs after the warm-up)")
    device = select_device(args.device)
    profile = pick_profile(args.quick, args.full)
    machine = announce(args.precision)  # a precision the device cannot serve stops here, before anything is timed
    if args.models: return cost_of_models(args.out, profile, device, machine)
    epochs = args.epochs or (2 if profile == 'full' else 1)
    kinds = [args.only] if args.only else list(WORKLOADS)
    # every data folder is found (or refused) before anything is timed
    recipes = {k: replace(workload_recipe(k, profile, args.data if k == 'resnet' else args.moon),
                          precision=args.precision) for k in kinds}
    rows, configs = [], {}
    for kind, recipe in recipes.items():
        row, configs[kind] = measure(kind, recipe, device, epochs, args.debug)
        rows.append(row)
    env = environment_info()
    title = (f"Epoch cost, images/s: a plain loop, b lab path, c fastai default ({env['device']}, "
             f"{machine['precision_words']}, {profile} profile)")
    notes = ("a: plain PyTorch loop on the train set held on the device (no augmentation, metrics or validation). "
             "b: the lab's build_data + make_learner + fit_recipe, whole epochs (augmentation, metrics, validation, "
             "checkpoints). c: fastai's default file DataBlock path and Learner (fastai Adam, AvgMetric, progress bar, "
             "MixedPrecision on a CUDA GPU, no channels_last). *_train_images_per_s: training phase only. "
             f"Precision: {machine['precision_words']} ({machine['precision_reason']}). "
             f"{WARMUP_EPOCHS} warm-up epoch, then {epochs} timed. Compare numbers only within this table.")
    with stage_dir(args.out, 'benchmark') as folder:
        df = write_table(rows, folder, title=title, notes=notes)
        write_json(folder / 'config.json', dict(profile=profile, warmup_epochs=WARMUP_EPOCHS, timed_epochs=epochs,
                                                precision=machine['precision'], machine=machine,
                                                loader_workers=loader_workers(), workloads=configs, environment=env))
        print(f"\n# {title}\n\n{markdown_table(df)}\n{notes}")
    return df


def cost_of_models(out, profile, device, machine):
    "--models: models.csv and models.md, one row per architecture (`lab.bench.models_table`), and config.json."
    setup_torch()
    rows, peak_note = models_table(profile, device, machine['precision'])
    title = f"Cost of every architecture the lab builds ({rows[0]['device']}, {machine['precision_words']}, {profile} profile)"
    notes = (f"GMACs: multiply-accumulates per image at the recipe's size (torch FlopCounterMode, FLOPs / 2; not counted: "
             f"{LEFT_OUT}). infer_images_per_s at the recipe's batch, latency_ms at batch 1: eval mode, no gradients, "
             f"the median of timed passes after a warm-up, the device synchronised. peak_mem_mib: CUDA "
             f"max_memory_allocated of an inference pass at the batch" + (f"; '-': {peak_note}" if peak_note else '')
             + ". The Task 2 variants are built on the baseline here; the stages build them on the previous stage's "
               "choice. Trainable parameters of T3.3 A: its encoder frozen. Compare numbers only within this table.")
    with stage_dir(out, "benchmark") as folder:
        df = write_table(rows, folder, 'models', title=title, notes=notes)
        write_json(folder / 'config.json', dict(models=True, profile=profile, precision=machine['precision'],
                                                machine=machine, environment=environment_info()))
        print(f"\n# {title}\n\n{markdown_table(df)}\n{notes}")
    return df


main = script(run, flags)
if __name__ == '__main__': main()
