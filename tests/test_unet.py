"U-Nets: shapes, budgets, live skips, splitters, frozen/fine-tuned encoder in fastai, classifier checkpoints."
import re

import pytest
import torch
import torch.nn as nn
import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.torch_core import TensorImage, TensorMask, TensorCategory

from fastai_lab.arch.layers import BudgetError, count_params
from fastai_lab.arch.resnet import ResNet, resnet_splitter
from fastai_lab.arch.unet import UNet, BackboneUNet, unet_splitter, backbone_unet_splitter
from fastai_lab.models import load_encoder_from_classifier
from fastai_lab.losses import BCEDiceLoss

CLASSIFIER = dict(channels=(32, 64, 128, 256), blocks=(1, 1, 1, 1), stem='3x3s2', n_classes=3)


def dls_of(x, y, bs=4):
    ds = list(zip(x, y))
    return DataLoaders(DataLoader(ds, bs=bs), DataLoader(ds, bs=bs))


def seg_dls(n=4, size=32):
    torch.manual_seed(0)
    return dls_of(TensorImage(torch.randn(n, 3, size, size)), TensorMask((torch.rand(n, size, size) > 0.5).long()))


def backbone_learner(tmp_path):
    "Variant A/B set-up: `train_bn=False`, so that `freeze()` freezes the encoder's BN layers too."
    torch.manual_seed(0)
    return Learner(seg_dls(), BackboneUNet(ResNet(**CLASSIFIER)), loss_func=BCEDiceLoss(), lr=1e-2,
                   splitter=backbone_unet_splitter, train_bn=False, path=tmp_path)


def output_without_skip(model, x, block):
    "The output with the skip that decoder `block` receives replaced by zeros."
    handle = block.register_forward_pre_hook(lambda m, args: (args[0], torch.zeros_like(args[1])))
    try: return model(x)
    finally: handle.remove()


def assert_every_skip_is_used(model, x):
    # Train mode: BN on batch statistics keeps an untrained net's signal at scale 1 (its default running
    # statistics shrink it at every level in eval mode), so a live skip moves the output by a visible amount.
    model.train()
    with torch.no_grad():
        out = model(x)
        for j, block in enumerate(model.decoder):
            change = (output_without_skip(model, x, block) - out).abs().max().item()
            assert change > 0.05, f"decoder[{j}] ignores its skip: the output moved by {change}"


def test_unet_shape_and_budget():
    model = UNet()
    print(f"UNet parameters: {model.n_params:,}")
    assert model.n_params == count_params(model) == 2_354_353 <= 2_750_000
    assert model.widths == [32, 64, 128, 144, 144]
    assert (len(model.encoder), len(model.decoder)) == (5, 4)  # 4 down, 4 up
    with torch.no_grad(): assert model.eval()(torch.randn(2, 3, 128, 128)).shape == (2, 1, 128, 128)


@pytest.mark.parametrize('kwargs, n_params', [(dict(down='stride'), 2_354_353), (dict(up='bilinear'), 2_206_129),
                                              (dict(act='gelu', width_cap=128), 2_075_105)])
def test_unet_variants(kwargs, n_params):
    model = UNet(**kwargs).eval()
    assert model.n_params == n_params
    with torch.no_grad(): assert model(torch.randn(1, 3, 64, 48)).shape == (1, 1, 64, 48)


def test_unet_budget_and_argument_errors():
    with pytest.raises(BudgetError, match='5,140,577 parameters; the budget is 2,750,000'): UNet(width_cap=256)
    with pytest.raises(ValueError, match='down='): UNet(down='avgpool')
    with pytest.raises(ValueError, match='up='): UNet(up='nearest')


def test_unet_skips_are_connected():
    model = UNet()
    x = torch.randn(1, 3, 32, 32)
    levels, skips = [], []
    hooks = [m.register_forward_hook(lambda m, args, out: levels.append(out)) for m in model.encoder]
    hooks += [m.register_forward_pre_hook(lambda m, args: skips.append(args[1])) for m in model.decoder]
    with torch.no_grad(): model(x)
    for h in hooks: h.remove()
    # decoder[j] gets the output of encoder[3 - j], the level of the same resolution.
    assert all(skip is level for skip, level in zip(skips, levels[3::-1]))
    assert_every_skip_is_used(model, x)


@pytest.mark.parametrize('stem, size', [('3x3s2', 128), ('3x3', 64), ('7x7', 64)])
def test_backbone_unet_shape_and_skips(stem, size):
    model = BackboneUNet(ResNet(**{**CLASSIFIER, 'stem': stem}))
    with torch.no_grad(): assert model.eval()(torch.randn(2, 3, size, size)).shape == (2, 1, size, size)
    assert_every_skip_is_used(model, torch.randn(1, 3, 64, 64))


