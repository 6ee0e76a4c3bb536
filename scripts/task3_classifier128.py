#!/usr/bin/env python
"""Task 3.1 (T3.1): a classifier for 128x128 inputs, the backbone of the Task 3 U-Net.

Data: the Tiny ImageNet classes, 64 px originals upsampled to 128x128 (bilinear squish resize, so nothing is cropped
away), own stratified, seeded 80/20 train/valid split of the train folder; test = the official val split.
Model: the lab's ResNet with a 3x3 stride-2 stem (128 -> 64) and stages 32-64-128-256 x [2,2,2,2] (2.80M
parameters): the stem halves 128 px once, so the stages see the same 64..8 px maps as at 64 px input, and the
encoder offers features at 1/2, 1/2, 1/4, 1/8 and 1/16 of the input for the U-Net.
Recipe (`CLASSIFIER_128`): the final model's (AdamW one-cycle 3e-3, wd 0.05, label smoothing 0.1, reflect-pad crops
+ flips on the device, CutMix, 35 epochs), trained on train only so that valid accuracy is measured. Writes the
training log, curves, table.md (valid and test accuracy with 95% intervals), the test report (confusion matrix,
per-class table, samples) and the best checkpoint (model.pth) under results/task3_classifier128/.
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.cli import training_script
from lab.jobs import seeded, train_runs
from lab.recipe import CLASSIFIER_128
from lab.report import accuracy_text, compare, write_table
from lab.stages import classifier_row, lr_find_stage, open_stage, stage_summary
from lab.train import RunOptions

RECIPE = CLASSIFIER_128  # 128 px, 3x3s2 stem, the final recipe on train only (lab/recipe.py)


def run(recipe, opts):
    "Train the 128 px classifier, test it and keep its best checkpoint."
    st, recipe = open_stage(opts, 'task3_classifier128', recipe)
    with st:
        if st.done: return st.done
        if opts.lr_find: return lr_find_stage(st, recipe)
        runs = train_runs(st, seeded({'classifier128': recipe}, opts.seeds), RunOptions(test=True), jobs=opts.jobs)
        row = classifier_row('classifier128', recipe, list(runs.values()))
        valid = [r['best']['valid_accuracy'] for r in runs.values()]
        test = [r['test_acc'] for r in runs.values()]
        conclusion = (f"valid accuracy {accuracy_text(row['valid_acc'], row['n_eval'], valid)} at {recipe.size} px; "
                      f"test accuracy {accuracy_text(row['test_acc'], row['n_test'], test)}")
        best_run = max(runs, key=lambda k: runs[k]['best']['valid_accuracy'])
        write_table([row], st.folder, title=f'Task 3.1: {recipe.size} px classifier', notes=(
            f"{conclusion}.\n\n{compare([row], 'valid_acc')['text']} Best epoch by valid accuracy; test = the "
            f"official val split; the checkpoint kept for Task 3.3 is {best_run}'s (the best valid accuracy)."))
        summary = st.finish(stage_summary('task3_classifier128', f'Task 3.1: {recipe.size} px classifier', recipe,
                                          {'classifier128': recipe}, 'classifier128', [row], conclusion, opts,
                                          checkpoint=f'{best_run}/model.pth', image_size=recipe.size))
    print(f"{recipe.size} px classifier: {row['params_M']}M parameters, {conclusion}")
    return summary


main = training_script(run, RECIPE)
if __name__ == '__main__': main()
