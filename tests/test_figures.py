"""lab/figures.py: figures drawn beside the training (a forked process) are the figures drawn here, byte for byte;
what follows them waits for them; a figure that cannot be written is named, with its run."""
import gc, hashlib, pickle, threading

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import TransformNode

from fastai_lab import figures
from fastai_lab.figures import FiguresFailed, drawing_beside, save_figure, then
from fastai_lab.stat_plots import plot_layer_profiles
from fastai_lab.tables import plot_curves
from scripts import stage3_1_channels

HISTORY = pd.DataFrame({'epoch': range(4), 'train_loss': [2.1, 1.7, 1.4, 1.3], 'valid_loss': [2.0, 1.8, 1.6, 1.6],
                        'train_accuracy': [.2, .35, .5, .55], 'valid_accuracy': [.25, .3, .4, .42]})


@pytest.fixture
def beside(monkeypatch):
    monkeypatch.setenv('LAB_FIGURES', 'beside')  # conftest draws here


def md5s(folder): return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob('*.png'))}


def draw_some(folder):
    folder.mkdir()
    plot_curves(HISTORY, folder)
    plot_layer_profiles({'std': {'a': [1, 3, 30, 300], 'b': [2, 2, 2, 2]}}, folder / 'profile.png', names=list('wxyz'))


def test_a_figure_drawn_beside_is_the_one_drawn_here(tmp_path, beside):
    draw_some(tmp_path / 'here')
    with drawing_beside():
        draw_some(tmp_path / 'beside')
        assert figures._beside is not None
    assert md5s(tmp_path / 'beside') == md5s(tmp_path / 'here') and len(md5s(tmp_path / 'here')) == 3
    assert not [p for p in (tmp_path / 'beside').iterdir() if p.name.startswith('.')]  # no temporary file left


def parent_keys(blob, setstate, monkeypatch):
    """(key, id of the parent) of every parent of every transform of the figure pickled in `blob`, unpickled with
    `setstate` as `TransformNode.__setstate__`; read while the unpickled figure lives."""
    nodes = []
    def recording(self, state): setstate(self, state); nodes.append(self)
    with monkeypatch.context() as m:
        m.setattr(TransformNode, '__setstate__', recording)
        fig = pickle.loads(blob)
    keys = [(k, id(ref())) for node in nodes for k, ref in node._parents.items() if ref() is not None]
    plt.close(fig)
    return keys


def test_an_unpickled_transform_knows_its_parents_by_their_ids_in_the_drawing_process(monkeypatch):
    fig, ax = plt.subplots()
    ax.plot([1, 2])
    gc.collect(); gc.disable()  # no transform of `fig` is freed meanwhile, so no new one can take its id
    try:
        blob = pickle.dumps(fig)
        ours = parent_keys(blob, figures._unpickle_transform_keyed_by_id, monkeypatch)
        matplotlibs = parent_keys(blob, TransformNode.__setstate__, monkeypatch)
    finally: gc.enable(); plt.close(fig)
    assert len(ours) > 20 and all(k == i for k, i in ours)
    # matplotlib keeps the pickler's ids: a transform made later at one of them would take that parent's place and the
    # parent would miss savefig's dpi change (text 2 px off in 4 of 150 drawing processes). When this fails,
    # matplotlib is fixed.
    assert len(matplotlibs) == len(ours) and not any(k == i for k, i in matplotlibs)
    assert figures._drawing_pool().submit(_unpickles_with_ids).result()  # in the drawing process, not in this one
    assert not _unpickles_with_ids()


def _unpickles_with_ids(): return TransformNode.__setstate__ is figures._unpickle_transform_keyed_by_id


def test_the_drawing_process_draws_with_the_settings_of_the_moment(tmp_path, beside):
    with drawing_beside(): draw_some(tmp_path / 'before')  # the drawing process is forked by now
    with matplotlib.rc_context({'savefig.facecolor': 'lightgrey'}):  # read when the figure is written
        draw_some(tmp_path / 'here')
        with drawing_beside(): draw_some(tmp_path / 'beside')
    assert md5s(tmp_path / 'beside') == md5s(tmp_path / 'here') != md5s(tmp_path / 'before')


def test_what_follows_the_figures_runs_once_they_are_on_disk(tmp_path, beside):
    seen = []
    with drawing_beside():
        path = save_figure(plt.subplots()[0], tmp_path / 'one.png')
        then(lambda: seen.append((path.is_file(), threading.current_thread() is threading.main_thread())), 'run')
        then(lambda: seen.append('nothing new to wait for: at once, here'), 'other')
        assert 'nothing new to wait for: at once, here' in seen
    assert (True, False) in seen  # the figure was on disk; fn ran in the executor's thread, not this one


def test_a_figure_that_cannot_be_written_names_its_file_and_run_and_what_follows_does_not_run(tmp_path, beside):
    ran = []
    with pytest.raises(FiguresFailed) as failed, drawing_beside():
        save_figure(plt.subplots()[0], tmp_path / 'no such folder' / 'loss.png')
        then(lambda: ran.append(1), 'A-seed0')
    assert failed.value.failures[0][0] == 'A-seed0' and not ran
    assert f"{tmp_path / 'no such folder' / 'loss.png'}: not written (No such file or directory)" in str(failed.value)


@pytest.mark.parametrize('env', [dict(LAB_FIGURES='here'), dict(LAB_FIGURES='beside', WORLD_SIZE='2')])
def test_figures_are_drawn_here_when_asked_and_under_torchrun(tmp_path, monkeypatch, env):
    for k, v in env.items(): monkeypatch.setenv(k, v)
    with drawing_beside():
        assert save_figure(plt.subplots()[0], tmp_path / 'a.png').is_file() and figures._beside is None


def test_a_figure_that_does_not_pickle_is_drawn_here_at_once(tmp_path, beside):
    fig, ax = plt.subplots()
    ax.plot(np.arange(3)); ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:.0%}'))  # a lambda
    with drawing_beside(): assert save_figure(fig, tmp_path / 'a.png').is_file()


def test_lab_figures_takes_beside_or_here(monkeypatch):
    monkeypatch.setenv('LAB_FIGURES', 'elsewhere')
    with pytest.raises(ValueError, match="LAB_FIGURES=elsewhere: expected 'beside' or 'here'"):
        with drawing_beside(): pass


def test_a_stage_drawn_beside_writes_the_files_of_one_drawn_here(tiny_cli, tmp_path, monkeypatch):
    for where in ('here', 'beside'):
        monkeypatch.setenv('LAB_FIGURES', where)
        stage3_1_channels.main(tiny_cli('--out', tmp_path / where, epochs=1))
    here, beside = ((tmp_path / w / 'stage3_1_channels').iterdir().__next__() for w in ('here', 'beside'))
    assert md5s(beside) == md5s(here) and len(md5s(here)) >= 6  # curves of both runs and the stage's overlays
    for run in ('A-seed0', 'B-seed0'):
        assert (beside / run / 'summary.json').is_file() and not (beside / run / 'last.pth').exists()
    assert (beside / 'summary.json').is_file()
