"""Evaluating a trained run: the classifier's test report (T2.11, T2.12) and the U-Net's test and sim-to-real scores.

`evaluate_run` is what a run does after training (lab.train) and what scripts/evaluate.py does for any finished run:
classifier: accuracy with its 95% Wilson interval, per-class P/R/F1, confusion matrix (PNG + CSV), `show_results`
and 10 random test images, plus test-time augmentation when the recipe asks for it (fastai's `learn.tta`, or the
lab's multi-view TTA: `lab.ingredients.multi_view_logits`); with TTA the per-class table, the confusion matrix and the
samples rest on the TTA predictions, the same as the headline accuracy. U-Net: IoU, Dice and pixel accuracy on the
held-out test frames and on the real Kaggle frame(s), with prediction figures.
"""
from dataclasses import replace
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from fastai.interpret import ClassificationInterpretation
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from .caveats import caveat, caveat_notes, merged, run_caveats
from .data.loaders import build_data, real_moon_pair
from .ingredients import multi_view_logits, view_words
from .io import read_json, write_json
from .learner import load_run_model, make_learner, seed_everything, setup_torch
from .machine import environment_info
from .predict import check_run_dir
from .stats import wilson
from .tables import markdown_table, write_table

__all__ = ['test_report', 'per_class_table', 'plot_samples', 'evaluate_run', 'tta_accuracy', 'predictions',
           'tta_words', 'tta_scores', 'seg_scores', 'plot_predictions', 'evaluate_saved_run']


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
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)
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
        plt.gcf().savefig(folder / 'confusion_matrix.png', dpi=110, bbox_inches='tight'); plt.close('all')
        learn.show_results(dl=dl, max_n=9)
        plt.gcf().savefig(folder / 'show_results.png', dpi=110, bbox_inches='tight'); plt.close('all')
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


def tta_scores(run_dir, recipe, splits=('valid', 'test')):
    """Accuracy on `splits` of a finished classifier run's kept checkpoint (model.pth), one pass and with `recipe`'s
    test-time augmentation: dict(valid_acc, valid_acc_tta, n_valid, and the same for test). Stage 4 measures TTA this
    way on its best row only, on valid alone (the test set is the final model's); nothing is written."""
    model, _ = load_run_model(run_dir)
    seed_everything(recipe.seed)  # fastai's learn.tta draws augmentations: the same ones every time
    data = build_data(recipe, say=False)
    learn = make_learner(recipe, model, data.dls)
    out = {}
    for split, dl in [(s, data.dls.valid if s == 'valid' else data.test_dl()) for s in splits]:
        p = predictions(learn, dl, recipe)
        out.update({f'{split}_acc': _accuracy(p['plain'], p['targets']), f'{split}_acc_tta': _accuracy(p['tta'], p['targets']),
                    f'n_{split}': len(p['targets'])})
    return out


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
        fig.tight_layout(); paths.append(Path(folder) / f'{prefix}_{k}.png'); fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def seg_scores(learn, dl, prefix):
    "`{prefix}_loss, _iou, _dice, _pixel_acc` of `learn` on the labelled `dl` (threshold 0.5, counts over all pixels)."
    values = learn.validate(dl=dl)
    return {f'{prefix}_{k}': float(v) for k, v in zip(('loss', 'iou', 'dice', 'pixel_acc'), values)}


def evaluate_run(learn, data, recipe, folder, test=False, figures=True, real_pair=False):
    """Everything a run reports after training (see the module docstring); returns the numbers for its summary.
    `test`: the test split too; `figures`: the PNGs; `real_pair`: segmentation on the real Kaggle frame(s) as well."""
    folder, out = Path(folder), {}
    if recipe.task == 'classify':
        if recipe.tta and not recipe.train_on_valid: out['valid_acc_tta'] = tta_accuracy(learn, learn.dls.valid, recipe)
        if test:
            tdl = data.test_dl()
            p = predictions(learn, tdl, recipe)  # the plain pass and (with TTA) the headline's, together
            headline = p['tta'] if recipe.tta else p['plain']
            title = f"Test set, with {tta_words(recipe)}" if recipe.tta else 'Test set'
            out.update(test_report(learn, tdl, data.names, folder, seed=recipe.seed, figures=figures, title=title,
                                   preds=(headline, p['targets'])), test_report_preds='tta' if recipe.tta else 'plain')
            if recipe.tta:  # test_acc stays the plain pass's (the ablation's rows compare it); the report is TTA's
                out['test_acc_tta'] = out['test_acc']
                plain = _accuracy(p['plain'], p['targets'])
                lo, hi = wilson(plain, len(p['targets']))
                out.update(test_acc=plain, test_acc_lo=lo, test_acc_hi=hi)
        return out
    if figures:
        plot_predictions(learn, learn.dls.valid, folder)
        learn.show_results(max_n=4, figsize=(8, 8))
        plt.gcf().savefig(folder / 'show_results.png', dpi=100, bbox_inches='tight'); plt.close('all')
    if test and data.test_items:
        tdl = data.test_dl()
        out.update(seg_scores(learn, tdl, 'test'), n_test=len(data.test_items))
        if figures: plot_predictions(learn, tdl, folder, n=3, prefix='test_prediction')
    if real_pair:
        found = real_moon_pair()
        if found:
            place, pairs = found
            rdl = data.test_dl(pairs)
            out.update(seg_scores(learn, rdl, 'real'), real_frames=len(pairs), real_data=str(place))
            if figures: plot_predictions(learn, rdl, folder, n=1, prefix='real_prediction')
    return out


