"""--tensorboard: a tiny run's event file holds metrics.csv's values per epoch and the statistics' histograms, and the
run's numbers are those of a run without it; model.txt holds fastai's summary table."""
from dataclasses import replace

import pandas as pd
import pytest

from fastai_lab.data.loaders import resolve_data
from fastai_lab.recipe import SPEC, scale_to_profile
from fastai_lab.train import RunOptions, train_run


def _recipe(tiny3):
    return resolve_data(replace(scale_to_profile(SPEC, 'quick'), data=str(tiny3), classes='3', size=16, bs=8, epochs=2,
                                model=dict(SPEC.model, channels=[4, 8, 16], blocks=[1, 1, 1]), seed=3))


def test_tensorboard_events_hold_the_epochs_and_change_no_number(tiny3, tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    recipe = _recipe(tiny3)
    train_run(recipe, tmp_path / 'plain', RunOptions(export=False, figures=False))
    train_run(recipe, tmp_path / 'tb', RunOptions(export=False, figures=False, tensorboard=True))
    plain, tb = (pd.read_csv(tmp_path / r / 'metrics.csv').drop(columns='seconds') for r in ('plain', 'tb'))
    pd.testing.assert_frame_equal(plain, tb)  # statistics hooks and the writer only read
    assert not list((tmp_path / 'plain').glob('events.out.tfevents.*'))
    events = list((tmp_path / 'tb').glob('events.out.tfevents.*'))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]), size_guidance={'histograms': 0, 'scalars': 0}).Reload()
    tags = acc.Tags()
    for col in ('train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy', 'seconds'):
        assert col in tags['scalars'], col
        logged = acc.Scalars(col)
        assert [e.step for e in logged] == [0, 1]
        if col != 'seconds':  # float32 in the event file
            assert [e.value for e in logged] == pytest.approx(list(tb[col]), rel=1e-6)
    for h in ('GradientStats/grad_norm', 'GradientStats/weight_norm', 'ActivationStatsLite/mean',
              'ActivationStatsLite/dead'):
        assert h in tags['histograms'], h
        assert [e.step for e in acc.Histograms(h)] == [0, 1]
        assert acc.Histograms(h)[0].histogram_value.num > 0
    text = (tmp_path / 'tb' / 'model.txt').read_text()
    assert 'Output Shape' in text and 'Trainable' in text and 'Total trainable params' in text
    assert (tmp_path / 'plain' / 'model.txt').read_text() == text


def test_missing_tensorboard_is_one_line(monkeypatch):
    import builtins
    from fastai_lab.tensorboard import require_tensorboard
    real = builtins.__import__
    def fake(name, *a, **kw):
        if name == 'tensorboard' or name.startswith('torch.utils.tensorboard'): raise ImportError(name)
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, '__import__', fake)
    with pytest.raises(ImportError, match=r'^--tensorboard: the tensorboard package is not installed \(pip install'):
        require_tensorboard()


def test_tensorboard_flag_writes_events_in_every_run_folder(tiny_cli, tmp_path):
    pytest.importorskip('tensorboard')
    from scripts import stage2_baseline
    stage2_baseline.main(tiny_cli('--tensorboard', '--seeds', '2', epochs=1))
    runs = sorted(p.parent.name for p in (tmp_path / 'out' / 'stage2_baseline').glob('*/*/events.out.tfevents.*'))
    assert runs == ['baseline-seed0', 'baseline-seed1']  # one TensorBoard run per run folder: side by side


def test_a_run_resumed_with_tensorboard_gives_the_same_numbers(tiny3, tmp_path, monkeypatch):
    "--tensorboard is how, not what: added on --resume (with EMA state in last.pth) it changes no number."
    pytest.importorskip('tensorboard')
    from fastai_lab import train
    r = replace(_recipe(tiny3), ema=0.9, epochs=3)
    train_run(r, tmp_path / 'whole', RunOptions(export=False, figures=False))
    after_epoch = train.Checkpoints.after_epoch
    def interrupting(self):
        after_epoch(self)
        if self.epoch == 0: raise KeyboardInterrupt
    monkeypatch.setattr(train.Checkpoints, 'after_epoch', interrupting)
    with pytest.raises(KeyboardInterrupt): train_run(r, tmp_path / 'cut', RunOptions(export=False, figures=False))
    monkeypatch.undo()
    train_run(r, tmp_path / 'cut', RunOptions(export=False, figures=False, tensorboard=True))
    metrics = lambda d: pd.read_csv(d / 'metrics.csv').drop(columns='seconds')
    pd.testing.assert_frame_equal(metrics(tmp_path / 'whole'), metrics(tmp_path / 'cut'))
    assert list((tmp_path / 'cut').glob('events.out.tfevents.*'))
