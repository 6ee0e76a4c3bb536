"End to end: the Task 2 and Task 3 scripts on small generated data, one epoch, through their command lines."
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from arch.resnet import ResNet
from lab.runs import latest_stage_summary, write_json

ROOT = Path(__file__).resolve().parents[1]


def run_script(script, *args):
    res = subprocess.run([sys.executable, str(ROOT / 'scripts' / script), *args], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    return res.stdout


def test_baseline_then_final_with_test_report(synthetic_tiny, tmp_path):
    out = str(tmp_path)
    run_script('stage2_baseline.py', '--data', str(synthetic_tiny), '--out', out, '--quick', '--epochs', '1')
    base = latest_stage_summary(out, 'stage2_baseline')
    assert base['data_source'] == 'synthetic' and base['best_config']['channels'] == [32, 64, 128, 256]
    run_dir = Path(base['path']) / 'baseline-seed0'
    assert len(pd.read_csv(run_dir / 'metrics.csv')) == 1 and (run_dir / 'model.pth').exists()

    printed = run_script('stage4_final.py', '--data', str(synthetic_tiny), '--out', out, '--quick', '--epochs', '1')
    assert 'no finished stage3_3_activations run' in printed  # run alone, it says it falls back to the default
    final = latest_stage_summary(out, 'stage4_final')
    folder = Path(final['path'])
    per_class = pd.read_csv(folder / 'final-seed0' / 'per_class.csv')
    assert len(per_class) == 11 and per_class['support'].iloc[-1] == 50  # 10 classes x 5 test images, + macro avg
    cm = pd.read_csv(folder / 'final-seed0' / 'confusion_matrix.csv', index_col=0)
    run = json.loads((folder / 'final-seed0' / 'summary.json').read_text())
    assert cm.values.sum() == 50 and run['test_acc'] == pytest.approx(cm.values.trace() / 50)
    for png in ('confusion_matrix.png', 'show_results.png', 'test_samples.png', 'accuracy.png', 'loss.png'):
        assert (folder / 'final-seed0' / png).is_file()
    final_md = (folder / 'final.md').read_text()
    assert 'Why this configuration' in final_md and 'stage3_3_activations: default' in final_md
    table = pd.read_csv(folder / 'experiments.csv')
    assert list(table['variant']) == ['Baseline', 'Final'] and table['test_acc'].iloc[-1] == pytest.approx(run['test_acc'])


def test_activation_stage_records_statistics_and_reads_stage_3_2(synthetic_tiny, tmp_path):
    chosen = dict(channels=[16, 32, 64], blocks=[1, 1, 1], act='relu', stem='3x3')
    folder = tmp_path / 'stage3_2_blocks' / '20260101-000000'; folder.mkdir(parents=True)
    write_json(folder / 'summary.json', dict(best='A', best_config=chosen, conclusion='A won'))
    run_script('stage3_3_activations.py', '--data', str(synthetic_tiny), '--out', str(tmp_path), '--quick',
               '--epochs', '1')
    stage = latest_stage_summary(tmp_path, 'stage3_3_activations')
    assert stage['chosen_from'] == 'stage3_2_blocks: A won'
    assert [r['config'] for r in stage['rows']] == [f'channels=16-32-64 blocks=1-1-1 act={a} stem=3x3'
                                                    for a in ('relu', 'leakyrelu', 'elu', 'gelu')]
    for r in stage['rows']:
        assert 0 < r['dead_share'] < 1 and r['grad_first_over_last'] > 0
    folder = Path(stage['path'])
    assert (folder / 'statistics_per_layer.png').is_file() and (folder / 'gradients_over_training.png').is_file()
    grads = pd.read_csv(folder / 'D-seed0' / 'gradient_stats.csv')
    assert {'step', 'layer', 'grad_norm', 'weight_norm'} <= set(grads.columns)
    # zero-initialised last BN of each block: its convs get no gradient at the very first step, all do later
    assert grads[grads.step == grads.step.max()]['grad_norm'].gt(0).all()
    acts = pd.read_csv(folder / 'A-seed0' / 'activation_stats.csv')
    assert acts['dead'].between(0, 1).all()


def test_unet_and_backbone_variants(synthetic_moon, tmp_path):
    out = str(tmp_path)
    # A small stand-in for the 128 px classifier's published stage folder
    config = dict(channels=[8, 16, 32, 64], blocks=[1, 1, 1, 1], act='relu', stem='3x3s2')
    folder = tmp_path / 'task3_classifier128' / '20260101-000000'
    (folder / 'run').mkdir(parents=True)
    torch.save(ResNet(**config).state_dict(), folder / 'run' / 'model.pth')
    write_json(folder / 'summary.json', dict(best_config=config, checkpoint='run/model.pth'))

    run_script('task3_unet.py', '--data', str(synthetic_moon), '--out', out, '--quick', '--epochs', '1')
    unet = latest_stage_summary(out, 'task3_unet')
    assert unet['data_source'] == 'synthetic' and 0 <= unet['rows'][0]['iou'] <= 1
    figures = list(Path(unet['path']).glob('unet-seed0/prediction_*.png'))
    assert 1 <= len(figures) <= 5 and (Path(unet['path']) / 'unet-seed0' / 'show_results.png').exists()

    run_script('task3_unet_backbone.py', '--data', str(synthetic_moon), '--out', out, '--quick', '--epochs', '2')
    result = latest_stage_summary(out, 'task3_unet_backbone')
    rows = {r['name'].split(' (')[0]: r for r in result['rows']}
    assert set(rows) == {'baseline U-Net', 'A: frozen encoder', 'B: fine-tuned'}
    assert rows['A: frozen encoder']['trainable_M'] < rows['A: frozen encoder']['params_M']
    assert rows['B: fine-tuned']['trainable_M'] == rows['B: fine-tuned']['params_M']
    assert rows['B: fine-tuned']['epochs'] == 3  # A's 2 epochs + 1 of fine-tuning
    assert result['best'].split(' (')[0] in rows and result['conclusion'] in (Path(result['path']) / 'table.md').read_text()


def test_backbone_without_checkpoint_is_a_clear_error(synthetic_moon, tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'task3_unet_backbone.py'), '--data', str(synthetic_moon),
                          '--out', str(tmp_path), '--quick'], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode != 0 and 'no 128 px classifier under' in res.stderr and '--train-backbone' in res.stderr
    assert not (tmp_path / 'task3_unet_backbone').exists() or not any((tmp_path / 'task3_unet_backbone').iterdir())


def test_benchmark_measures_models_and_data(synthetic_tiny, tmp_path):
    run_script('benchmark.py', '--quick', '--data', str(synthetic_tiny), '--out', str(tmp_path))
    table = pd.read_csv(next((tmp_path / 'benchmark').glob('*/table.csv')))
    assert list(table['model'][:2]) == ['ResNet 64 px', 'U-Net 128 px'] and table['model'][2].startswith('Tiny ImageNet')
    assert (table['fastai_images_per_s'] > 0).all() and (table['plain_images_per_s'][:2] > 0).all()
