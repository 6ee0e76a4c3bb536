"""Stage 4's ingredients on hand-made cases: the weight EMA, flat-cos and ranger, SGD with Nesterov momentum, the random
resized crop, mixing for the first part of training only, multi-view TTA, and the greedy keep/drop rule."""
from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from fastai.callback.core import Callback
from fastai.callback.mixup import CutMix
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import MSELossFlat
from fastai.optimizer import SGD, radam_step
from fastai.torch_core import TensorImage

from fastai_lab.data.augment import BatchRandomResizedCrop, shift_images
from fastai_lab import ablation, train
from fastai_lab.ablation import INGREDIENTS, greedy_ablation, spec_recipe
from fastai_lab.data.loaders import build_data, resolve_data
from fastai_lab.ingredients import (MixUntil, WeightEMA, apply_view, ema_decay, mixing_epochs, multi_view_logits, tta_views,
                             view_words)
from fastai_lab.learner import fit_recipe, make_learner
from fastai_lab.models import build_model
from fastai_lab.machine import seed_everything
from fastai_lab.recipe import FINAL, Recipe, scale_to_profile
from fastai_lab.stats import gain_verdict, pooled_seed_sd
from fastai_lab.train import RunOptions, train_run


def toy_dls(n=32, bs=8, seed=0):
    "A regression set: 4 features -> 1 target, in batches of `bs` (train shuffled, valid not)."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.], [-2.], [.5], [3.]]) + .1 * torch.randn(n, 1, generator=g)
    ds = list(zip(x, y))
    return DataLoaders.from_dsets(ds[:24], ds[24:], bs=bs, device='cpu')


def toy_model(): return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))


class WeightsAfterStep(Callback):
    "Record the model's state (parameters and buffers) after every optimiser step."
    order = 60  # before WeightEMA (70): the same weights either way, the step is done
    def before_fit(self): self.states = []
    def after_step(self): self.states.append({k: v.clone() for k, v in self.learn.model.state_dict().items()})


def test_ema_weights_are_the_ema_formula_after_k_steps():
    torch.manual_seed(0)
    model, decay = toy_model(), 0.9
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema, rec = WeightEMA(decay), WeightsAfterStep()
    learn = Learner(toy_dls(), model, loss_func=MSELossFlat(), opt_func=partial(SGD, mom=0.9), lr=0.05, cbs=[ema, rec])
    with learn.no_bar(), learn.no_logging(): learn.fit(2)  # 3 batches an epoch: k = 6 steps
    assert len(rec.states) == ema.steps == 6
    expected = {k: v.clone() for k, v in start.items()}
    for t, state in enumerate(rec.states, 1):
        d = min(decay, (1 + t) / (10 + t))
        assert d == ema_decay(decay, t)
        for k, v in state.items():
            if v.is_floating_point(): expected[k] = d * expected[k] + (1 - d) * v
            else: expected[k] = v.clone()
    names = list(model.state_dict())
    for name, avg in zip(names, ema.avg):
        assert avg.dtype == expected[name].dtype and torch.allclose(avg, expected[name], atol=1e-6), name
    # BatchNorm's running statistics are averaged too (they moved, so the average differs from the live ones)
    i = names.index('1.running_mean')
    assert not torch.allclose(ema.avg[i], model.state_dict()['1.running_mean'])
    # the live weights are back in the model after the fit, and every validation ran on the averaged ones
    assert all(torch.equal(v, rec.states[-1][k]) for k, v in model.state_dict().items())
    recorded = learn.recorder.values[-1][1]  # the last epoch's valid loss (validate() resets the recorder)
    live_loss = learn.validate()[0]
    model.load_state_dict(dict(zip(names, ema.avg)))
    assert learn.validate()[0] == pytest.approx(recorded, rel=1e-6) and live_loss != pytest.approx(recorded, rel=1e-3)


@pytest.fixture
def tiny_recipe(tiny3):
    "The tiny classifier of the other tests (3 classes, 16 px, channels 4-8-8-16, 1 block each), as a resolved recipe."
    r = replace(scale_to_profile(FINAL, 'quick'), data=str(tiny3), classes='3', size=16, bs=8, epochs=2,
                model=dict(FINAL.model, channels=[4, 8, 8, 16], blocks=[1, 1, 1, 1]))
    return resolve_data(r)


