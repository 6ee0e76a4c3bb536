"Cost of a model (MACs, parameters, timings) and the tie rule that weighs it against accuracy."
from dataclasses import replace

import pandas as pd
import pytest
import torch
import torch.nn as nn
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.torch_core import TensorImage, TensorMask

from fastai_lab.arch.resnet import ResNet
from fastai_lab.arch.unet import BackboneUNet
from fastai_lab.cost import count_macs, cost_columns, cost_note, measure_model, run_cost
from fastai_lab.learner import make_learner
from fastai_lab.recipe import BACKBONE_UNET, SPEC
from fastai_lab.stats import compare, wilson


def test_macs_of_a_hand_made_net_are_exact():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    conv = 8 * 8 * 8 * 3 * 3 * 3  # output pixels x out channels x (in channels x 3 x 3)
    linear = 8 * 8 * 8 * 10
    assert count_macs(net, torch.zeros(2, 3, 8, 8)) == conv + linear == 18_944  # per image, whatever the batch


def _resnet_macs_by_hand(channels, blocks, size, n_classes):
    "Convs and the linear layer of the lab's ResNet (3x3 stem, stride-2 first block of every later stage)."
    conv = lambda cin, cout, k, hw: hw * hw * cout * cin * k * k
    total, hw, cin = conv(3, channels[0], 3, size), size, channels[0]
    for i, (c, n) in enumerate(zip(channels, blocks)):
        for j in range(n):
            if i > 0 and j == 0: hw //= 2
            total += conv(cin, c, 3, hw) + conv(c, c, 3, hw) + (conv(cin, c, 1, hw) if cin != c else 0)
            cin = c
    return total + cin * n_classes


def test_baseline_resnet_macs_equal_its_convs_by_hand():
    m = SPEC.model
    model = ResNet(m['channels'], m['blocks'], n_classes=10)
    # the counter leaves BatchNorm, ReLU, the residual adds and the pooling out: convs + linear is all it counts
    expected = _resnet_macs_by_hand(m['channels'], m['blocks'], 64, 10)
    assert count_macs(model, torch.zeros(1, 3, 64, 64)) == expected
    assert 0.5e9 < expected < 0.6e9  # 0.56 GMACs per 64 px image


def _seg_dls(n=4, size=32):
    ds = list(zip(TensorImage(torch.zeros(n, 3, size, size)), TensorMask(torch.zeros(n, size, size).long())))
    return DataLoaders(DataLoader(ds, bs=2), DataLoader(ds, bs=2), device='cpu')


def test_trainable_params_of_the_frozen_unet_are_fewer():
    recipe = replace(BACKBONE_UNET, size=32, profile='quick', init=None)
    enc = dict(channels=(8, 16, 32, 64), blocks=(1, 1, 1, 1), stem='3x3s2', n_classes=3)
    cost = {}
    for name, freeze in (('A', True), ('B', False)):
        learn = make_learner(replace(recipe, freeze=freeze), BackboneUNet(ResNet(**enc)), _seg_dls())
        cost[name] = measure_model(learn.model, replace(recipe, freeze=freeze), 2, torch.device('cpu'), passes=1)
    a, b = cost['A'], cost['B']
    assert a['trainable_params'] < b['trainable_params'] == b['params'] == a['params']
    assert a['macs'] == b['macs'] > 0  # freezing changes what trains, not what a forward pass costs


def test_timings_are_positive_on_the_named_device_and_draw_no_rng(tmp_path):
    model = ResNet((8, 16, 32), (1, 1, 1), n_classes=3)
    recipe = replace(SPEC, size=16, profile='quick', model=dict(SPEC.model, channels=[8, 16, 32], blocks=[1, 1, 1]))
    state = torch.get_rng_state()
    model.train()
    cost = measure_model(model, recipe, 4, torch.device('cpu'), key=str(tmp_path))
    assert torch.equal(torch.get_rng_state(), state) and model.training  # the run's numbers are not touched
    assert cost['infer_images_per_s'] > 0 and cost['latency_ms'] > 0 and cost['device'].startswith('cpu (')
    assert 'torch thread' in cost['device'] and cost['infer_batch'] == 4 and cost['precision'] == 'fp32'
    assert measure_model(model, recipe, 4, torch.device('cpu'), key=str(tmp_path)) == cost  # once per stage
    run = run_cost(cost, pd.DataFrame(dict(seconds=[2.0, 1.0, 1.0])), 64, torch.device('cpu'))
    assert run['train_images_per_s'] == 64.0 and run['peak_mem_mib'] is None and 'CPU' in run['peak_mem_note']
    row = cost_columns([dict(cost=run), dict(cost=dict(run, train_images_per_s=32.0))])
    assert row['train_img_s'] == 48.0 and row['macs_G'] == cost['gmacs'] and row['cost_device'] == cost['device']
    assert cost['device'] in cost_note([row]) and 'blank here' in cost_note([row])
    assert cost_columns([dict(best={})]) == {}  # a run saved before cost was measured: no cost columns


