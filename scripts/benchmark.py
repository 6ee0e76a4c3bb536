#!/usr/bin/env python
"""Training throughput (images/s) of the lab's models, plain PyTorch loop vs fastai's Learner loop, and of the data.

The model rows use synthetic batches held on the device, so they measure the model and the loop alone.
Models: the baseline ResNet (32-64-128-256 x [2,2,2,2]) at 64 px and the U-Net (base 32) at 128 px; fp32,
plus bf16 autocast + channels_last on a GPU. A last row times one pass of the Tiny ImageNet DataLoader, to tell
whether the data or the model limits an epoch. Compare speeds only within one run (one machine).
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import time
import torch
import torch.nn.functional as F
from fastcore.script import call_parse
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.torch_core import set_seed

from arch.resnet import ResNet, resnet_splitter
from arch.unet import UNet, unet_splitter
from lab.profile import default_device, loader_workers, pick_profile
from lab.report import write_table
from lab.runs import environment_info, stage_dir, write_json
from lab.stages import tiny_imagenet_data
from lab.train import make_learner
from lab.metrics import BCEDiceLoss


def synthetic_batches(kind, bs, size, n, device):
    "`n` random (input, target) batches on `device`: class labels for the ResNet, 0/1 masks for the U-Net."
    x = torch.randn(n, bs, 3, size, size, device=device)
    y = torch.randint(0, 10, (n, bs), device=device) if kind == 'resnet' else \
        torch.randint(0, 2, (n, bs, size, size), device=device)
    return list(zip(x, y))


def plain_loop(model, batches, loss_fn, bf16):
    "Images/s of a bare Adam training loop over `batches` (after one warm-up batch)."
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    def step(x, y):
        with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    step(*batches[0]); _sync()
    t0 = time.perf_counter()
    for x, y in batches: step(x, y)
    _sync()
    return len(batches) * len(batches[0][0]) / (time.perf_counter() - t0)


class TrainTimer(Callback):
    "Seconds of the last epoch's training phase (validation excluded)."
    def before_train(self): _sync(); self.t0 = time.perf_counter()
    def after_train(self): _sync(); self.seconds = time.perf_counter() - self.t0


def fastai_loop(model, splitter, batches, loss_fn, bf16):
    "Images/s of `Learner.fit` over the same batches: the second of two epochs (the first warms up)."
    timer = TrainTimer()
    learn = make_learner(model, DataLoaders(batches, batches[:1]), splitter, loss_func=loss_fn, metrics=(),
                         cbs=[timer], bf16=bf16)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3)
    return len(batches) * len(batches[0][0]) / timer.seconds


def _sync():
    if torch.cuda.is_available(): torch.cuda.synchronize()


MODELS = {  # name: (builder, splitter, loss, input size)
    'ResNet 64 px': (lambda: ResNet((32, 64, 128, 256), (2, 2, 2, 2)), resnet_splitter, F.cross_entropy, 64, 'resnet'),
    'U-Net 128 px': (lambda: UNet(base=32), unet_splitter, BCEDiceLoss(bce_weight=1.0), 128, 'unet'),
}


def data_pipeline_speed(data, profile):
    "Images/s of one pass over the Tiny ImageNet train DataLoader (JPEG decode, resize, augmentation on the device)."
    _, dls, source = tiny_imagenet_data(data, profile)
    for _ in dls.train: _sync(); break  # warm-up: workers and the first batch
    t0, n = time.perf_counter(), 0
    for xb, _ in dls.train: n += len(xb)
    _sync()
    return dict(model=f'Tiny ImageNet DataLoader ({source}, {loader_workers()} workers)', precision='-',
                batch=dls.train.bs, batches=len(dls.train), fastai_images_per_s=round(n / (time.perf_counter() - t0), 1))


@call_parse
def main(out: str = 'results',  # results folder
         quick: bool = False,  # few small batches (default on a CPU)
         full: bool = False,  # full-size batches even without a GPU
         data: str = None):  # Tiny ImageNet folder for the data-pipeline row (default: known places, else generated)
    profile = pick_profile(quick, full)
    device = default_device()
    bs, n = (128, 50) if profile['name'] == 'full' else (8, 3)
    precisions = ['fp32', 'bf16 + channels_last'] if device.type == 'cuda' else ['fp32']
    rows = []
    for name, (build, splitter, loss_fn, size, kind) in MODELS.items():
        for precision in precisions:
            bf16 = precision != 'fp32'
            fmt = torch.channels_last if bf16 else torch.contiguous_format
            batches = [(x.contiguous(memory_format=fmt), y) for x, y in synthetic_batches(kind, bs, size, n, device)]
            speeds = {}
            for loop in ('plain', 'fastai'):
                set_seed(0)
                model = build().to(device, memory_format=fmt)
                speeds[loop] = plain_loop(model, batches, loss_fn, bf16) if loop == 'plain' else \
                    fastai_loop(model, splitter, batches, loss_fn, bf16)
            rows.append(dict(model=name, precision=precision, batch=bs, batches=n,
                             plain_images_per_s=round(speeds['plain'], 1), fastai_images_per_s=round(speeds['fastai'], 1),
                             fastai_over_plain=round(speeds['fastai'] / speeds['plain'], 3)))
            print(rows[-1], flush=True)
    rows.append(data_pipeline_speed(data, profile)); print(rows[-1], flush=True)
    env = environment_info()
    with stage_dir(out, 'benchmark') as folder:
        write_table(rows, folder, title=f"Training throughput on {env['device']}",
                    notes='Model rows: synthetic batches already on the device. The DataLoader row: one pass over the '
                          'real pipeline, no model. Compare numbers only within this table.')
        write_json(folder / 'config.json', dict(profile=profile, environment=env))
