"""Task 3 segmentation runs: moon data, U-Net learners, prediction figures and the seeds-aggregated table row."""
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import torch
from fastai.torch_core import set_seed

from arch.unet import UNet, unet_splitter
from data.locate import find_moon
from data.moon import moon_dls

from .metrics import seg_loss, seg_metrics
from .profile import loader_workers
from .report import mean_std
from .train import fit_run, make_learner

__all__ = ['moon_data', 'seg_learner', 'fit_seg', 'plot_predictions', 'seg_row', 'train_unet_runs', 'UNET', 'SEG_PLOTS']

SEG_PLOTS = ('loss', 'iou', 'dice', 'pixel_acc')
# The baseline U-Net (T3.2): base 32, 4 levels, max-pool down, transposed-conv up: 2.35M parameters.
UNET = dict(base=32, depth=4, down='maxpool', up='transpose', act='relu')


def moon_data(data, profile, size=128, split_seed=42):
    "Locate (or generate) the moon data and build 128 px DataLoaders for `profile`: (root, dls, source)."
    root, source = find_moon(data)
    dls = moon_dls(root, size=size, bs=profile['seg_bs'], seed=split_seed, max_items=profile['moon_items'],
                   num_workers=loader_workers())
    print(f"moon data: {root} ({source}); {len(dls.train_ds)} train / {len(dls.valid_ds)} valid frames at {size} px")
    return root, dls, source


def seg_learner(model, dls, splitter, loss='bce_dice', train_bn=True):
    "A Learner for a 1-channel-logit segmenter: loss by name (bce, dice, bce_dice), threshold IoU/Dice/pixel accuracy."
    return make_learner(model, dls, splitter, loss_func=seg_loss(loss), metrics=seg_metrics(), opt='adam',
                        train_bn=train_bn)


def fit_seg(learn, run_dir, epochs, lr, config, seed, figures=4):
    "One-cycle training monitored by valid IoU; writes the run folder, prediction figures and show_results.png."
    summary = fit_run(learn, run_dir, epochs, lr, config, monitor='valid_iou', schedule='one_cycle', seed=seed,
                      plot_metrics=SEG_PLOTS)
    plot_predictions(learn, learn.dls.valid, run_dir, n=figures)
    learn.show_results(max_n=4, figsize=(8, 8))
    plt.gcf().savefig(Path(run_dir) / 'show_results.png', dpi=100, bbox_inches='tight'); plt.close('all')
    return summary


def plot_predictions(learn, dl, folder, n=4, threshold=0.5):
    "`n` figures `prediction_<k>.png` of valid frames: input, predicted mask (sigmoid > threshold), true mask."
    learn.model.eval()
    xb, yb = dl.one_batch()
    with torch.no_grad(): probs = torch.sigmoid(learn.model(xb)).squeeze(1).cpu()
    images = dl.decode((xb,))[0].cpu()
    paths = []
    for k in range(min(n, len(xb))):
        fig, axs = plt.subplots(1, 3, figsize=(9, 3.2))
        panels = [(images[k].permute(1, 2, 0).numpy().astype('uint8'), 'input'),
                  ((probs[k] > threshold).numpy(), f'predicted (p > {threshold})'), (yb[k].cpu().numpy(), 'true rock mask')]
        for ax, (img, title) in zip(axs, panels):
            ax.imshow(img, cmap=None if img.ndim == 3 else 'gray', vmin=0, vmax=1 if img.ndim == 2 else None)
            ax.set_title(title, fontsize=9); ax.axis('off')
        fig.tight_layout(); paths.append(Path(folder) / f'prediction_{k}.png'); fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def seg_row(name, runs, epochs):
    "A table row from one variant's run summaries: IoU, Dice, pixel accuracy (mean +- std over seeds) and sizes."
    row = dict(name=name)
    for m in ('iou', 'dice', 'pixel_acc'):
        row[m], row[f'{m}_std'] = mean_std([r['best'][f'valid_{m}'] for r in runs])
    row.update(params_M=round(runs[0]['params'] / 1e6, 3), trainable_M=round(runs[0]['trainable_params'] / 1e6, 3),
               epochs=epochs, seconds=mean_std([r['wall_seconds'] for r in runs])[0], n_seeds=len(runs))
    return row


def train_unet_runs(unet_config, dls, folder, seeds, epochs, lr, loss, config):
    "The baseline U-Net (T3.2) for every seed into `folder/unet-seed<k>`: the run summaries."
    runs = []
    for seed in seeds:
        set_seed(seed)
        learn = seg_learner(UNet(**unet_config), dls, unet_splitter, loss)
        runs.append(fit_seg(learn, Path(folder) / f'unet-seed{seed}', epochs, lr, dict(config, model=unet_config), seed))
    return runs