# ----- a finished run folder again (scripts/evaluate.py): its model.pth on its recipe's data -------------------------


def evaluate_saved_run(run_dir, folder, data=None, figures=True):
    """Evaluate a run folder's kept checkpoint again, into `folder`: the model rebuilt from model.pth's recipe and the
    data from the same recipe (same folder, classes, split; `data`: the data folder's new place when it moved).
    Classifier: valid accuracy and the test report (`test_report`: per-class P/R/F1, confusion matrix PNG + CSV, show
    results, 10 samples; TTA when the recipe has it). U-Net: IoU, Dice and pixel accuracy on valid, on the test frames
    and on the real frame(s) when there are any, with prediction figures. Writes evaluation.json and metrics.md;
    returns the numbers."""
    run = check_run_dir(run_dir, 'model.pth')
    model, recipe = load_run_model(run)
    late = _saved_run_caveats(run, recipe)
    for text in late: print(f"NOTICE: {text}")
    if data: recipe = replace(recipe, data=str(Path(data).resolve()))
    if recipe.data and not Path(recipe.data).exists():
        raise FileNotFoundError(f"{recipe.data}: the data folder of {run} (named by the recipe in its model.pth) is not "
                                f"there any more; pass --data with its new place")
    setup_torch()
    seed_everything(recipe.seed, recipe.deterministic)
    data_ = build_data(recipe).check()  # every image decoded before anything is written, a bad one named
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    learn = make_learner(recipe, model, data_.dls)
    learn.path, learn.model_dir = folder, '.'
    out = dict(run=str(run), task=recipe.task, arch=recipe.arch, data=str(data_.root), source=data_.source,
               n_valid=data_.info['n_valid'], n_test=data_.info['n_test'])
    if recipe.task == 'classify':
        loss, acc = learn.validate()[:2]
        out.update(valid_loss=float(loss), valid_acc=float(acc))
    else: out.update(seg_scores(learn, learn.dls.valid, 'valid'))
    seed_everything(recipe.seed)
    out.update(evaluate_run(learn, data_, recipe, folder, test=True, figures=figures, real_pair=True))
    if recipe.task == 'classify' and 'n' in out: out['n_test_scored'] = out.pop('n')
    if recipe.train_on_valid: out['note'] = 'trained on train + valid: its valid numbers are not held out'
    out.update(on_request=True, caveats=merged(run_caveats(recipe, data_.source, data_.caveats), late))
    trained = read_json(run / 'summary.json') if (run / 'summary.json').is_file() else {}
    write_json(folder / 'evaluation.json', dict(out, recipe=recipe.to_dict(), data_info=data_.info,
                                                trained_summary={k: trained.get(k) for k in ('best_epoch', 'best', 'test_acc')
                                                                 if k in trained},
                                                environment=environment_info()))
    rows = pd.DataFrame([{'metric': k, 'value': v} for k, v in out.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)])
    (folder / 'metrics.md').write_text(f"# Evaluation of {run} (on request: evaluate.py)\n\nData: {data_.root} ({data_.source}); "
                                       f"checkpoint: model.pth (recipe inside it).\n\n" + markdown_table(rows) +
                                       (f"\n{out['note']}\n" if 'note' in out else '') +
                                       caveat_notes(out['caveats']) + '\n')
    return out


def _saved_run_caveats(run, recipe):
    """What evaluating the run folder `run` again cannot support: an unfinished run (fewer epochs in its metrics.csv
    than its recipe's), and a test score of a classifier run whose training did not test it (an ablation row, a
    comparison variant): the lab's one test evaluation is the final model's."""
    out, trained = [], read_json(run / 'summary.json') if (run / 'summary.json').is_file() else None
    if trained is None:
        done = len(pd.read_csv(run / 'metrics.csv')) if (run / 'metrics.csv').is_file() else 0
        out.append(caveat('unfinished', done=done, epochs=recipe.epochs))
    tested = 'test_acc' in trained if trained else run.name.split('-seed')[0] in ('final', 'refit', 'classifier128')
    if recipe.task == 'classify' and not tested: out.append(caveat('on_request'))
    return out