def _row(name, acc, macs, ci=None, n_seeds=1, n_eval=None, params=2.8):
    return dict(name=name, valid_acc=acc, valid_acc_ci=ci, n_seeds=n_seeds, n_eval=n_eval, macs_G=macs,
                params_M=params)


def test_an_exact_tie_keeps_the_cheaper_and_claims_no_lead():
    # one seed, both 0.6667 on 6 images: no 'larger than the Wilson half-width', no 'unproven lead'
    v = compare([_row('B', 4 / 6, 1.68, n_eval=6), _row('A', 4 / 6, 0.56, n_eval=6)], 'valid_acc')
    assert v['best'] == 'A' and v['decision'] == 'tie' and v['significant'] is False
    assert v['text'] == ("B and A both reach valid_acc 0.6667. B ties A within noise at 3.0x the MACs: A kept "
                         "(the cheaper).")
    assert 'larger than' not in v['text'] and 'unproven' not in v['text']


def test_a_lead_within_noise_keeps_the_cheaper_and_says_so():
    v = compare([_row('A', .65, .56, n_eval=60), _row('B', .70, 1.74, n_eval=60)], 'valid_acc')
    assert v['best'] == 'A' and v['leader'] == 'B' and v['decision'] == 'tie'
    assert 'inside the 95% Wilson half-width' in v['text'] and v['text'].endswith(
        'B ties A within noise at 3.1x the MACs: A kept (the cheaper).')
    seeds = compare([_row('A', .65, .56, .08, 3, 10000), _row('B', .70, .56, .06, 3, 10000, params=1.0)], 'valid_acc')
    assert seeds['best'] == 'B' and 'inside the 95% seed interval' in seeds['text']  # same MACs: fewer params wins
    same = compare([_row('A', .70, .56, n_eval=60), _row('B', .69, .56, n_eval=60)], 'valid_acc')
    assert same['best'] == 'A' and same['text'].endswith('A kept (the same cost: first in the ranking).')


def test_a_lead_beyond_noise_keeps_the_better_and_states_its_cost():
    v = compare([_row('A', .60, .56, .005, 2, 10000), _row('B', .624, 1.74, .005, 2, 10000)], 'valid_acc')
    lo, hi = wilson(.624, 10000)
    assert v['text'] == ("Best valid_acc: B with 0.624, ahead of A (0.6) by 0.024. The lead is larger than the 95% seed "
                         f"interval (0.005, 2 seeds) and the 95% Wilson half-width of {(hi - lo) / 2:.3g} on 10000 "
                         "images, so it is likely real. B kept: +2.4 pts for 3.1x MACs.")
    assert v['best'] == 'B' and v['significant'] is True and v['decision'] == 'lead'
    one = compare([_row('A', .80, .56, n_eval=1000), _row('B', .70, 1.68, n_eval=1000)], 'valid_acc')
    assert one['best'] == 'A' and one['decision'] == 'unproven' and one['significant'] is None
    assert 'treat the lead as unproven' in one['text'] and one['text'].endswith(
        'A kept: +10.0 pts at 0.33x the MACs, the cheaper too.')


def test_ties_among_several_rows_keep_the_cheapest():
    rows = [_row('A', .70, 1.0, n_eval=100), _row('B', .69, 0.5, n_eval=100), _row('C', .50, 0.1, n_eval=100)]
    v = compare(rows, 'valid_acc')
    assert v['best'] == 'B' and v['tied'] == ['B'] and 'A ties B within noise at 2.0x the MACs' in v['text']
    unknown = compare([dict(r, macs_G=None) for r in rows], 'valid_acc')
    assert unknown['best'] == 'A' and 'cost unknown' in unknown['text']  # no cost: the ranking decides


