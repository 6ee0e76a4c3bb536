#!/usr/bin/env python
"""Task 3.3 (T3.3): a U-Net whose encoder is the 128 px classifier's backbone, frozen (A) and fine-tuned (B).

The encoder is the stem and conv stages of the newest task3_classifier128 checkpoint under --out (head and
GAP dropped); 1x1 adapter convs map its widths to the decoder's, and the stem's 1/2-resolution map is
interpolated up to full size (see `arch.unet.BackboneUNet`). Without a checkpoint the script stops with a
clear error, unless --train-backbone trains the classifier first.
  A: encoder frozen through the Learner's splitter (`learn.freeze()`, its BatchNorm kept in eval mode),
     decoder trained for --epochs, one-cycle max lr 1e-3.
  B: A's model unfrozen and fine-tuned for half as many epochs with discriminative learning rates,
     slice(1e-5, 1e-4): the encoder at 1e-5, the decoder at 1e-4.
Same data, loss and metrics as task3_unet.py; the table compares A and B with the newest baseline U-Net run
on the same data (trained here, with the same seeds, when there is none).
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import subprocess
from fastcore.script import call_parse
from fastai.torch_core import set_seed

from arch.resnet import ResNet
from arch.unet import BackboneUNet, backbone_unet_splitter, load_encoder_from_classifier
from lab.profile import pick_profile
from lab.report import compare, write_table
from lab.runs import latest_stage_summary, parse_seeds, stage_dir, write_json
from lab.segment import UNET, fit_seg, moon_data, seg_learner, seg_row, train_unet_runs

LR, FINE_TUNE_LRS = 1e-3, slice(1e-5, 1e-4)


def classifier_checkpoint(out, train_backbone, tiny, profile):
    "The newest 128 px classifier's (config, checkpoint path), training it first when asked to."
    summary = latest_stage_summary(out, 'task3_classifier128')
    if summary is None and train_backbone:
        cmd = [sys.executable, str(Path(__file__).with_name('task3_classifier128.py')), '--out', out, f"--{profile}"]
        if subprocess.call(cmd + (['--data', tiny] if tiny else [])): raise SystemExit("training the classifier failed")
        summary = latest_stage_summary(out, 'task3_classifier128')
    if summary is None:
        raise SystemExit(f"no 128 px classifier under {Path(out) / 'task3_classifier128'}: run "
                         f"scripts/task3_classifier128.py --out {out} first, or pass --train-backbone")
    return summary['best_config'], Path(summary['path']) / summary['checkpoint']


@call_parse
def main(data: str = None,  # moon data folder (default: known places, else a generated offline set)
         out: str = 'results',  # results folder (the classifier checkpoint is looked for here too)
         quick: bool = False,  # quick profile: few frames and epochs (default on a CPU)
         full: bool = False,  # full profile even without a GPU
         epochs: int = None,  # decoder epochs of variant A (default: the profile's seg_epochs); B adds half as many
         seeds: str = '1',  # seeds: a count (2) or a list (0,1)
         loss: str = 'bce_dice',  # loss: bce, dice or bce_dice (0.5 each)
         train_backbone: bool = False,  # train the 128 px classifier first when there is no checkpoint
         tiny: str = None):  # Tiny ImageNet folder for --train-backbone
    profile, seeds = pick_profile(quick, full), parse_seeds(seeds)
    epochs = int(epochs or profile['seg_epochs']); fine_tune_epochs = max(1, epochs // 2)
    encoder_config, checkpoint = classifier_checkpoint(out, train_backbone, tiny, profile['name'])
    with stage_dir(out, 'task3_unet_backbone') as folder:
        root, dls, source = moon_data(data, profile)
        config = dict(loss=loss, data=str(root), data_source=source, profile=profile, encoder=encoder_config,
                      checkpoint=str(checkpoint))
        runs = {'A': [], 'B': []}
        for seed in seeds:
            set_seed(seed)  # the adapters' and decoder's initialisation
            model = load_encoder_from_classifier(BackboneUNet(ResNet(**encoder_config)), checkpoint)
            learn = seg_learner(model, dls, backbone_unet_splitter, loss, train_bn=False)
            learn.freeze()
            runs['A'].append(fit_seg(learn, folder / f'A-seed{seed}', epochs, LR, dict(config, variant='A'), seed))
            learn.unfreeze()
            b = fit_seg(learn, folder / f'B-seed{seed}', fine_tune_epochs, FINE_TUNE_LRS, dict(config, variant='B'), seed)
            runs['B'].append(dict(b, wall_seconds=b['wall_seconds'] + runs['A'][-1]['wall_seconds']))
        base = latest_stage_summary(out, 'task3_unet')
        if base and base['data'] == str(root) and base['loss'] == loss:
            base_row = dict(base['rows'][0], name=f"baseline U-Net ({Path(base['path']).name})")
        else:
            print("no baseline U-Net run on this data and loss: training it here with the same seeds")
            base_row = seg_row('baseline U-Net', train_unet_runs(UNET, dls, folder, seeds, epochs, LR, loss, config), epochs)
        rows = [base_row, seg_row('A: frozen encoder', runs['A'], epochs),
                seg_row('B: fine-tuned', runs['B'], epochs + fine_tune_epochs)]
        verdict = compare(rows, 'iou')
        write_table(rows, folder, title='Task 3.3: U-Net with the classifier backbone vs the baseline (valid)',
                    notes=f"{verdict['text']}\n\nData: {source} ({root}); seeds {seeds}; B's epochs and seconds include A's.")
        write_json(folder / 'summary.json', dict(stage='task3_unet_backbone', best=verdict['best'], rows=rows,
                                                 conclusion=verdict['text'], data_source=source, profile=profile['name'],
                                                 seeds=seeds, epochs=epochs, encoder=encoder_config,
                                                 checkpoint=str(checkpoint)))
    print(verdict['text'])