def test_ema_checkpoints_the_averaged_weights_and_resumes_to_the_same_numbers(tiny_recipe, tmp_path, monkeypatch):
    r = replace(tiny_recipe, ema=0.9, mix='cutmix', mix_until=0.5, opt='ranger', schedule='flat_cos', epochs=3,
                augment='rrc', tta=False)
    whole = train_run(r, tmp_path / 'whole', RunOptions(export=False))
    after_epoch = train.Checkpoints.after_epoch
    def interrupting(self):
        after_epoch(self)
        if self.epoch == 0: raise KeyboardInterrupt
    monkeypatch.setattr(train.Checkpoints, 'after_epoch', interrupting)
    with pytest.raises(KeyboardInterrupt): train_run(r, tmp_path / 'cut', RunOptions(export=False))
    assert (tmp_path / 'cut' / 'last.pth').is_file()
    monkeypatch.undo()
    resumed = train_run(r, tmp_path / 'cut', RunOptions(export=False))
    metrics = lambda d: pd.read_csv(d / 'metrics.csv').drop(columns='seconds')
    pd.testing.assert_frame_equal(metrics(tmp_path / 'whole'), metrics(tmp_path / 'cut'))
    assert resumed['best_epoch'] == whole['best_epoch']
    # model.pth holds the averaged weights of the best epoch: evaluated again, they give that epoch's valid numbers
    from fastai_lab.saved import evaluate_saved_run
    again = evaluate_saved_run(tmp_path / 'whole', tmp_path / 'eval', figures=False)
    assert again['valid_acc'] == pytest.approx(whole['best']['valid_accuracy'])
    assert again['valid_loss'] == pytest.approx(whole['best']['valid_loss'], rel=1e-5)


def test_flat_cos_is_flat_then_falls_and_ranger_is_the_optimiser(tiny_recipe):
    r = replace(tiny_recipe, opt='ranger', schedule='flat_cos', lr=1e-2, epochs=4, mix='none', tta=False)
    seed_everything(0)
    data = build_data(r, say=False)
    learn = make_learner(r, build_model(r), data.dls)
    fit_recipe(learn, r)
    lrs = np.array(learn.recorder.lrs)  # one per training batch
    falls = int(np.argmax(lrs < 1e-2 * (1 - 1e-9)))  # the first batch below the flat lr
    assert falls >= 0.75 * len(lrs) and np.allclose(lrs[:falls], 1e-2)
    assert (np.diff(lrs[falls - 1:]) < 0).all() and lrs[-1] < 0.5e-2
    assert type(learn.opt).__name__ == 'Lookahead' and radam_step in learn.opt.opt.cbs  # fastai's ranger
    assert learn.opt.opt.hypers[0]['mom'] == 0.9 and learn.opt.opt.hypers[0]['sqr_mom'] == 0.99
    sgd = make_learner(replace(r, opt='sgd_nesterov'), build_model(r), data.dls)
    sgd.create_opt()
    assert sgd.opt.opt.defaults['nesterov'] and sgd.opt.opt.defaults['momentum'] == 0.9


def test_rrc_keeps_shape_and_dtype_is_seeded_and_leaves_valid_untouched(tiny_recipe):
    x = TensorImage(torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8))
    crop = BatchRandomResizedCrop(min_scale=0.35)
    torch.manual_seed(1); a = crop(x, split_idx=0)
    torch.manual_seed(1); b = crop(x, split_idx=0)
    torch.manual_seed(2); c = crop(x, split_idx=0)
    assert a.shape == x.shape and a.dtype == torch.uint8 and isinstance(a, TensorImage)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)
    f = TensorImage(torch.rand(2, 3, 16, 16))
    assert crop(f, split_idx=0).dtype == torch.float32
    assert crop(x, split_idx=1) is x or torch.equal(crop(x, split_idx=1), x)  # the valid split passes untouched
    # a crop is a zoom into the image, not a flip: a left-to-right ramp stays non-decreasing and in range
    ramp = TensorImage(torch.linspace(0, 1, 16).expand(4, 3, 16, 16).clone())
    out = crop(ramp, split_idx=0)
    assert (out.diff(dim=-1) >= -1e-6).all() and out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    # through the recipe's DataLoaders: the train batches are cropped, the valid ones are those of the flip preset
    # ('rrc' is the crop + flips; fastai's Flip itself resamples the valid images, to within 3e-6, in every preset)
    def batches(aug):
        seed_everything(0)
        dls = build_data(replace(tiny_recipe, augment=aug), say=False).dls
        return dls.valid.one_batch()[0], dls.train.one_batch()[0]
    valid_rrc, train_rrc = batches('rrc')
    valid_flip, train_flip = batches('flip')
    assert torch.equal(valid_rrc, valid_flip) and train_rrc.shape == train_flip.shape
    assert not torch.equal(train_rrc, train_flip)


