"""The test report of a trained classifier (T2.11, T2.12): accuracy, per-class P/R/F1, confusion matrix, samples."""
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from fastai.interpret import ClassificationInterpretation
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from .report import write_table

__all__ = ['test_report', 'per_class_table', 'plot_samples']


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


def test_report(learn, dl, names, folder, seed=0):
    """Evaluate `learn` on the labelled `dl`; write per_class.md/csv, confusion_matrix.png/csv,
    show_results.png and test_samples.png into `folder`; return dict(test_acc, macro_f1, n)."""
    folder = Path(folder)
    _, targets, predictions = learn.get_preds(dl=dl, with_decoded=True)
    predictions, targets = predictions.numpy(), targets.numpy()
    acc = float((predictions == targets).mean())
    table = per_class_table(targets, predictions, names)
    write_table(table, folder, 'per_class', title=f'Test set, seed {seed}: accuracy {acc:.2%} on {len(targets)} images')
    cm = confusion_matrix(targets, predictions, labels=range(len(names)))
    pd.DataFrame(cm, index=[f'true {n}' for n in names], columns=[f'pred {n}' for n in names]).to_csv(
        folder / 'confusion_matrix.csv')
    ClassificationInterpretation.from_learner(learn, dl=dl).plot_confusion_matrix(figsize=(8, 8), title=f'Confusion matrix (test, acc {acc:.1%})')
    plt.gcf().savefig(folder / 'confusion_matrix.png', dpi=110, bbox_inches='tight'); plt.close('all')
    learn.show_results(dl=dl, max_n=9)
    plt.gcf().savefig(folder / 'show_results.png', dpi=110, bbox_inches='tight'); plt.close('all')
    plot_samples(dl, predictions, targets, names, folder / 'test_samples.png', seed=seed)
    return dict(test_acc=acc, macro_f1=float(table['f1'].iloc[-1]), n=len(targets))
