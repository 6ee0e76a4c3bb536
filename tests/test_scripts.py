"End to end: the Task 2 and Task 3 scripts on tiny generated data through their command lines, in this process."
import json, os, re, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

import importlib
from fastai_lab.checkpoint import read_checkpoint
from fastai_lab.saved import evaluate_saved_run
from fastai_lab.lookup import latest_stage_summary
from fastai_lab.io import read_json

ROOT = Path(__file__).resolve().parents[1]


def main_of(name): return importlib.import_module(f'scripts.{name}').main


def test_baseline_then_final_with_ablation_and_test_report(tiny_cli, tmp_path, capsys):
    out = tmp_path / 'out'
    main_of('stage2_baseline')(tiny_cli(epochs=1))
    base = latest_stage_summary(out, 'stage2_baseline')
    run_dir = Path(base['path']) / 'baseline-seed0'
    assert len(pd.read_csv(run_dir / 'metrics.csv')) == 1 and (run_dir / 'model.pth').exists()
    assert 'ResNet(' in capsys.readouterr().out  # T2.6: the architecture is printed

    main_of('stage4_final')(tiny_cli('--refit', epochs=3))
    printed = capsys.readouterr().out
    assert 'no finished stage3_3_activations run on this data' in printed  # run alone, it says it uses the default
    assert 'stage 4 trains at most 11 ablation row(s) + the final model = 12 run(s) x 3 epochs x 24 train images' in printed
    final = latest_stage_summary(out, 'stage4_final')
    folder = Path(final['path'])
    ablation = pd.read_csv(folder / 'ablation.csv')
    steps = ablation['step'].str.split(':| \\(').str[0].tolist()
    assert steps[:5] == ['spec', '+ one-cycle AdamW', '+ label smoothing', '+ stronger augmentation', '+ sample mixing']
    assert steps[-3:] == ['+ test-time augmentation', 'final', 'refit'] and len(steps) == 14
    assert set(ablation['kept']) <= {'start', 'yes', 'no', 'final', 'extra'} and ablation['why'].notna().all()
    rows = {r['name']: r for r in final['rows']}
    for name, r in rows.items():
        if r.get('on') and name not in ('final', 'refit'):
            assert r['valid_gain'] == pytest.approx(r['valid_acc'] - rows[r['on']]['valid_acc'])
    assert (folder / 'ablation_valid.png').is_file()
    for name in rows:  # every run writes its curves
        if name != 'tta': assert (folder / f'{name}-seed0' / 'accuracy.png').is_file(), name
    # the final model trained on train: its model.pth is its best epoch by valid accuracy, its valid accuracy its own
    run_dir = folder / 'final-seed0'
    run = read_json(run_dir / 'summary.json')
    history = pd.read_csv(run_dir / 'metrics.csv')
    best = int(history['valid_accuracy'].to_numpy().argmax())
    assert run['best_epoch'] == best == read_checkpoint(run_dir / 'model.pth')['epoch'] and len(history) == 3
    assert not run['recipe']['train_on_valid'] and run['monitor'] == 'valid_accuracy'
    assert rows['final']['valid_acc'] == pytest.approx(history['valid_accuracy'].max())
    again = evaluate_saved_run(run_dir, tmp_path / 'again', figures=False)
    assert again['valid_acc'] == pytest.approx(history['valid_accuracy'].max())
    # the final recipe is the best row's (with TTA when its row was kept)
    base = read_json(folder / f"{final['ablation_base']}-seed0" / 'config.json')['recipe']
    assert {k: v for k, v in run['recipe'].items() if k not in ('tta', 'tta_views')} == \
           {k: v for k, v in base.items() if k not in ('tta', 'tta_views')}
    # the per-class table, the confusion matrix and the samples rest on the headline's predictions
    headline = run['test_acc_tta'] if run['recipe']['tta'] else run['test_acc']
    per_class = pd.read_csv(run_dir / 'per_class.csv')
    assert len(per_class) == 4 and per_class['support'].iloc[-1] == 6  # 3 classes x 2 test images, + macro avg
    assert (per_class['recall'] * per_class['support']).iloc[:-1].sum() / 6 == pytest.approx(headline)
    cm = pd.read_csv(run_dir / 'confusion_matrix.csv', index_col=0)
    assert cm.values.sum() == 6 and cm.values.trace() / 6 == pytest.approx(headline)
    assert f"accuracy {headline:.2%}" in (run_dir / 'per_class.md').read_text()
    assert rows['final']['test_acc'] == pytest.approx(headline)
    for png in ('confusion_matrix.png', 'show_results.png', 'test_samples.png', 'accuracy.png', 'loss.png'):
        assert (run_dir / png).is_file()
    # the refit row: train + valid, last epoch, no valid accuracy, never the headline
    refit = read_json(folder / 'refit-seed0' / 'summary.json')
    assert refit['recipe']['train_on_valid'] and refit['monitor'].startswith('last epoch') and refit['best_epoch'] == 2
    assert rows['refit']['valid_acc'] is None and final['best'] == 'final'
    final_md = (folder / 'final.md').read_text()
    assert 'Why this configuration' in final_md and 'stage3_3_activations: default' in final_md and 'Wilson' in final_md
    assert 'best epoch by valid accuracy kept' in final_md
    table = pd.read_csv(folder / 'experiments.csv')
    assert list(table['variant']) == ['Baseline', 'Final']
    assert table['test_acc'].iloc[-1] == pytest.approx(headline)
    assert table['valid_acc'].iloc[-1] == pytest.approx(history['valid_accuracy'].max())
    assert (run_dir / 'export.pkl').is_file()


