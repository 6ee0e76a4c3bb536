"ResNet family (T2.2-T2.4): shapes, parameter counts, timm parity, budget, activations, splitter."
import pytest
import torch
import torch.nn as nn
from fastai.data.core import DataLoaders
from torch.utils.data import TensorDataset

from fastai_lab.arch.layers import BudgetError, check_budget, count_params, make_activation, max_channels
from fastai_lab.arch.resnet import BasicBlock, ResNet, resnet_splitter
from dataclasses import replace

from fastai_lab.recipe import SPEC
from fastai_lab.comparisons import activation_variants, blocks_variants
from fastai_lab.learner import make_learner

# Exact counts of the stage configurations (10 classes, 3x3 stem).
STAGE_PARAMS = {
    'baseline / 3.1-A / 3.2-B (4 stages)': ((32, 64, 128, 256), (2, 2, 2, 2), 2_797_610),
    '3.1-B': ((64, 128, 256), (2, 2, 2), 2_777_674),
    '3.2-A (4 stages)': ((32, 64, 128, 256), (1, 1, 1, 1), 1_228_970),
    '3.2-C (4 stages)': ((32, 64, 128, 256), (3, 3, 3, 3), 4_366_250),
    '3.2-A (3 stages)': ((64, 128, 256), (1, 1, 1), 1_227_594),
    '3.2-C (3 stages)': ((64, 128, 256), (3, 3, 3), 4_327_754),
}


@pytest.mark.parametrize('stride,in_ch,out_ch', [(1, 16, 16), (2, 16, 32), (1, 16, 32)])
def test_basic_block_shapes_and_skip(stride, in_ch, out_ch):
    block = BasicBlock(in_ch, out_ch, stride)
    assert block(torch.randn(2, in_ch, 16, 16)).shape == (2, out_ch, 16 // stride, 16 // stride)
    # the 1x1 conv + BN skip exists exactly when the shape changes
    assert isinstance(block.downsample, nn.Identity) == (stride == 1 and in_ch == out_ch)
    if not isinstance(block.downsample, nn.Identity):
        conv, bn = block.downsample
        assert conv.kernel_size == (1, 1) and conv.stride == (stride, stride) and isinstance(bn, nn.BatchNorm2d)


@pytest.mark.parametrize('name', list(STAGE_PARAMS))
def test_stage_configurations(name):
    channels, blocks, expected = STAGE_PARAMS[name]
    model = ResNet(channels, blocks)
    assert model.n_params == count_params(model) == expected
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    feats = model.features(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == model.feature_channels
    assert [64 // f.shape[-1] for f in feats] == model.feature_reductions


def test_stage_variant_builders_follow_the_base():
    base = replace(SPEC, model=dict(SPEC.model, channels=[64, 128, 256], blocks=[2, 2, 2]))
    assert [v.model['blocks'] for v in blocks_variants(base).values()] == [[1, 1, 1], [2, 2, 2], [3, 3, 3]]
    assert [v.model['act'] for v in activation_variants(base).values()] == ['relu', 'leakyrelu', 'elu', 'gelu']
    assert all(v.model['channels'] == [64, 128, 256] and v.lr == SPEC.lr for v in activation_variants(base).values())


def test_timm_resnet18_parity():
    timm = pytest.importorskip('timm')
    ours = ResNet((64, 128, 256, 512), (2, 2, 2, 2), stem='7x7', max_params=None)
    theirs = timm.create_model('resnet18', num_classes=10)
    assert count_params(ours) == count_params(theirs) == 11_181_642
    # same tensor shapes layer by layer, not only the same total
    assert sorted(p.shape for p in ours.parameters()) == sorted(p.shape for p in theirs.parameters())


def test_stems_and_reductions():
    x = torch.randn(1, 3, 128, 128)
    for stem, first in (('3x3', 128), ('3x3s2', 64), ('7x7', 32)):
        model = ResNet(stem=stem)
        assert model.features(x)[0].shape[-1] == first
        assert model.feature_reductions[0] == 128 // first


def test_budget_errors_are_clear():
    with pytest.raises(BudgetError, match='parameters; the budget is 5,000,000'):
        ResNet((64, 128, 256, 512), (2, 2, 2, 2))
    with pytest.raises(BudgetError, match='1024 channels; the limit is 512'):
        check_budget(nn.Conv2d(3, 1024, 1), max_params=10**9)
    assert max_channels(ResNet((16, 32, 64), (1, 1, 1))) == 64
    with pytest.raises(ValueError, match='blocks=.*3 positive counts'):
        ResNet((16, 32, 64), (1, 1))
    with pytest.raises(ValueError, match='stem='):
        ResNet(stem='5x5')


def test_activation_factory():
    assert make_activation('relu').inplace and make_activation('LeakyReLU').inplace and make_activation('elu').inplace
    gelu = make_activation('gelu')
    assert isinstance(gelu, nn.GELU) and not hasattr(gelu, 'inplace')
    x = torch.linspace(-2, 2, 9)
    assert torch.allclose(gelu(x), nn.functional.gelu(x))
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        make_activation('swishy')
    model = ResNet((8, 16, 32), (1, 1, 1), act='gelu')
    assert sum(isinstance(m, nn.GELU) for m in model.modules()) == 1 + 2 * 3


def test_splitter_makes_freeze_freeze():
    model = ResNet((8, 16, 32), (1, 1, 1))
    groups = resnet_splitter(model)
    assert len(groups) == 5 and sum(len(g) for g in groups) == len(list(model.parameters()))
    ds = TensorDataset(torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,)))
    learn = make_learner(replace(SPEC, freeze=True), model, DataLoaders.from_dsets(ds, ds, bs=4))  # train_bn=False
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.head.parameters()}
    before = [p.detach().clone() for p in model.stem.parameters()]
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    assert all(torch.equal(a, b) for a, b in zip(before, model.stem.parameters()))
    learn.unfreeze()
    assert all(p.requires_grad for p in model.parameters())
