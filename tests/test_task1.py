"Task 1 probes: shapes, exact weight-variance ratios, Conv2d/ReLU alternation, first-vs-last gradients, scripts."
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn

from fastai_lab.arch.probes import DeepConvReLU, VarianceProbeNet, activation_profile, init_convs, ks_distance, weight_variances, weighted_layers
from fastai_lab.callbacks import backward_probe
from scripts import task1_gradients, task1_variance

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('batch', [1, 3])
def test_variance_net_has_five_weighted_layers_and_gap_output(batch):
    model = VarianceProbeNet()
    assert [type(m) for _, m in weighted_layers(model)] == [nn.Conv2d] * 5
    assert model(torch.randn(batch, 3, 64, 64)).shape == (batch, 512, 1, 1)


@pytest.mark.parametrize('seed', [0, 1, 7])
def test_layer3_weight_variance_is_exactly_twice_layers_2_and_4(seed):
    v = list(weight_variances(VarianceProbeNet(layer3_ratio=2.0, seed=seed)).values())
    assert v[2] / v[1] == pytest.approx(2.0, rel=1e-6) and v[2] / v[3] == pytest.approx(2.0, rel=1e-6)
    assert v[1] == pytest.approx(2 / (64 * 9), rel=1e-6)   # Kaiming's 2/fan_in for layers 2 and 4
    c = list(weight_variances(VarianceProbeNet(layer3_ratio=1.0, seed=seed)).values())
    assert c[2] / c[1] == pytest.approx(1.0, rel=1e-6) and c[2] / c[3] == pytest.approx(1.0, rel=1e-6)


def test_doubled_variance_scales_activations_from_layer3_on_by_sqrt2():
    x = torch.randn(16, 3, 64, 64)
    std_c, gap_c = activation_profile(VarianceProbeNet(layer3_ratio=1.0, seed=3), x)
    std_2, gap_2 = activation_profile(VarianceProbeNet(layer3_ratio=2.0, seed=3), x)
    ratios = [b / a for a, b in zip(std_c, std_2)]
    assert ratios == pytest.approx([1, 1, math.sqrt(2), math.sqrt(2), math.sqrt(2)], rel=1e-5)
    assert gap_c.shape == (16, 512)
    torch.testing.assert_close(gap_2, gap_c * math.sqrt(2), rtol=1e-5, atol=1e-6)
    assert ks_distance(gap_c / gap_c.std(), gap_2 / gap_2.std()) < 1e-3 and ks_distance([0, 1], [2, 3]) == 1.0


@pytest.mark.parametrize('depth', [6, 8])
def test_deep_net_alternates_conv_relu_and_outputs_64x8x8(depth):
    model = DeepConvReLU(depth)
    assert [type(m) for m in model] == [nn.Conv2d, nn.ReLU] * depth
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 64, 8, 8)
    assert DeepConvReLU(6, n_down=0)(torch.randn(1, 3, 8, 8)).shape == (1, 64, 8, 8)


def test_kaiming_init_sets_the_scaled_std_and_zero_bias():
    conv = init_convs(DeepConvReLU(6), 'kaiming', gain=0.5, seed=0)[2]
    assert conv.weight.std().item() == pytest.approx(0.5 * math.sqrt(2 / (64 * 9)), rel=0.03)
    assert conv.bias.abs().max().item() == 0


@pytest.mark.parametrize('seed', [0, 1, 2, 3, 4])
def test_first_layer_gradient_is_smaller_than_last_after_one_backward(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, 32, 32, generator=g)
    stats, frame = backward_probe(DeepConvReLU(seed=seed), x, torch.randn(16, 64, 8, 8, generator=g))
    assert stats.names == [f'conv{i}' for i in range(1, 9)]
    assert stats.grad_norms[0, 0] < stats.grad_norms[0, -1]           # L2 norm of the weight gradient
    assert stats.grad_mean_abs[0, 0] < stats.grad_mean_abs[0, -1]     # per weight
    assert frame.input_rms[0] == pytest.approx(x.square().mean().sqrt().item(), rel=1e-5)


def _stage(out, stage):
    folders = [p for p in (out / 'task1' / stage).iterdir() if not p.name.startswith('.')]
    assert len(folders) == 1
    return folders[0]


def test_variance_script_end_to_end(tmp_path):
    task1_variance.main(['--quick', '--seeds', '1', '--size', '32', '--out', str(tmp_path)])  # in this process
    folder = _stage(tmp_path, 'variance')
    for name in ('gap_histogram.png', 'layer_std.png', 'table.md', 'table.csv', 'summary.json', 'config.json', 'explanation.md'):
        assert (folder / name).stat().st_size > 0, name
    table = pd.read_csv(folder / 'table.csv')
    assert set(table.net) == {'control (1x)', 'layer3 x2'} and {'mean', 'std', 'q05', 'median', 'q95', 'std_layer5'} <= set(table.columns)
    summary = json.loads((folder / 'summary.json').read_text())
    assert summary['findings']['random N(0,1)']['std_ratio'] == pytest.approx(math.sqrt(2), rel=1e-4)
    assert summary['max_ratio_error'] < 1e-6
    assert f"{summary['findings']['random N(0,1)']['std_ratio']:.4f}" in (folder / 'explanation.md').read_text()


def test_gradients_script_end_to_end(tmp_path, capsys):
    task1_gradients.main(['--quick', '--seeds', '2', '--batch', '4', '--out', str(tmp_path)])
    printed = capsys.readouterr().out
    folder = _stage(tmp_path, 'gradients')
    for name in ('grad_per_layer.png', 'signal_per_layer.png', 'init_and_depth.png', 'table.md', 'table.csv',
                 'layers.csv', 'summary.json', 'config.json', 'explanation.md'):
        assert (folder / name).stat().st_size > 0, name
    summary = json.loads((folder / 'summary.json').read_text())
    checked = summary['checked']
    assert summary['passed'] is True and checked['seeds_holding'] == 2 and checked['l2_first'] < checked['l2_last']
    assert len(pd.read_csv(folder / 'layers.csv')) == 8
    assert f"{checked['l2_first']:.3e}" in printed and 'PASS' in printed


def test_gradients_script_exits_1_when_the_check_fails(tmp_path, monkeypatch):
    # Kaiming x0.7 with zero bias: the first layer's mean |grad| exceeds the last one's (see the script's table)
    monkeypatch.setattr(task1_gradients, 'DeepConvReLU', lambda depth=8, init='default', gain=1.0, seed=None:
                        DeepConvReLU(depth, init='kaiming', gain=0.7, seed=seed))
    with pytest.raises(SystemExit) as exc:
        task1_gradients.main(['--out', str(tmp_path), '--quick', '--seeds', '1'])
    assert exc.value.code == 1
    assert json.loads((_stage(tmp_path, 'gradients') / 'summary.json').read_text())['passed'] is False
