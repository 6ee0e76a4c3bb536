"""Several processes training one model (torchrun, gloo on this CPU): the numbers are one process's, padding and all.

Every torchrun here is as small as it can be: generated 16 px data, a ResNet of 4-8-8-16 channels, one epoch."""
import os, socket, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

from fastai_lab.data.synthetic import make_tiny_imagenet_like
from fastai_lab.saved import evaluate_saved_run
from fastai_lab.io import read_json
from fastai_lab.lookup import latest_stage_summary

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ['--quick', '--epochs', '1', '--size', '16', '--classes', '3', '--channels', '4,8,8,16',
              '--blocks', '1,1,1,1']


ENV = dict(os.environ, OMP_NUM_THREADS='1', MPLBACKEND='Agg')


def launch(launcher, script, *argv):
    "The command line of `torchrun <launcher> scripts/<script> <argv>`."
    return [sys.executable, '-m', 'torch.distributed.run', *launcher, str(ROOT / 'scripts' / script), *map(str, argv)]


def torchrun(launcher, script, *argv, timeout=300):
    return subprocess.run(launch(launcher, script, *argv), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=ENV)


@pytest.fixture(scope='module')
def odd_valid(tmp_path_factory):
    "3 classes x 15 train images (9 of the 45 valid: not divisible by 2) + 3 val images, 16 px."
    return make_tiny_imagenet_like(tmp_path_factory.mktemp('odd') / 'tiny', n_classes=3, n_train=15, n_val=3, size=16)


def test_default_ablation_on_two_processes_scores_as_one(odd_valid, tmp_path):
    "The greedy ablation with TTA under DDP: valid numbers without the padded repeats, equal to one process's."
    out = tmp_path / 'out'
    res = torchrun(['--nproc_per_node', '2'], 'stage4_final.py', '--data', odd_valid, '--out', out, '--bs', '8',
                   *TINY_MODEL)
    assert res.returncode == 0, res.stderr[-3000:]
    stage = latest_stage_summary(out, 'stage4_final')
    run = Path(stage['path']) / 'final-seed0'
    summary = read_json(run / 'summary.json')
    assert summary['n_valid'] == 9
    rows = {r['name']: r for r in stage['rows']}
    tta = rows['tta']['valid_acc']  # scored once, by rank 0 on the whole valid set: so many of 9, not of 10 or 18
    assert tta * 9 == pytest.approx(round(tta * 9), abs=1e-5)
    alone = evaluate_saved_run(run, tmp_path / 'alone', figures=False)  # one process, the same checkpoint
    history = pd.read_csv(run / 'metrics.csv')
    assert round(history['valid_accuracy'].iloc[-1] * 9) == round(alone['valid_acc'] * 9)
    assert history['valid_accuracy'].iloc[-1] == pytest.approx(alone['valid_acc'])
    assert history['valid_loss'].iloc[-1] == pytest.approx(alone['valid_loss'], rel=1e-4)
    assert [p.name for p in (out / 'stage4_final').iterdir()] == [Path(stage['path']).name]
    assert res.stdout.count('final-seed0 epoch 0 (1 of 1)') == 1  # only rank 0 speaks


def test_fewer_training_images_per_process_than_a_batch_is_refused_up_front(odd_valid, tmp_path, monkeypatch, capsys):
    """Two processes' view of the stage, in this one (the refusal comes before any collective, so no torchrun is
    needed to see it): 18 of the 36 training images each, fewer than a batch of 24, refused in one line."""
    from fastai_lab import cli, distributed
    from scripts import stage2_baseline
    monkeypatch.setattr(cli, 'init_distributed', lambda *a, **k: None)  # no process group: nothing is trained
    monkeypatch.setattr(distributed, 'world_size', lambda: 2)
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as e:
        stage2_baseline.main(['--data', str(odd_valid), '--out', str(out), '--bs', '24', *TINY_MODEL])
    assert e.value.code != 0
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
    assert said and 'each of the 2 processes trains on 18 of the 36 training images, fewer than one batch' in said[0]
    assert '--bs 18 or less' in said[0]
    assert not (out / 'stage2_baseline').exists() or not any((out / 'stage2_baseline').iterdir())
    distributed.check_shards(36, 18, world=2)  # a batch each: trains
    distributed.check_shards(36, 24, world=1)  # one process keeps the capped batch as before


def _free_port():
    try:
        with socket.socket() as s:
            s.bind(('localhost', 0))
            return s.getsockname()[1]
    except OSError as e: pytest.skip(f"no local port to bind for the rendezvous: {e}")


def test_two_nodes_by_torchrun_train_one_run(odd_valid, tmp_path):
    "Multi-node as PyTorch runs it: two launchers (here on one machine), c10d rendezvous; one run, one stage folder."
    out, port = tmp_path / 'out', _free_port()
    launcher = ['--nnodes', '2', '--nproc_per_node', '1', '--rdzv-backend', 'c10d',
                '--rdzv-endpoint', f'localhost:{port}', '--rdzv-id', 'lab-test']
    cmd = launch(launcher, 'stage4_final.py', '--no-ablation', '--no-tta', '--data', odd_valid, '--out', out,
                 '--bs', '8', *TINY_MODEL)
    logs = [(tmp_path / f'node{i}.out', tmp_path / f'node{i}.err') for i in range(2)]  # files: no pipe fills up
    nodes = [subprocess.Popen(cmd, stdout=o.open('w'), stderr=e.open('w'), text=True, cwd=ROOT, env=ENV) for o, e in logs]
    try:
        for p in nodes: p.wait(timeout=300)
    finally:
        for p in nodes:
            if p.poll() is None: p.kill()
    done = [(o.read_text(), e.read_text()) for o, e in logs]
    assert [p.returncode for p in nodes] == [0, 0], '\n'.join(err[-2000:] for _, err in done)
    stage = latest_stage_summary(out, 'stage4_final')
    assert [p.name for p in (out / 'stage4_final').iterdir()] == [Path(stage['path']).name]
    assert [p.name for p in Path(stage['path']).iterdir() if p.is_dir()] == ['final-seed0']
    history = pd.read_csv(Path(stage['path']) / 'final-seed0' / 'metrics.csv')
    assert list(history['epoch']) == [0]  # one row per epoch: the other node wrote nothing
    assert stage['rows'][-1]['valid_acc'] == pytest.approx(history['valid_accuracy'].max())
    assert '--no-ablation: the final model is the recipe as given' in (Path(stage['path']) / 'ablation.md').read_text()
    assert sum(o.count('final-seed0 epoch 0 (1 of 1)') for o, _ in done) == 1  # one process speaks