def test_pareto_front_keeps_what_nothing_cheaper_beats():
    from fastai_lab.tables import pareto_front
    points = [(1.0, .5), (0.5, .4), (2.0, .45), (3.0, .6), (0.5, .3)]
    assert pareto_front(points) == [(0.5, .4), (1.0, .5), (3.0, .6)]


def test_experiments_table_carries_cost_and_plots_accuracy_against_it(tmp_path):
    from fastai_lab.rows import experiments_table
    from fastai_lab.io import write_json
    for stage, rows in (('stage2_baseline', [('baseline', .3, .56)]), ('stage3_1_channels', [('A', .4, .56), ('B', .45, 1.7)])):
        folder = tmp_path / stage / '20260101-000000'; folder.mkdir(parents=True)
        write_json(folder / 'summary.json', dict(stage=stage, best=rows[0][0], best_recipe=SPEC.to_dict(), profile='quick',
                                                 data_key=SPEC.data_key(), conclusion='', rows=[
            dict(name=n, config='c', params_M=2.8, valid_acc=a, valid_acc_ci=None, n_eval=30, train_acc=a, final_gap=0,
                 best_epoch=1, n_seeds=1, macs_G=m, infer_img_s=10.0, cost_device='cpu (2 cores)') for n, a, m in rows]))
    table = experiments_table(tmp_path, tmp_path)
    assert list(table['macs_G']) == [.56, .56, 1.7] and list(table['infer_img_s']) == [10.0] * 3
    assert (tmp_path / 'accuracy_vs_macs.png').is_file()
    md = (tmp_path / 'experiments.md').read_text()
    assert 'Timings on cpu (2 cores)' in md and 'decided by cost' in md and 'Pareto front' in md


def drawn_cost_plot(points, monkeypatch):
    "(axes, renderer) of `plot_score_vs_cost` of `points` (label, macs_G, score), drawn and not written."
    from fastai_lab import tables
    drawn = []
    monkeypatch.setattr(tables, 'save_figure', lambda fig, path: drawn.append(fig))
    tables.plot_score_vs_cost([dict(label=n, macs_G=m, score=s, half=.1) for n, m, s in points], 'unwritten.png',
                              'valid accuracy', 'title')
    fig, = drawn
    fig.canvas.draw()
    return fig.axes[0], fig.canvas.get_renderer()


@pytest.mark.parametrize('macs, labels', [((0.136, 0.1455), ['0.136', '0.138', '0.14', '0.142', '0.144']),
                                          ((0.015, 0.035, 0.11), ['0.02', '0.03', '0.04', '0.06', '0.1']),
                                          ((0.01, 3.0), ['0.01', '0.1', '1'])])
def test_the_cost_axis_labels_its_ticks_in_plain_numbers_that_do_not_overlap(monkeypatch, macs, labels):
    "Within a decade matplotlib labels every minor tick of a log axis: written as 1.38x10^-1 they ran into each other."
    ax, renderer = drawn_cost_plot([(str(m), m, .5) for m in macs], monkeypatch)
    (lo, hi), ticks = ax.get_xlim(), ax.xaxis.get_major_ticks() + ax.xaxis.get_minor_ticks()
    shown = sorted(((t.label1.get_window_extent(renderer), t.label1.get_text()) for t in ticks
                    if lo <= t.get_loc() <= hi and t.label1.get_text()), key=lambda box_text: box_text[0].x0)
    assert [text for _, text in shown] == labels
    assert all(a.x1 < b.x0 for (a, _), (b, _) in zip(shown, shown[1:]))


@pytest.mark.parametrize('points', [  # the two plots of a quick run_all: task 3.3's and the T2 variants'
    [('baseline U-Net (20261207-032214)', .1454, 0.), ('A: frozen encoder, B: fine-tuned', .1363, .026)],
    [('3.2-A, 3.3-A, 3.3-B, Final', .015, .23), ('3.3-C', .015, .2), ('Baseline, 3.1-A, 3.2-B', .035, .13),
     ('3.2-C', .055, .23), ('3.1-B', .11, .17)]])
def test_the_labels_of_the_costliest_points_stay_inside_the_axes(monkeypatch, points):
    "A point at the right of the cost axis has its label on its left: on its right it ran past the axes' frame."
    ax, renderer = drawn_cost_plot(points, monkeypatch)
    frame, boxes = ax.get_window_extent(renderer), {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
    assert sorted(boxes) == sorted(n for n, _, _ in points)
    assert all(frame.x0 < box.x0 and box.x1 < frame.x1 for box in boxes.values()), boxes
