#!/usr/bin/env python
"""Task 3.1 (T3.1): a classifier for 128x128 inputs, the backbone of the Task 3 U-Net.

Data: the Tiny ImageNet classes, 64 px originals upsampled to 128x128 (bilinear squish resize, so nothing is cropped
away), own stratified, seeded train/valid split of the train folder; test = the official val split.
Model and recipe: `CLASSIFIER_128` (lab/recipe.py; listed at the end of --help): the lab's ResNet with a 3x3
stride-2 stem that halves 128 px once, so the stages see the same maps as at 64 px input, and the encoder offers
features at 1/2, 1/2, 1/4, 1/8 and 1/16 of the input for the U-Net; the final model's recipe, trained on train only
so that valid accuracy is measured. Writes the training log, curves, table.md (valid and test accuracy with 95%
intervals), the test report (confusion matrix, per-class table, samples) and the best checkpoint (model.pth) under
results/task3_classifier128/.
"""

from fastai_lab.cli import script
from fastai_lab.recipe import CLASSIFIER_128
from fastai_lab.cost import cost_note
from fastai_lab.record import RunRecord
from fastai_lab.stats import accuracy_text
from fastai_lab.tables import EPOCHS_FROM_0, write_table
from fastai_lab.rows import classifier_row, compare_valid
from fastai_lab.stage import run_stage
from fastai_lab.train import RunOptions

RECIPE = CLASSIFIER_128  # 128 px, stride-2 stem, the final recipe on train only (lab/recipe.py)


def run(recipe, opts):
    "Train the 128 px classifier, test it and keep its best checkpoint."
    def experiment(ctx):
        recipe = ctx.recipe
        runs = [RunRecord.of(r) for r in ctx.train({'classifier128': recipe}, RunOptions(test=True))['classifier128']]
        row = classifier_row('classifier128', recipe, runs)
        valid, test = [r.best['valid_accuracy'] for r in runs], [r.test_acc for r in runs]
        conclusion = (f"valid accuracy {accuracy_text(row.valid_acc, row.n_eval, valid)} at {recipe.size} px; "
                      f"test accuracy {accuracy_text(row.test_acc, row.n_test, test)}")
        if recipe.tta:  # the test report (per-class table, confusion matrix) rests on the TTA predictions
            tta = [r.test_acc_tta for r in runs]
            conclusion += (f"; with test-time augmentation {accuracy_text(sum(tta) / len(tta), row.n_test, tta)} "
                           f"(the test report's predictions)")
        best_run = max(runs, key=lambda r: r.best['valid_accuracy']).run
        write_table([row], ctx.folder, title=f'Task 3.1: {recipe.size} px classifier', notes=(
            f"{conclusion}.\n\n{compare_valid([row])['text']} Best epoch by valid accuracy "
            f"({EPOCHS_FROM_0}); test = the "
            f"official val split; the checkpoint kept for Task 3.3 is {best_run}'s (the best valid accuracy)."
            f"\n\n{cost_note([row])}" + ctx.caveat_notes()))
        print(f"{recipe.size} px classifier: {row.params_M}M parameters, {conclusion}")
        return ctx.summary(f'Task 3.1: {recipe.size} px classifier', {'classifier128': recipe}, 'classifier128',
                           [row.to_dict()],
                           conclusion, checkpoint=f'{best_run}/model.pth', image_size=recipe.size)
    return run_stage(opts, 'task3_classifier128', recipe, experiment)


main = script(run, recipe=RECIPE)
if __name__ == '__main__': main()