def test_backbone_unet_keeps_only_stem_and_stages():
    clf = ResNet(**{**CLASSIFIER, 'blocks': (2, 2, 2, 2)})  # a T3.1-sized classifier: 2,797,610 parameters
    model = BackboneUNet(clf)
    assert list(model.encoder) == ['stem', 'layer1', 'layer2', 'layer3', 'layer4']
    assert model.encoder['layer4'] is clf.layer4 and not any(m is clf.head for m in model.modules())
    assert model.decoder_channels == [32, 64, 128, 144]
    decoder_params = model.n_params - count_params(model.encoder)
    print(f"BackboneUNet parameters: {model.n_params:,} (decoder {decoder_params:,})")
    assert (model.n_params, decoder_params) == (4_229_969, 1_434_929)
    with pytest.raises(BudgetError, match='the budget is 3,795,040'): BackboneUNet(clf, max_decoder_params=1_000_000)


@pytest.mark.parametrize('model', [UNet(), BackboneUNet(ResNet(**CLASSIFIER))], ids=['UNet', 'BackboneUNet'])
def test_splitter_covers_every_parameter_once(model):
    groups = unet_splitter(model)
    ids = [id(p) for g in groups for p in g]
    assert len(groups) == 2 and sorted(ids) == sorted(id(p) for p in model.parameters())
    assert [id(p) for p in groups[0]] == [id(p) for p in model.encoder.parameters()]


def test_frozen_encoder_stays_in_eval_mode():
    model = BackboneUNet(ResNet(**CLASSIFIER))
    model.encoder.requires_grad_(False)
    model.train()
    assert model.encoder_frozen and not model.encoder.training and model.decoder.training
    model.encoder.requires_grad_(True)
    assert model.train().encoder.training


def test_variant_a_frozen_encoder_does_not_change(tmp_path):
    learn = backbone_learner(tmp_path)
    learn.freeze()
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with learn.no_logging(): learn.fit(1)
    after = learn.model.state_dict()
    encoder = [k for k in before if k.startswith('encoder.')]
    assert any(k.endswith('running_mean') for k in encoder) and any(k.endswith('bn1.weight') for k in encoder)
    assert [k for k in encoder if not torch.equal(before[k], after[k])] == []
    trained = [k for k, _ in learn.model.named_parameters() if not k.startswith('encoder.')]
    assert [k for k in trained if torch.equal(before[k], after[k])] == []


class HyperRecorder(Callback):
    "Each batch's learning rate of every parameter group."
    def before_fit(self): self.lrs = []
    def after_batch(self):
        if self.training: self.lrs.append([h['lr'] for h in self.opt.hypers])


def test_variant_b_discriminative_learning_rates(tmp_path):
    learn = backbone_learner(tmp_path)
    learn.freeze()
    learn.unfreeze()
    before = {k: v.clone() for k, v in learn.model.encoder.state_dict().items()}
    recorder = HyperRecorder()
    with learn.no_logging(): learn.fit_one_cycle(1, lr_max=slice(1e-5, 1e-3), cbs=recorder)
    # One batch: the one-cycle schedule is at its start, lr_max / div (25), in each group.
    assert recorder.lrs == [pytest.approx([1e-5 / 25, 1e-3 / 25], rel=1e-9)]
    assert [id(p) for p in learn.opt.param_lists[0]] == [id(p) for p in learn.model.encoder.parameters()]
    after = learn.model.encoder.state_dict()
    # The encoder trains: its stem, every block's last BN (zero-initialised, so the first to get gradients)
    # and its running statistics all move.
    moved = [k for k in before if k.endswith(('stem.0.weight', 'bn2.weight', 'running_mean'))]
    assert len(moved) == 17 and all(not torch.equal(before[k], after[k]) for k in moved)


@pytest.mark.parametrize('with_opt', [True, False])
def test_classifier_checkpoint_round_trip(tmp_path, with_opt):
    torch.manual_seed(0)
    clf = ResNet(**CLASSIFIER)
    for m in clf.modules():  # non-default BN buffers, so that loading them is checked too
        if isinstance(m, nn.BatchNorm2d): m.running_mean.normal_(), m.running_var.uniform_(0.5, 2)
    learn = Learner(dls_of(TensorImage(torch.randn(4, 3, 32, 32)), TensorCategory(torch.arange(4) % 3)), clf,
                    loss_func=nn.CrossEntropyLoss(), splitter=resnet_splitter, path=tmp_path)
    # Discriminative learning rates leave numpy floats in the optimizer state that `learn.save` stores.
    with learn.no_logging(): learn.fit_one_cycle(1, lr_max=slice(1e-4, 1e-3))
    file = learn.save('classifier', with_opt=with_opt)

    unet = load_encoder_from_classifier(BackboneUNet(ResNet(**CLASSIFIER)), file)
    expected = clf.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in unet.encoder.state_dict().items())
    resnet = load_encoder_from_classifier(ResNet(**CLASSIFIER), file)
    assert all(torch.equal(v, expected[k]) for k, v in resnet.state_dict().items())


def test_checkpoint_errors_name_the_file(tmp_path):
    missing = tmp_path / 'nope.pth'
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_encoder_from_classifier(BackboneUNet(ResNet(**CLASSIFIER)), missing)
    other = tmp_path / 'other.pth'
    torch.save(ResNet(channels=(64, 128, 256), blocks=(1, 1, 1), stem='3x3s2').state_dict(), other)
    with pytest.raises(ValueError, match=re.escape(str(other)) + '.*missing keys: layer4.*shape mismatches: stem'):
        load_encoder_from_classifier(BackboneUNet(ResNet(**CLASSIFIER)), other)
