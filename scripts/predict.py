#!/usr/bin/env python
"""Predict with a finished run: its exported Learner (export.pkl, `learn.export()`), on the CPU, without its data.

  python scripts/predict.py results/stage4_final/<timestamp>/final-seed0 photo.jpg more_images/
  python scripts/predict.py results/task3_unet/<timestamp>/unet-seed0 render0001.png --out masks/

A classifier run prints the 3 most probable classes of each image with their probabilities; for several images (or a
folder) it also writes predictions.csv (file, top1, p1, top2, p2, top3, p3). A segmentation run (U-Net, backbone
U-Net) writes, per render, <name>_mask.png (0 = ground, 255 = rock) and <name>_overlay.png (the render with the
predicted rock pixels tinted), both at the render's own size (the prediction at the run's image size is resized back),
and predictions.csv (file, width, height, rock share). Images are squished to the run's size, as in training.
FILES are images or folders (every image directly in them; '.'-files such as '._x.JPEG' and .DS_Store skipped).
Output: --out (default <RUN_DIR>/predictions/).
"""
from pathlib import Path

from fastai_lab.cli import script


def flags(p):
    p.add_argument('run_dir', metavar='RUN_DIR', help='a finished run folder holding export.pkl, e.g. '
                                                      'results/stage4_final/<timestamp>/final-seed0')
    p.add_argument('files', metavar='FILES', nargs='+', help='images, or folders of images')
    p.add_argument('--out', default=None, help='folder for predictions.csv, masks and overlays (default: <RUN_DIR>/predictions/)')
    p.add_argument('--task', choices=('classify', 'segment'), default=None,
                   help="what the run must be (default: whatever it is); a run of the other kind is an error")
    p.add_argument('--threshold', type=float, default=0.5, help='segmentation: rock where the sigmoid exceeds this')


def _unique(stem, used):
    name, k = stem, 1
    while name in used: k += 1; name = f'{stem}_{k}'
    used.add(name)
    return name


def body(args):
    import pandas as pd
    from fastai_lab.data.images import check_image
    from fastai_lab.predict import check_run_dir, image_files, load_exported, overlay_mask, predict_classes, predict_masks, run_task
    run = check_run_dir(args.run_dir, 'export.pkl')
    task = run_task(run)
    if args.task and args.task != task:
        raise ValueError(f"{run}: a {'classifier' if task == 'classify' else 'segmentation'} run, not a "
                         f"{'classifier' if args.task == 'classify' else 'segmentation'} one (--task {args.task})")
    files = image_files(args.files)
    sizes = [check_image(f, rgb=True) for f in files]  # every file checked before the model is loaded
    learn = load_exported(run)
    out = Path(args.out) if args.out else run / 'predictions'
    several = len(files) > 1 or any(Path(p).is_dir() for p in args.files)
    if task == 'classify':
        rows = predict_classes(learn, files)
        for r in rows:
            print(f"{r['file']}: " + ', '.join(f"{r[f'top{j}']} {r[f'p{j}']:.3f}" for j in (1, 2, 3) if r[f'top{j}']))
        if several:
            out.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_csv(out / 'predictions.csv', index=False)
            print(f"predictions: {out / 'predictions.csv'}")
        return rows
    from PIL import Image
    out.mkdir(parents=True, exist_ok=True)
    rows, used = [], set()
    for f, (w, h), (prob, mask) in zip(files, sizes, predict_masks(learn, files, args.threshold, sizes)):
        name = _unique(f.stem, used)
        Image.fromarray(mask, mode='L').save(out / f'{name}_mask.png')
        overlay_mask(f, mask).save(out / f'{name}_overlay.png')
        rows.append(dict(file=str(f), width=w, height=h, rock_share=round(float((mask > 0).mean()), 6),
                         mask=f'{name}_mask.png', overlay=f'{name}_overlay.png'))
        print(f"{f}: {rows[-1]['rock_share']:.1%} rock pixels -> {out / rows[-1]['mask']}, {out / rows[-1]['overlay']}")
    pd.DataFrame(rows).to_csv(out / 'predictions.csv', index=False)
    return rows


main = script(body, flags)
if __name__ == '__main__': main()
