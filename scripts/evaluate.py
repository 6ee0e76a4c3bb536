#!/usr/bin/env python
"""Evaluate a finished run again from its checkpoint: the model rebuilt from the recipe inside model.pth, the data
from the same recipe (same data folder, classes and split).

  python scripts/evaluate.py results/task3_classifier128/<timestamp>/classifier128-seed0
  python scripts/evaluate.py results/task3_unet/<timestamp>/unet-seed0 --out eval/unet

Classifier runs (any stage, the 128 px classifier included): valid accuracy and the test report on the test split
(the official val split): accuracy with its 95% Wilson interval, per-class precision/recall/F1 (per_class.md/csv),
the confusion matrix (confusion_matrix.png and .csv), `learn.show_results` and 10 random test images; test-time
augmentation too when the recipe has it. U-Net runs: IoU, Dice and pixel accuracy on valid, on the held-out test
frames and on the real Kaggle frame(s) when a known place has them, with prediction figures. Numbers go to
evaluation.json and metrics.md. Output: --out (default <RUN_DIR>/evaluation/<timestamp>/, never overwritten).
When the data folder moved, --data names its new place.
"""
from pathlib import Path
import argparse

from fastai_lab.cli import script


def flags(p):
    p.add_argument('run_dir', metavar='RUN_DIR', help='a run folder holding model.pth, e.g. '
                                                      'results/task3_classifier128/<timestamp>/classifier128-seed0')
    p.add_argument('--out', default=None, help='folder to write into (default: <RUN_DIR>/evaluation/<timestamp>/)')
    p.add_argument('--data', default=None, help="the data folder's new place, when it moved (default: the recipe's)")
    p.add_argument('--figures', action=argparse.BooleanOptionalAction, default=True, help='write the figures (PNG)')


def _say(out, folder):
    "One line of what `out` (an `Evaluation`) measured."
    if out.task == 'classify' and out.has('test_acc'):
        text = (f"test accuracy {out.test_acc:.1%} (95% Wilson {out.test_acc_lo:.1%}-{out.test_acc_hi:.1%}) on "
                f"{out.n_test_scored} images, macro F1 {out.macro_f1:.3f}; valid accuracy {out.valid_acc:.1%}")
    else:
        from fastai_lab.metrics import score_text
        score = lambda where, m: getattr(out, f'{where}_{m}')
        text = '; '.join(f"{where} IoU {score_text(score(where, 'iou'))}, Dice {score_text(score(where, 'dice'))}, "
                         f"pixel accuracy {score(where, 'pixel_acc'):.3f}" for where in ('valid', 'test', 'real')
                         if out.has(f'{where}_iou'))
    print(f"{out.run}: {text}" + (f" ({out.note})" if out.has('note') else '')
          + ''.join(f"\nWARNING: {c}" for c in out.caveats or []) + (f"\nresults: {folder}" if folder else ''))


def body(args):
    from fastai_lab.predict import check_run_dir
    from fastai_lab.saved import evaluate_saved_run
    from fastai_lab.results import stage_dir
    run = check_run_dir(args.run_dir, 'model.pth')  # before any folder is made
    if args.out:
        out = evaluate_saved_run(run, args.out, data=args.data, figures=args.figures)
        _say(out, Path(args.out))
        return out
    with stage_dir(run, 'evaluation') as folder:
        out = evaluate_saved_run(run, folder, data=args.data, figures=args.figures)
    _say(out, None)  # stage_dir has printed where the results are
    return out


main = script(body, flags)
if __name__ == '__main__': main()
