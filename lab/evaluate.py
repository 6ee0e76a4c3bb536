"""Evaluating a trained run: the classifier's test report (T2.11, T2.12) and the U-Net's test and sim-to-real scores.

`evaluate_run` is what a run does after training (lab.train) and, through `lab.saved`, what scripts/evaluate.py does
for any finished run:
classifier: accuracy with its 95% Wilson interval, per-class P/R/F1, confusion matrix (PNG + CSV), `show_results`
and 10 random test images, plus test-time augmentation when the recipe asks for it (fastai's `learn.tta`, or the
lab's multi-view TTA: `lab.ingredients.multi_view_logits`); with TTA the per-class table, the confusion matrix and the
samples rest on the TTA predictions, the same as the headline accuracy. U-Net: IoU, Dice and pixel accuracy on the
held-out test frames and on the real Kaggle frame(s), with prediction figures.
"""
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from fastai.interpret import ClassificationInterpretation
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from .figures import save_figure, save_pyplot_figure
from .ingredients import multi_view_logits, view_words
from .stats import wilson
from .tables import write_table

__all__ = ['test_report', 'per_class_table', 'plot_samples', 'evaluate_run', 'tta_accuracy', 'predictions',
           'tta_words', 'seg_scores', 'plot_predictions']


def per_class_table(targets, predictions, names):
    "Precision, recall, F1 and support per class, plus the macro average, as a frame."
    p, r, f, n = precision_recall_fscore_support(targets, predictions, labels=range(len(names)), zero_division=0)
    df = pd.DataFrame(dict(class_name=names, precision=p, recall=r, f1=f, support=n))
    macro = dict(class_name='macro avg', precision=p.mean(), recall=r.mean(), f1=f.mean(), support=n.sum())
    return pd.concat([df, pd.DataFrame([macro])], ignore_index=True)


def plot_samples(dl, predictions, targets, names, path, n=10, seed=0):
    "`n` random images of `dl`'s dataset with their true and predicted class (green if right, red if wrong)."
    idx = np.random.default_rng(seed).choice(len(dl.dataset), size=min(n, len(dl.dataset)), replace=False)
    cols = 5
    fig, axs = plt.subplots(int(np.ceil(len(idx) / cols)), cols, figsize=(2.6 * cols, 3 * np.ceil(len(idx) / cols)))
    for ax, i in zip(np.ravel(axs), idx):
        img = dl.dataset[int(i)][0]
        ax.imshow(np.asarray(img)); ax.axis('off')
        t, p = names[int(targets[i])], names[int(predictions[i])]
        ax.set_title(f'true: {t}\npred: {p}', fontsize=8, color='green' if t == p else 'red')
    for ax in np.ravel(axs)[len(idx):]: ax.axis('off')
    save_figure(fig, path, dpi=110)
    return Path(path)


class _GivenConfusion(ClassificationInterpretation):
    "fastai's confusion-matrix plot of a matrix computed already (fastai's own would predict again, without TTA)."
    def __init__(self, learn, dl, cm):
        super().__init__(learn, dl, losses=None)
        self.cm = cm
    def confusion_matrix(self): return self.cm


def test_report(learn, dl, names, folder, seed=0, figures=True, title='Test set', preds=None):
    """Evaluate `learn` on the labelled `dl`; write per_class.md/csv and confusion_matrix.csv (and, with `figures`,
    confusion_matrix.png, show_results.png, test_samples.png) into `folder`; return dict(test_acc, macro_f1, n...).
    `preds`: (scores, targets) to report on (e.g. TTA's); default: one plain pass (`learn.get_preds`). The table,
    matrix and samples all rest on them; `show_results` is fastai's own plain pass."""
    folder = Path(folder)
    scores, targets = preds if preds is not None else learn.get_preds(dl=dl)[:2]
    predictions, targets = scores.argmax(dim=1).numpy(), targets.numpy()
    acc = float((predictions == targets).mean())
    lo, hi = wilson(acc, len(targets))
    table = per_class_table(targets, predictions, names)
    write_table(table, folder, 'per_class', title=f'{title}, seed {seed}: accuracy {acc:.2%} (95% Wilson interval '
                                                  f'{lo:.1%}-{hi:.1%}) on {len(targets)} images')
    cm = confusion_matrix(targets, predictions, labels=range(len(names)))
    pd.DataFrame(cm, index=[f'true {n}' for n in names], columns=[f'pred {n}' for n in names]).to_csv(
        folder / 'confusion_matrix.csv')
    if figures:
        _GivenConfusion(learn, dl, cm).plot_confusion_matrix(
            figsize=(8, 8), title=f'Confusion matrix ({title[0].lower() + title[1:]}, acc {acc:.1%})')
        save_pyplot_figure(folder / 'confusion_matrix.png', dpi=110)
        learn.show_results(dl=dl, max_n=9)
        save_pyplot_figure(folder / 'show_results.png', dpi=110)
        plot_samples(dl, predictions, targets, names, folder / 'test_samples.png', seed=seed)
    return dict(test_acc=acc, test_acc_lo=lo, test_acc_hi=hi, macro_f1=float(table['f1'].iloc[-1]), n=len(targets))


def _accuracy(scores, targets): return float((scores.argmax(dim=1) == targets).float().mean())


