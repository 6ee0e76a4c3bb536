"""What a model costs, beside what it scores: one `cost` dict per run (in its config.json and summary.json) and the
cost columns of every table.

- MACs per image at the recipe's input size: `torch.utils.flop_counter.FlopCounterMode` counts the FLOPs of matmuls
  and convolutions (transposed ones too), 2 per multiply-accumulate; BatchNorm, activations, pooling, residual adds,
  interpolation and the loss are left out (`LEFT_OUT`). Reported as MACs, as timm, pycls and the papers do.
- Parameters, total and trainable (`fastai_lab.arch.layers.count_params`; trainable after the Learner froze what
  the recipe freezes).
- Inference: images/s at the recipe's batch and latency at batch 1, on the run's device and precision, in eval mode
  without gradients: a warm-up pass, then the median of timed passes, the device synchronised around the clock.
  Measured once per architecture per stage folder (`measure_model` keeps them), not per seed or epoch.
- Training throughput from the run's own epochs, and the run's peak device memory (CUDA `max_memory_allocated`;
  none on the CPU and MPS: `PEAK_WHY`).
Timings vary with the machine and its load: they live in `cost` only, never in metrics.csv, so a rerun still gives
the same metrics.csv bit for bit.
"""
import json, statistics, time

import torch

__all__ = ['count_macs', 'time_passes', 'measure_model', 'run_cost', 'cost_columns', 'cost_note', 'cost_cells',
           'COST_COLUMNS', 'COST_HEADER', 'LEFT_OUT', 'PEAK_WHY', 'timing_device']

LEFT_OUT = 'BatchNorm, activations, pooling, residual adds, interpolation and the loss'
PEAK_WHY = {'cpu': 'PyTorch keeps no peak-allocation counter for the CPU',
            'mps': 'PyTorch reports the current MPS allocation, not its peak'}
COST_COLUMNS = ['macs_G', 'trainable_M', 'infer_img_s', 'latency_ms', 'train_img_s', 'peak_mem_MiB']
COST_HEADER = ['GMACs', 'trainable (M)', 'infer img/s', 'latency ms', 'train img/s', 'peak MiB']
PASSES = {'quick': 3, 'full': 10}  # timed passes after the warm-up: the quick profile only shows that it runs
_measured = {}  # (stage folder, architecture) -> the model part of a cost: measured once per stage


def count_macs(model, x):
    """Multiply-accumulates per image of `model` on the batch `x` (torch's FlopCounterMode: matmuls and convolutions;
    `LEFT_OUT` is not counted). The model runs in eval mode without gradients; its modes are restored."""
    from torch.utils.flop_counter import FlopCounterMode
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter: model(x)
    finally:
        for m, training in modes: m.training = training
    return counter.get_total_flops() // 2 // len(x)


def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)
    elif device.type == 'mps': torch.mps.synchronize()


def time_passes(fn, device, passes=3, warmup=1):
    "Median seconds of `passes` calls of `fn` after `warmup` untimed ones, the device synchronised around each."
    for _ in range(warmup): fn()
    times = []
    for _ in range(passes):
        _sync(device); t0 = time.perf_counter(); fn(); _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timing_device(device):
    "The words a timing carries: the device, and the torch threads on a CPU."
    from .machine import device_name
    n = torch.get_num_threads()
    return device_name(device) + (f", {n} torch thread{'s' if n > 1 else ''}" if device.type == 'cpu' else '')


def _input(model, size, bs, device):
    "A constant batch (no RNG drawn: measuring changes no training numbers), in the model's memory format."
    x = torch.full((bs, 3, size, size), 0.5, device=device)
    return x.contiguous(memory_format=torch.channels_last) if device.type == 'cuda' else x


