#!/usr/bin/env python
"""Task 3.3 (T3.3): a U-Net whose encoder is the 128 px classifier's backbone, frozen (A) and fine-tuned (B).

The encoder is the stem and conv stages of the newest task3_classifier128 run of the same profile on the default
Tiny ImageNet data (or --tiny, or the stage folder named with --from); head and GAP are dropped; 1x1 adapter convs
map its widths to the decoder's, and the stem's 1/2-resolution map is interpolated up to full size (see
`arch.unet.BackboneUNet`). Without a classifier run the script stops with a clear error, unless --train-backbone
trains the classifier first.
  A: encoder frozen through the Learner's splitter (`learn.freeze()`, its BatchNorm kept in eval mode), decoder
     trained with the U-Net's recipe (one-cycle Adam, max lr 1e-3, --epochs).
  B: A's best checkpoint unfrozen and fine-tuned for half as many epochs with discriminative learning rates,
     the encoder at 1e-5 and the rest at 1e-4 (--fine-tune-encoder-lr, --fine-tune-lr).
Same data, split, loss and metrics as task3_unet.py; the table compares A and B with the newest baseline U-Net run
on the same data, split and profile (trained here, with the same seeds, when there is none).
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataclasses import replace

from lab.cli import load_script, training_script
from data.locate import find_tiny_imagenet
from lab.jobs import train_runs
from lab.recipe import BACKBONE_UNET, UNET
from lab.report import compare, write_table
from lab.runs import chosen_recipe, finished_stages, latest_stage_summary, read_stage
from lab.stages import lr_find_stage, open_stage, seg_row, stage_summary
from lab.train import RunOptions

RECIPE = BACKBONE_UNET  # variant A: encoder frozen, decoder trained with the U-Net's recipe (lab/recipe.py)
FINE_TUNE = dict(lr=1e-4, encoder_lr=1e-5)  # variant B: everything trained, the encoder 10x slower than the rest


def newest_classifier(opts, profile):
    "The newest finished T3.1 run of `profile` (on the --tiny data when given), or None."
    tiny = str(find_tiny_imagenet(opts.extra['tiny'], quiet=True)[0].resolve()) if opts.extra['tiny'] else None
    return next((s for s in finished_stages(opts.out, 'task3_classifier128')
                 if s['profile'] == profile and tiny in (None, s['data'])), None)


def classifier(opts, recipe):
    "The T3.1 classifier to build on: (its model config, its checkpoint), training it first with --train-backbone."
    if opts.from_: summary = read_stage(opts.from_)
    else:
        summary = newest_classifier(opts, recipe.profile)
        if summary is None and opts.extra['train_backbone']:
            argv = ['--out', opts.out, f'--{recipe.profile}'] + (['--data', opts.extra['tiny']] if opts.extra['tiny'] else [])
            load_script('task3_classifier128').main(argv)
            summary = newest_classifier(opts, recipe.profile)
    if summary is None:
        raise FileNotFoundError(f"no 128 px classifier of the {recipe.profile} profile under "
                                f"{Path(opts.out) / 'task3_classifier128'}: run scripts/task3_classifier128.py --out "
                                f"{opts.out} first, or pass --train-backbone")
    return chosen_recipe(summary).model, str(Path(summary['path']) / summary['checkpoint'])


def run(recipe, opts):
    "Train A (frozen encoder) then B (fine-tuned) for every seed, and compare them with the baseline U-Net."
    encoder, checkpoint = classifier(opts, recipe)
    st, a = open_stage(opts, 'task3_unet_backbone', replace(recipe, model=dict(recipe.model, encoder=encoder),
                                                            init=checkpoint, freeze=True))
    with st:
        if st.done: return st.done
        if opts.lr_find: return lr_find_stage(st, a)
        fine_tune = dict(lr=opts.extra['fine_tune_lr'], encoder_lr=opts.extra['fine_tune_encoder_lr'])
        runs, chains = {}, []
        for s in opts.seeds:
            runs[f'A-seed{s}'] = replace(a, seed=s)
            runs[f'B-seed{s}'] = replace(a, seed=s, freeze=False, init=str(st.run_dir(f'A-seed{s}') / 'model.pth'),
                                         epochs=max(1, a.epochs // 2), **fine_tune)
            chains.append([f'A-seed{s}', f'B-seed{s}'])
        base = latest_stage_summary(opts.out, 'task3_unet', like=a)
        if base is None:
            print("no baseline U-Net run on this data, split and profile: training it here with the same seeds")
            for s in opts.seeds:
                runs[f'unet-seed{s}'] = replace(a, arch='unet', model=UNET.model, init=None, freeze=False, seed=s)
                chains.append([f'unet-seed{s}'])
        done = train_runs(st, runs, RunOptions(test=True, real_pair=True), jobs=opts.jobs, chains=chains)
        pick = lambda v: [done[f'{v}-seed{s}'] for s in opts.seeds]
        base_row = (dict(base['rows'][0], name=f"baseline U-Net ({Path(base['path']).name})") if base
                    else seg_row('baseline U-Net', pick('unet'), a.epochs))
        b_epochs = runs[f'B-seed{opts.seeds[0]}'].epochs
        rows = [base_row, seg_row('A: frozen encoder', pick('A'), a.epochs),
                seg_row('B: fine-tuned', [dict(r, wall_seconds=r['wall_seconds'] + ra['wall_seconds'])
                                          for r, ra in zip(pick('B'), pick('A'))], a.epochs + b_epochs)]
        verdict = compare(rows, 'iou')
        write_table(rows, st.folder, title='Task 3.3: U-Net with the classifier backbone vs the baseline (valid IoU)',
                    notes=f"{verdict['text']}\n\nData: {a.data}; seeds {opts.seeds}; B's epochs and seconds include A's; "
                          f"encoder: {checkpoint}.")
        baseline = chosen_recipe(base) if base else runs[f'unet-seed{opts.seeds[0]}']
        recipes = {rows[0]['name']: baseline,
                   rows[1]['name']: a, rows[2]['name']: runs[f'B-seed{opts.seeds[0]}']}
        summary = st.finish(stage_summary('task3_unet_backbone', 'Task 3.3: U-Net on the classifier backbone', a,
                                          recipes, verdict['best'], rows, verdict['text'], opts, checkpoint=checkpoint,
                                          baseline=base['path'] if base else 'trained here'))
    print(verdict['text'])
    return summary


def flags(group):
    group.add_argument('--train-backbone', action='store_true',
                       help='train the 128 px classifier first when there is none of this profile')
    group.add_argument('--tiny', default=None, help='Tiny ImageNet folder of the classifier (default: known places)')
    group.add_argument('--fine-tune-lr', type=float, default=FINE_TUNE['lr'], help='variant B: lr of adapters and decoder')
    group.add_argument('--fine-tune-encoder-lr', type=float, default=FINE_TUNE['encoder_lr'],
                       help='variant B: lr of the encoder')


main = training_script(run, RECIPE, extra=flags)
if __name__ == '__main__': main()