def test_unet_then_classifier_backbone_variants(tiny_cli, synthetic_moon, tmp_path):
    out, moon = tmp_path / 'out', ['--data', str(synthetic_moon), '--out', str(tmp_path / 'out'), '--quick', '--size', '16']
    main_of('task3_classifier128')(tiny_cli('--stem', '3x3s2', '--size', '32', epochs=1))
    clf = latest_stage_summary(out, 'task3_classifier128')
    assert (Path(clf['path']) / 'classifier128-seed0' / 'confusion_matrix.csv').is_file() and 'test accuracy' in clf['conclusion']
    main_of('task3_unet')([*moon, '--epochs', '1', '--base', '8'])
    unet = latest_stage_summary(out, 'task3_unet')
    row = unet['rows'][0]
    assert 0 <= row['iou'] <= 1 and 'test_iou' in row and read_json(Path(unet['path']) / 'unet-seed0' / 'summary.json')['n_test'] == 1
    assert list(Path(unet['path']).glob('unet-seed0/prediction_*.png'))
    main_of('task3_unet_backbone')([*moon, '--epochs', '2', '--tiny', str(tiny_cli()[1])])
    result = latest_stage_summary(out, 'task3_unet_backbone')
    rows = {r['name'].split(' (')[0]: r for r in result['rows']}
    assert set(rows) == {'baseline U-Net', 'A: frozen encoder', 'B: fine-tuned'}
    assert rows['A: frozen encoder']['trainable_M'] < rows['A: frozen encoder']['params_M']
    assert rows['B: fine-tuned']['trainable_M'] == rows['B: fine-tuned']['params_M']
    assert rows['B: fine-tuned']['epochs'] == 3  # A's 2 epochs + 1 of fine-tuning
    b = read_json(Path(result['path']) / 'B-seed0' / 'config.json')['recipe']
    assert b['init'].endswith('A-seed0/model.pth') and (b['lr'], b['encoder_lr']) == (1e-4, 1e-5)
    assert result['best'] in [r['name'] for r in result['rows']] and result['conclusion'] in (Path(result['path']) / 'table.md').read_text()


def test_backbone_without_a_classifier_is_a_clear_error(synthetic_moon, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main_of('task3_unet_backbone')(['--data', str(synthetic_moon), '--out', str(tmp_path), '--quick'])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and 'no 128 px classifier of the quick profile' in err and '--train-backbone' in err
    assert not (tmp_path / 'task3_unet_backbone').exists() or not any((tmp_path / 'task3_unet_backbone').iterdir())


def test_one_model_on_two_processes_with_torchrun(tiny_cli, tmp_path):
    "DDP through fastai's distrib_ctx, two CPU processes (gloo): one run, written once, by rank 0."
    env = dict(os.environ, OMP_NUM_THREADS='1')
    res = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                          str(ROOT / 'scripts' / 'stage4_final.py'), '--no-ablation', *tiny_cli(epochs=2)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    final = latest_stage_summary(tmp_path / 'out', 'stage4_final')
    run = Path(final['path']) / 'final-seed0'
    history = pd.read_csv(run / 'metrics.csv')
    assert list(history['epoch']) == [0, 1]  # one row per epoch: rank 1 wrote nothing
    assert not json.loads((run / 'config.json').read_text())['recipe']['train_on_valid']
    # the final model trains on train: its valid accuracy is its own, at its best epoch
    assert final['rows'][-1]['valid_acc'] == pytest.approx(history['valid_accuracy'].max())
    assert '--no-ablation: the final model is the recipe as given' in (Path(final['path']) / 'ablation.md').read_text()
    assert res.stdout.count('final-seed0 epoch 1 (2 of 2)') == 1  # only rank 0 speaks
    assert [p.name for p in (tmp_path / 'out' / 'stage4_final').iterdir()] == [Path(final['path']).name]


def test_run_all_runs_in_one_process_and_ends_with_the_report(tiny3, tmp_path):
    out = tmp_path / 'out'
    main_of('run_all')(['--data', str(tiny3), '--out', str(out), '--quick', '--epochs', '1', '--size', '16',
                        '--classes', '3', '--bs', '8', '--only', 'task1_gradients,stage2_baseline,report'])
    times = read_json(next((out / 'run_all').glob('*/times.json')))
    assert list(times['seconds']) == ['task1_gradients', 'stage2_baseline', 'report'] and times['profile'] == 'quick'
    assert latest_stage_summary(out, 'stage2_baseline')['recipe']['epochs'] == 1  # the recipe flags reached the stage
    text = (out / 'REPORT.md').read_text()
    links = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', text)
    assert links and all((out / link).is_file() for link in links)
    html = (out / 'REPORT.html').read_text()
    assert html.count('<img') == len(links) and 'src="data:image/png;base64,' in html
