#!/usr/bin/env python
"""Task 3.3 (T3.3): a U-Net whose encoder is the 128 px classifier's backbone, frozen (A) and fine-tuned (B).

The encoder is the stem and conv stages of the newest task3_classifier128 run of the same profile on the default
Tiny ImageNet data (or --tiny, or the stage folder named with --from); head and GAP are dropped; 1x1 adapter convs
map its widths to the decoder's, and the stem's 1/2-resolution map is interpolated up to full size (see
`arch.unet.BackboneUNet`). Without a classifier run the script stops with a clear error, unless --train-backbone
trains the classifier first.
  A: encoder frozen through the Learner's splitter (`learn.freeze()`, its BatchNorm kept in eval mode), decoder
     trained with the U-Net's recipe (`BACKBONE_UNET`, listed at the end of --help).
  B: A's best checkpoint unfrozen and fine-tuned for half as many epochs with discriminative learning rates
     (--fine-tune-encoder-lr for the encoder, --fine-tune-lr for the rest).
Same data, split, loss and metrics as task3_unet.py; the table compares A and B with the newest baseline U-Net run
on the same data, split and profile (trained here, with the same seeds, when there is none). The verdict weighs cost
(`lab.stats.TIE_RULE`): variants within noise of the best valid IoU are decided by MACs, then parameters, and said
so; a real lead states what it costs. iou_vs_macs.png plots valid IoU against GMACs with the Pareto front.
"""
from pathlib import Path
from dataclasses import replace

from fastai_lab.cli import run_script, script
from fastai_lab.data.locate import find_tiny_imagenet
from fastai_lab.recipe import BACKBONE_UNET, UNET
from fastai_lab.cost import cost_note
from fastai_lab.tables import plot_score_vs_cost, write_table
from fastai_lab.lookup import chosen_recipe, finished_stages, latest_stage_summary, read_stage
from fastai_lab.stage import run_stage
from fastai_lab.record import RunRecord
from fastai_lab.rows import SegRow, compare_seg, seg_row, seg_table_rows
from fastai_lab.train import RunOptions

RECIPE = BACKBONE_UNET  # variant A: encoder frozen, decoder trained with the U-Net's recipe (lab/recipe.py)
FINE_TUNE = dict(lr=1e-4, encoder_lr=1e-5)  # variant B: everything trained, the encoder 10x slower than the rest


def newest_classifier(opts, profile):
    "The newest finished T3.1 run of `profile` (on the --tiny data when given), or None."
    tiny = str(find_tiny_imagenet(opts.extra['tiny'], quiet=True)[0].resolve()) if opts.extra['tiny'] else None
    return next((s for s in finished_stages(opts.out, 'task3_classifier128')
                 if s['profile'] == profile and tiny in (None, s['data'])), None)


def classifier(opts, recipe):
    "The T3.1 classifier to build on: (its model config, its checkpoint), training it first with --train-backbone."
    if opts.from_: summary = read_stage(opts.from_, 'task3_classifier128')
    else:
        summary = newest_classifier(opts, recipe.profile)
        if summary is None and opts.extra['train_backbone']:
            argv = ['--out', opts.out, f'--{recipe.profile}'] + (['--data', opts.extra['tiny']] if opts.extra['tiny'] else [])
            run_script(Path(__file__).resolve().parent / 'task3_classifier128.py', argv)
            summary = newest_classifier(opts, recipe.profile)
    if summary is None:
        raise FileNotFoundError(f"no 128 px classifier of the {recipe.profile} profile under "
                                f"{Path(opts.out) / 'task3_classifier128'}: run scripts/task3_classifier128.py --out "
                                f"{opts.out} first, or pass --train-backbone")
    return chosen_recipe(summary).model, str(Path(summary['path']) / summary['checkpoint'])


def run(recipe, opts):
    "Train A (frozen encoder) then B (fine-tuned) for every seed, and compare them with the baseline U-Net."
    encoder, checkpoint = classifier(opts, recipe)
    def experiment(ctx):
        a = ctx.recipe
        fine_tune = dict(lr=opts.extra['fine_tune_lr'], encoder_lr=opts.extra['fine_tune_encoder_lr'])
        b = lambda s: replace(a, seed=s, freeze=False, init=str(ctx.run_dir('A', s) / 'model.pth'),
                              epochs=max(1, a.epochs // 2), **fine_tune)
        variants = {'A': a, 'B': b}
        base = latest_stage_summary(opts.out, 'task3_unet', like=a)
        if base is None:
            print("no baseline U-Net run on this data, split and profile: training it here with the same seeds")
            variants['unet'] = replace(a, arch='unet', model=UNET.model, init=None, freeze=False)
        runs = ctx.train(variants, RunOptions(test=True, real_pair=True), chains=[('A', 'B')])
        base_row = (SegRow.of(base['rows'][0]).replace(name=f"baseline U-Net ({Path(base['path']).name})") if base
                    else seg_row('baseline U-Net', runs['unet'], a.epochs))
        b0 = b(ctx.seeds[0])
        rows = [base_row, seg_row('A: frozen encoder', runs['A'], a.epochs),
                seg_row('B: fine-tuned', [RunRecord.of(r).replace(wall_seconds=RunRecord.of(r).wall_seconds
                                                                   + RunRecord.of(ra).wall_seconds)
                                          for r, ra in zip(runs['B'], runs['A'])], a.epochs + b0.epochs)]
        verdict = compare_seg(rows)
        write_table(seg_table_rows(rows), ctx.folder,
                    title='Task 3.3: U-Net with the classifier backbone vs the baseline (valid IoU)',
                    notes=f"{verdict['text']}\n\nData: {a.data}; seeds {ctx.seeds}; B's epochs and seconds include A's; "
                          f"encoder: {checkpoint}.\n\n{cost_note(rows)}" + ctx.caveat_notes())
        plot_score_vs_cost([dict(label=r.name, macs_G=r.macs_G, score=r.iou, half=r.iou_ci) for r in rows],
                           ctx.folder / 'iou_vs_macs.png', 'valid IoU (95% seed interval)',
                           'U-Nets: valid IoU against compute')
        print(verdict['text'])
        baseline = chosen_recipe(base) if base else replace(variants['unet'], seed=ctx.seeds[0])
        recipes = {rows[0].name: baseline, rows[1].name: a, rows[2].name: b0}
        return ctx.summary('Task 3.3: U-Net on the classifier backbone', recipes, verdict['best'],
                           [r.to_dict() for r in rows], verdict['text'],
                           checkpoint=checkpoint, baseline=base['path'] if base else 'trained here')
    return run_stage(opts, 'task3_unet_backbone', replace(recipe, model=dict(recipe.model, encoder=encoder),
                                                          init=checkpoint, freeze=True), experiment)


def flags(p):
    p.add_argument('--train-backbone', action='store_true',
                   help='train the 128 px classifier first when there is none of this profile')
    p.add_argument('--tiny', default=None, help='Tiny ImageNet folder of the classifier (default: known places)')
    p.add_argument('--fine-tune-lr', type=float, default=FINE_TUNE['lr'], help='variant B: lr of adapters and decoder')
    p.add_argument('--fine-tune-encoder-lr', type=float, default=FINE_TUNE['encoder_lr'],
                   help='variant B: lr of the encoder')


main = script(run, flags, recipe=RECIPE, reads='task3_classifier128')
if __name__ == '__main__': main()