def predictions(learn, dl, recipe):
    """dict(plain=scores of one pass, tta=scores with the recipe's TTA or None, targets) of `learn` on the labelled
    `dl`, in one call: with `tta_views` >= 2 the multi-view logits (`lab.ingredients.multi_view_logits`, one pass),
    with 0 fastai's `learn.tta` (4 passes with the training augmentation, blended 0.75 / 0.25 with the plain pass:
    fastai's default, `beta=0.25`)."""
    if not recipe.tta:
        plain, targets = learn.get_preds(dl=dl)[:2]
        return dict(plain=plain, tta=None, targets=targets)
    if recipe.tta_views:
        tta, plain, targets = multi_view_logits(learn, dl, recipe.tta_views)
        return dict(plain=plain, tta=tta, targets=targets)
    (augmented, plain), targets = learn.tta(dl=dl, beta=None)
    return dict(plain=plain, tta=torch.lerp(augmented, plain, 0.25), targets=targets)


def tta_words(recipe):
    "The recipe's test-time augmentation in words."
    return (f"multi-view TTA, {view_words(recipe.tta_views)}" if recipe.tta_views else
            "fastai's learn.tta (4 augmented passes blended with the plain one)")


def tta_accuracy(learn, dl, recipe):
    "Accuracy on `dl` with the recipe's test-time augmentation (see `predictions`)."
    p = predictions(learn, dl, recipe)
    return _accuracy(p['tta'], p['targets'])


def plot_predictions(learn, dl, folder, n=4, threshold=0.5, prefix='prediction'):
    "`n` figures `<prefix>_<k>.png` of frames of `dl`: input, predicted mask (sigmoid > threshold), true mask."
    learn.model.eval()
    xb, yb = dl.one_batch()
    with torch.no_grad(): probs = torch.sigmoid(learn.model(xb).float()).squeeze(1).cpu()
    images = dl.decode((xb,))[0].cpu()
    paths = []
    for k in range(min(n, len(xb))):
        fig, axs = plt.subplots(1, 3, figsize=(9, 3.2))
        panels = [(images[k].permute(1, 2, 0).numpy().astype('uint8'), 'input'),
                  ((probs[k] > threshold).numpy(), f'predicted (p > {threshold})'), (yb[k].cpu().numpy(), 'true rock mask')]
        for ax, (img, title) in zip(axs, panels):
            ax.imshow(img, cmap=None if img.ndim == 3 else 'gray', vmin=0, vmax=1 if img.ndim == 2 else None)
            ax.set_title(title, fontsize=9); ax.axis('off')
        paths.append(save_figure(fig, Path(folder) / f'{prefix}_{k}.png', dpi=100))
    return paths


def seg_scores(learn, dl, prefix):
    "`{prefix}_loss, _iou, _dice, _pixel_acc` of `learn` on the labelled `dl` (threshold 0.5, counts over all pixels)."
    values = learn.validate(dl=dl)
    return {f'{prefix}_{k}': float(v) for k, v in zip(('loss', 'iou', 'dice', 'pixel_acc'), values)}


def evaluate_run(learn, data, recipe, folder, test=False, figures=True, real_pair=False):
    """Everything a run reports after training (see the module docstring); returns the numbers for its summary.
    `test`: the test split too; `figures`: the PNGs; `real_pair`: segmentation on the real Kaggle frame(s) as well
    (`data.real_pairs`)."""
    folder, out = Path(folder), {}
    if recipe.task == 'classify':
        if recipe.tta and not recipe.train_on_valid:
            out.update(valid_acc_tta=tta_accuracy(learn, learn.dls.valid, recipe))
        if test:
            tdl = data.test_dl()
            p = predictions(learn, tdl, recipe)  # the plain pass and (with TTA) the headline's, together
            headline = p['tta'] if recipe.tta else p['plain']
            title = f"Test set, with {tta_words(recipe)}" if recipe.tta else 'Test set'
            out.update(test_report(learn, tdl, data.names, folder, seed=recipe.seed, figures=figures, title=title,
                                   preds=(headline, p['targets'])), test_report_preds='tta' if recipe.tta else 'plain')
            if recipe.tta:  # test_acc stays the plain pass's (the ablation's rows compare it); the report is TTA's
                out.update(test_acc_tta=out['test_acc'])
                plain = _accuracy(p['plain'], p['targets'])
                lo, hi = wilson(plain, len(p['targets']))
                out.update(test_acc=plain, test_acc_lo=lo, test_acc_hi=hi)
        return out
    if figures:
        plot_predictions(learn, learn.dls.valid, folder)
        learn.show_results(max_n=4, figsize=(8, 8))
        save_pyplot_figure(folder / 'show_results.png', dpi=100)
    if test and data.test_items:
        tdl = data.test_dl()
        out.update(seg_scores(learn, tdl, 'test'), n_test=len(data.test_items))
        if figures: plot_predictions(learn, tdl, folder, n=3, prefix='test_prediction')
    if real_pair:
        found = data.real_pairs
        if found:
            place, pairs = found
            rdl = data.test_dl(pairs)
            out.update(seg_scores(learn, rdl, 'real'), real_frames=len(pairs), real_data=str(place))
            if figures: plot_predictions(learn, rdl, folder, n=1, prefix='real_prediction')
    return out
