#!/usr/bin/env python
"""Task 3.1 (T3.1): a classifier for 128x128 inputs, the backbone of the Task 3 U-Net.

Data: the 10 Tiny ImageNet classes, 64 px originals upsampled to 128x128 (bilinear squish resize, so nothing
is cropped away), own stratified, seeded 80/20 train/valid split of the train folder.
Model: the lab's ResNet with a 3x3 stride-2 stem (128 -> 64) and stages 32-64-128-256 x [2,2,2,2] (2.80M
parameters): the stem halves 128 px once, so the stages see the same 64..8 px maps as at 64 px input, and
the encoder offers features at 1/2, 1/2, 1/4, 1/8 and 1/16 of the input for the U-Net.
Augmentation: horizontal flips, rotation <= 10 deg, zoom <= 1.1 (a light random crop), brightness/contrast.
Recipe: AdamW one-cycle, max lr 3e-3, weight decay 0.05, label smoothing 0.1. Writes the training log,
curves, final valid metrics and the best checkpoint (model.pth) under results/task3_classifier128/.
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.cli import training_script
from lab.runs import stage_dir, write_json
from lab.stages import FINAL_RECIPE, aggregate_runs, tiny_imagenet_data, train_variant

CLASSIFIER_128 = dict(channels=(32, 64, 128, 256), blocks=(2, 2, 2, 2), act='relu', stem='3x3s2')


def run(data, out, profile, seeds, epochs):
    "Train the 128 px classifier and keep its best checkpoint."
    with stage_dir(out, 'task3_classifier128') as folder:
        splits, dls, source = tiny_imagenet_data(data, profile, size=128, augment=True)
        runs = [train_variant('classifier128', CLASSIFIER_128, dls, folder, seed, epochs, profile, source,
                              **FINAL_RECIPE)[1] for seed in seeds]
        row = aggregate_runs('classifier128', CLASSIFIER_128, runs)
        best_run = max(runs, key=lambda r: r['best']['valid_accuracy'])
        write_json(folder / 'summary.json', dict(
            stage='task3_classifier128', best='classifier128', best_config=CLASSIFIER_128, rows=[row],
            checkpoint=f"{best_run['run']}/model.pth", image_size=128, recipe=FINAL_RECIPE, data_source=source,
            profile=profile['name'], seeds=seeds, epochs=epochs, classes=splits.names,
            conclusion=f"valid accuracy {row['valid_acc']:.2%} +- {row['valid_acc_std']:.2%} at 128 px"))
    print(f"128 px classifier: {row['params_M']}M parameters, best valid accuracy {row['valid_acc']:.2%} "
          f"(+- {row['valid_acc_std']:.2%}, {len(seeds)} seed(s)), checkpoint of seed {best_run['seed']} kept")


main = training_script(run, epochs_key='final_epochs')
if __name__ == '__main__': main()