class LossFuncProbe(Callback):
    "Record, per training epoch, whether the mixing callback's loss was in use (it is while it mixes)."
    def before_fit(self): self.mixed = []
    def after_batch(self):
        if self.training and self.iter == 0:
            self.mixed.append(any(getattr(self.learn.loss_func, '__self__', None) is cb
                                  for cb in self.learn.cbs if isinstance(cb, CutMix)))


def test_mix_until_switches_mixing_off_at_the_right_epoch(tiny_recipe):
    assert mixing_epochs(0.8, 10) == list(range(8)) and mixing_epochs(0.8, 35) == list(range(28))
    assert mixing_epochs(0.5, 5) == [0, 1] and mixing_epochs(1.0, 3) == [0, 1, 2]
    r = replace(tiny_recipe, mix='cutmix', mix_until=0.5, epochs=4, tta=False)
    seed_everything(0)
    data = build_data(r, say=False)
    learn = make_learner(r, build_model(r), data.dls)
    assert any(isinstance(cb, MixUntil) for cb in learn.cbs)
    probe = LossFuncProbe()
    fit_recipe(learn, r, cbs=[probe])
    assert probe.mixed == [True, True, False, False]
    with pytest.raises(ValueError, match='--mix-until'): replace(r, mix='none')


class Recording(nn.Module):
    "A toy classifier (a linear map of the pixels) that counts the images it sees."
    def __init__(self):
        super().__init__()
        self.lin, self.seen = nn.Linear(3 * 16 * 16, 3), 0
    def forward(self, x):
        self.seen += x.shape[0]
        return self.lin(x.flatten(1))


@pytest.mark.parametrize('n', [2, 4, 6])
def test_tta_averages_the_stated_number_of_views(tiny_recipe, n):
    r = replace(tiny_recipe, tta=True, tta_views=n)
    data = build_data(r, say=False)
    torch.manual_seed(0)
    model = Recording()
    learn = make_learner(r, model, data.dls)
    dl = data.dls.valid
    mean, plain, targets = multi_view_logits(learn, dl, n)
    assert model.seen == n * len(dl.dataset)  # every view of every image, once
    x = torch.cat([b[0] for b in dl])
    with torch.no_grad():
        views = [model(apply_view(x, v)) for v in tta_views(n)]
    assert torch.allclose(mean, torch.stack(views).mean(0), atol=1e-5)
    assert torch.allclose(plain, views[0], atol=1e-6) and len(targets) == len(x)
    assert tta_views(n)[:2] == [(0, 0, False), (0, 0, True)]
    assert view_words(6) == '6 views (the image, its flip, 2 shifted copies and their flips; logits averaged)'
    # the views: a flip mirrors, a shift moves the pixels by 1/32 of the width (at least 1 px), reflected at the borders
    assert torch.equal(apply_view(x, (0, 0, True)), x.flip(-1))
    assert torch.equal(apply_view(x, (1, 1, False)), shift_images(x, 1, 1))
    assert torch.equal(shift_images(x, 1, 0)[..., :-1, :], x[..., 1:, :])


