#!/usr/bin/env python
"""Stage 4 (T2.10-T2.13): the final model, its test report and the table of all experiments.

The configuration is the best of stage 3.3, which carries the best channels (3.1) and blocks (3.2) forward;
each stage's reason is printed. Recipe: AdamW one-cycle, max lr 3e-3, weight decay 0.05, label smoothing
0.1, flip/rotate/zoom/lighting augmentation, 35 epochs (30-40 in the spec). The best checkpoint by valid
accuracy is reloaded and evaluated on the test set (the official val split): accuracy, per-class
precision/recall/F1, confusion matrix (PNG and CSV), `learn.show_results` and 10 random test images.
"""
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.tiny_imagenet import test_dl
from lab.evaluate import test_report
from lab.report import mean_std
from lab.cli import training_script
from lab.runs import latest_stage_summary, stage_dir, write_json
from lab.stages import (BASELINE, FINAL_RECIPE, aggregate_runs, experiments_table, previous_choice,
                        tiny_imagenet_data, train_variant)



def run(data, out, profile, seeds, epochs):
    "Train the final model, test it and write the table of all experiments."
    reasons = []
    for stage in ('stage3_1_channels', 'stage3_2_blocks'):
        s = latest_stage_summary(out, stage)
        reasons.append(f"- {stage}: {s['conclusion'] if s else 'not run; its default stands'}")
    cfg, reason = previous_choice(out, 'stage3_3_activations', BASELINE)
    reasons.append(f"- stage3_3_activations: {reason}")
    print('\n'.join(['why this configuration:'] + reasons))
    with stage_dir(out, 'stage4_final') as folder:
        splits, dls, source = tiny_imagenet_data(data, profile, augment=True)
        runs = []
        for seed in seeds:
            learn, summary = train_variant('final', cfg, dls, folder, seed, epochs, profile, source, **FINAL_RECIPE)
            learn.load('model')  # the best epoch by valid accuracy (T2.11)
            summary.update(test_report(learn, test_dl(dls, splits), splits.names, learn.path, seed=seed))
            write_json(learn.path / 'summary.json', summary)
            runs.append(summary)
        row = aggregate_runs('final', cfg, runs)
        row['test_acc'], row['test_acc_std'] = mean_std([r['test_acc'] for r in runs])
        summary = dict(stage='stage4_final', best='final', best_config=cfg, rows=[row], chosen_from=reason,
                       recipe=FINAL_RECIPE, data_source=source,
                       profile=profile['name'], seeds=seeds, epochs=epochs,
                       conclusion=f"test accuracy {row['test_acc']:.2%} +- {row['test_acc_std']:.2%} over {len(seeds)} seed(s)")
        write_json(folder / 'summary.json', summary)
        (folder / 'final.md').write_text('\n'.join([
            f"# Final model: {summary['conclusion']}", '', f"Configuration: {row['config']} ({row['params_M']}M parameters), "
            f"valid accuracy {row['valid_acc']:.2%}; test = the official val split ({runs[0]['n']} images, {source} data).",
            '', 'Why this configuration (each stage\'s conclusion):', *reasons, '', f"Recipe: {FINAL_RECIPE}, {epochs} epochs.",
            '', *[(folder / f'final-seed{r["seed"]}' / 'per_class.md').read_text() for r in runs]]))
        experiments_table(out, folder, current=summary)
        print(f"final {cfg}: {row['params_M']}M parameters, valid {row['valid_acc']:.2%}, {summary['conclusion']} "
              f"(test = official val split, {runs[0]['n']} images, data: {source})")


main = training_script(run, epochs_key='final_epochs')
if __name__ == '__main__': main()