def measure_model(model, recipe, bs, device, precision='fp32', key=None, passes=None, peak=False):
    """The model part of a cost: MACs per image, parameters (total, trainable), inference images/s at batch `bs`
    and latency at batch 1 on `device` in `precision`, and where and how they were measured. `key`: measured once
    per key (e.g. the stage folder), the same dict returned after. `peak`: also the peak CUDA memory of an
    inference pass at `bs` (for the models table)."""
    from fastai_lab.arch.layers import count_params  # here, not above: arch imports fastai (seconds), the report not
    arch = (key, recipe.arch, json.dumps(recipe.model, sort_keys=True, default=str), recipe.size, bs, str(device),
            precision, count_params(model, trainable_only=True))
    if key is not None and arch in _measured: return dict(_measured[arch])
    passes = passes or PASSES.get(recipe.profile, 3)
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision)
    modes = [(m, m.training) for m in model.modules()]
    macs = count_macs(model, _input(model, recipe.size, 1, device))
    model.eval()

    def forward(x):
        def run():
            with torch.no_grad(), torch.autocast(device.type, dtype or torch.bfloat16, enabled=dtype is not None):
                model(x)
        return run
    try:
        if peak and device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
        batch = time_passes(forward(_input(model, recipe.size, bs, device)), device, passes)
        peak_mib = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if peak and device.type == 'cuda' else None
        single = time_passes(forward(_input(model, recipe.size, 1, device)), device, passes)
    finally:
        for m, training in modes: m.training = training
    cost = dict(macs=int(macs), gmacs=round(macs / 1e9, 4), params=count_params(model),
                trainable_params=count_params(model, trainable_only=True), input=[3, recipe.size, recipe.size],
                macs_left_out=LEFT_OUT, infer_images_per_s=round(bs / batch, 1), infer_batch=bs,
                latency_ms=round(single * 1e3, 3), timed_passes=passes, device=timing_device(device),
                precision=precision)
    if peak: cost.update(peak_mem_mib=peak_mib, peak_mem_note=None if peak_mib is not None else PEAK_WHY.get(
        device.type, f'not measured on {device.type}'))
    if key is not None: _measured[arch] = dict(cost)
    return cost


def run_cost(model_cost, history, images_per_epoch, device, peak_bytes=None):
    """A run's whole `cost`: the model's (`measure_model`), its training throughput (`images_per_epoch` trained /
    the median epoch seconds of `history`, validation and the epoch's callbacks included) and its peak memory."""
    seconds = float(history['seconds'].median())
    return dict(model_cost, train_images_per_s=round(images_per_epoch / seconds, 1) if seconds > 0 else None,
                train_images_per_epoch=int(images_per_epoch),
                peak_mem_mib=None if peak_bytes is None else round(peak_bytes / 2**20, 1),
                peak_mem_note=None if peak_bytes is not None else PEAK_WHY.get(device.type, 'not measured'))


def cost_columns(runs):
    """A table row's cost columns from its runs' summaries (one per seed; the model part is the first run's, the
    training throughput the mean over seeds)."""
    costs = [r.get('cost') for r in runs if r.get('cost')]
    if not costs: return {}  # runs saved before the lab measured cost: no cost columns, and the note says so
    c, speeds = costs[0], [x['train_images_per_s'] for x in costs if x.get('train_images_per_s')]
    return dict(macs_G=c['gmacs'], trainable_M=round(c['trainable_params'] / 1e6, 3),
                infer_img_s=c['infer_images_per_s'], latency_ms=c['latency_ms'],
                train_img_s=round(sum(speeds) / len(speeds), 1) if speeds else None, peak_mem_MiB=c.get('peak_mem_mib'),
                cost_device=c['device'])


def _on(device_words, kind):
    return device_words.startswith('cpu') if kind == 'cpu' else device_words.startswith('Apple MPS')


def cost_note(rows):
    "The table note that says how the cost columns were measured, on which device, and what is left out or blank."
    devices = sorted({r.get('cost_device') for r in rows if r.get('cost_device')})
    if not devices: return 'Cost: not measured for these runs (saved before the lab measured cost).'
    blank = any(r.get('peak_mem_MiB') is None for r in rows)
    return (f"Cost: macs_G = GMACs per image at the recipe's input size (torch FlopCounterMode, FLOPs / 2; not counted: "
            f"{LEFT_OUT}); trainable_M = trainable parameters (M); infer_img_s = inference images/s at the recipe's "
            f"batch, latency_ms = batch 1, each the median of timed passes after a warm-up, eval mode, measured once "
            f"per architecture; train_img_s = the run's own training images / its median epoch seconds (validation "
            f"included), mean over seeds; peak_mem_MiB = the run's peak CUDA memory (max_memory_allocated)"
            + (f", blank here: {'; '.join(PEAK_WHY[k] for k in ('cpu', 'mps') if any(_on(d, k) for d in devices))}"
               if blank else '')
            + f". Timings on {'; '.join(devices)}; compare them only within one table.")


def cost_cells(row):
    "A report table's cost cells of `row` (its `COST_COLUMNS`), '-' where none was measured."
    fmt = lambda v: '-' if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
    return [fmt(row.get(k)) for k in COST_COLUMNS]