def test_greedy_ablation_keeps_and_drops_rows_as_the_rule_says():
    """Fake rows (2 seeds, 1000 valid images): a row is kept when its gain over the row it is tried on exceeds the
    larger of the Wilson half-width (about 2.8 points here) and the pooled seed interval."""
    accs = {'spec': (.60, .61), 'one_cycle': (.72, .73), 'smoothing': (.735, .74), 'padcrop': (.80, .79),
            'mix': (.78, .78), 'flat_cos': (.83, .84), 'ranger': (.70, .71), 'sgd_nesterov': (.80, .81),
            'rrc': (.845, .855), 'mix_until': (.90, .89), 'ema': (.905, .905)}
    keep = {'one_cycle', 'padcrop', 'flat_cos', 'mix_until'}
    trained = {}
    def fake_train(name, recipe):
        trained[name] = recipe
        return [dict(best=dict(valid_accuracy=a, train_accuracy=a + .1),
                     final=dict(valid_accuracy=a, train_accuracy=a + .1, valid_loss=1.), min_valid_loss=1.,
                     best_epoch=3, params=2_800_000, wall_seconds=1., n_valid=1000, test_acc=a - .02,
                     test_acc_lo=a - .05, test_acc_hi=a + .01, n=500) for a in accs[name]]
    base = Recipe(arch='resnet', model=dict(channels=[32, 64, 128, 256], blocks=[2, 2, 2, 2], act='relu', stem='3x3'))
    recipe = replace(FINAL, model=base.model)
    rows, runs, best, best_recipe = greedy_ablation(recipe, fake_train, say=lambda *_: None)
    by = {r['name']: r for r in rows}
    assert [r['name'] for r in rows] == ['spec'] + [name for name, *_ in INGREDIENTS]
    assert {n for n, r in by.items() if r['kept'] == 'yes'} == keep and best == 'mix_until'
    # each row was tried on the best row so far, and later rows are built without what was not kept
    assert [by[n]['on'] for n in ('one_cycle', 'smoothing', 'padcrop', 'mix', 'flat_cos', 'ranger', 'rrc', 'ema')] == \
           ['spec', 'one_cycle', 'one_cycle', 'padcrop', 'padcrop', 'flat_cos', 'flat_cos', 'mix_until']
    assert trained['padcrop'].label_smoothing == 0 and trained['padcrop'].augment == 'padcrop'
    assert trained['mix_until'].mix == 'cutmix' and trained['mix_until'].augment == 'padcrop'  # mix was not kept
    assert best_recipe == trained['mix_until'] and best_recipe.schedule == 'flat_cos'
    assert trained['spec'] == spec_recipe(recipe) and trained['spec'].opt == 'adam'
    # the verdicts are the rule's numbers: noise = max(Wilson, pooled seed interval) at the time of the row
    for name in ('smoothing', 'rrc', 'ema'):
        assert by[name]['kept'] == 'no' and 'not kept' in by[name]['why'] and f"build on {by[name]['on']}" in by[name]['why']
    groups = [accs[n] for n in ('spec', 'one_cycle', 'smoothing', 'padcrop', 'mix', 'flat_cos', 'ranger',
                                'sgd_nesterov', 'rrc')]
    expected = gain_verdict(list(accs['rrc']), list(accs['flat_cos']), 1000, pooled_seed_sd(groups))
    assert by['rrc']['noise'] == pytest.approx(expected['noise']) and by['rrc']['valid_gain'] == pytest.approx(.015)
    assert by['one_cycle']['valid_gain'] == pytest.approx(.12) and by['ranger']['why'].endswith('build on flat_cos')


def test_gain_verdict_rule():
    # one seed: the seed noise is unknown and the Wilson half-width alone decides (2.8 points at 75% on 1000 images)
    one = gain_verdict([.79], [.75], 1000)
    assert one['kept'] and one['seed_noise'] is None and 'one seed' in one['why']
    assert not gain_verdict([.77], [.75], 1000)['kept']
    # two seeds, the seed noise pooled over rows: t(df) * s * sqrt(1/2 + 1/2)
    sd, df = pooled_seed_sd([[.70, .72], [.74, .74], [.60, .61]])
    assert df == 3 and sd == pytest.approx(np.sqrt((2 * .01 ** 2 + 2 * .005 ** 2) / 3))
    v = gain_verdict([.80, .82], [.74, .74], 1000, (sd, df))
    assert v['seed_noise'] == pytest.approx(3.182 * sd) and v['noise'] == max(v['wilson'], v['seed_noise'])
    assert pooled_seed_sd([[.7], [.8]]) == (None, 0)


def test_the_stage_cost_is_runs_times_epochs_times_images():
    text, images = ablation.stage_cost(11, 2, 35, 4000, 1000)
    assert images == 12 * 2 * 35 * 4000 and '24 run(s) x 35 epochs x 4,000 train images' in text
    assert ablation.stage_cost(0, 1, 2, 120, 30, refit=True)[1] == 2 * 120 + 2 * 150
