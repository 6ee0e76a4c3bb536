"""A finished run again: its kept checkpoint (model.pth) on its recipe's data.

`evaluate_saved_run` is scripts/evaluate.py's work: the model rebuilt from the recipe inside model.pth, the data
built from the same recipe, then `lab.evaluate.evaluate_run` as after training. `tta_scores` is stage 4's TTA
measure of a kept checkpoint, one pass and with the recipe's test-time augmentation.
"""
from dataclasses import replace
from pathlib import Path

import pandas as pd

from .data.loaders import build_data
from .evaluate import _accuracy, evaluate_run, predictions, seg_scores
from .io import write_json
from .record import Evaluation, RunRecord, data_counts
from .learner import make_learner, setup_torch
from .models import load_run_model
from .machine import environment_info, seed_everything
from .predict import check_run_dir
from .tables import markdown_table

__all__ = ['tta_scores', 'evaluate_saved_run']


def tta_scores(run_dir, recipe):
    """Valid and test accuracy of a finished classifier run's kept checkpoint (model.pth), one pass and with
    `recipe`'s test-time augmentation: an `Evaluation` of valid_acc(_tta), test_acc(_tta), n_valid, n_test.
    Stage 4 measures TTA this way on its best row only; nothing is written."""
    model, _ = load_run_model(run_dir)
    seed_everything(recipe.seed)  # fastai's learn.tta draws augmentations: the same ones every time
    data = build_data(recipe, say=False)
    learn = make_learner(recipe, model, data.dls)
    out = Evaluation()
    for split, dl in (('valid', data.dls.valid), ('test', data.test_dl())):
        p = predictions(learn, dl, recipe)
        out.update(**{f'{split}_acc': _accuracy(p['plain'], p['targets']), f'{split}_acc_tta': _accuracy(p['tta'], p['targets']),
                    f'n_{split}': len(p['targets'])})
    return out



def evaluate_saved_run(run_dir, folder, data=None, figures=True):
    """Evaluate a run folder's kept checkpoint again, into `folder`: the model rebuilt from model.pth's recipe and the
    data from the same recipe (same folder, classes, split; `data`: the data folder's new place when it moved).
    Classifier: valid accuracy and the test report (`test_report`: per-class P/R/F1, confusion matrix PNG + CSV, show
    results, 10 samples; TTA when the recipe has it). U-Net: IoU, Dice and pixel accuracy on valid, on the test frames
    and on the real frame(s) when there are any, with prediction figures. Writes evaluation.json and metrics.md;
    returns the numbers."""
    run = check_run_dir(run_dir, 'model.pth')
    if not (run / 'summary.json').is_file():
        print(f"NOTICE: {run} is unfinished: evaluating its best checkpoint so far")
    model, recipe = load_run_model(run)
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
    out = Evaluation(run=str(run), task=recipe.task, arch=recipe.arch, data=str(data_.root), source=data_.source,
                     **{k: v for k, v in data_counts(data_.info).items() if k != 'n_train'})
    if recipe.task == 'classify':
        loss, acc = learn.validate()[:2]
        out.update(valid_loss=float(loss), valid_acc=float(acc))
    else: out.update(**seg_scores(learn, learn.dls.valid, 'valid'))
    seed_everything(recipe.seed)
    out.update(**evaluate_run(learn, data_, recipe, folder, test=True, figures=figures, real_pair=True))
    if recipe.task == 'classify' and out.has('n'): out.update(n_test_scored=out.drop('n'))
    if recipe.train_on_valid: out.update(note='trained on train + valid: its valid numbers are not held out')
    if data_.caveats: out.update(caveats=data_.caveats)
    trained = RunRecord.read(run) if (run / 'summary.json').is_file() else RunRecord()
    write_json(folder / 'evaluation.json', dict(out.to_dict(), recipe=recipe.to_dict(), data_info=data_.info,
                                                trained_summary=_trained_summary(trained),
                                                environment=environment_info()))
    rows = pd.DataFrame([{'metric': k, 'value': v} for k, v in out.to_dict().items() if isinstance(v, (int, float))])
    (folder / 'metrics.md').write_text(f"# Evaluation of {run}\n\nData: {data_.root} ({data_.source}); "
                                       f"checkpoint: model.pth (recipe inside it).\n\n" + markdown_table(rows) +
                                       (f"\n{out.note}\n" if out.note else '') +
                                       ''.join(f"\n**Caveat:** {c}.\n" for c in data_.caveats))
    return out


def _trained_summary(trained):
    "What evaluation.json repeats of the run's own summary: its kept epoch, that epoch's metrics, its test accuracy."
    return {k: v for k, v in dict(best_epoch=trained.best_epoch, best=trained.best, test_acc=trained.test_acc).items()
            if trained.has(k)}
