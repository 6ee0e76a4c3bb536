"scripts/benchmark.py in-process on tiny generated data: the a/b/c table of both workloads, and one-line errors."
import json

import pandas as pd
import pytest
import torch

from fastai_lab.data.synthetic import make_moon_like, make_tiny_imagenet_like
from scripts import benchmark

PATHS = 'abc'
pytestmark = pytest.mark.xdist_group('benchmark')  # its module fixture runs the benchmark once: on one worker


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('bench')
    return (make_tiny_imagenet_like(root / 'tiny', n_classes=3, n_train=8, n_val=2, size=16),
            make_moon_like(root / 'moon', n=8, width=48, height=32))


@pytest.fixture(scope='module')
def bench(tiny_data, tmp_path_factory):
    """One quick run of both workloads: (table, config, folder). One torch thread (the script honours
    OMP_NUM_THREADS): on a shared 2-core CPU, two threads fighting other processes run several times slower."""
    tiny, moon = tiny_data
    out = tmp_path_factory.mktemp('out')
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('OMP_NUM_THREADS', '1')
        try: benchmark.main(['--quick', '--data', str(tiny), '--moon', str(moon), '--out', str(out)])
        finally: torch.set_num_threads(threads)
    folder, = (out / 'benchmark').iterdir()
    return pd.read_csv(folder / 'table.csv'), json.loads((folder / 'config.json').read_text()), folder


def test_table_has_a_b_c_for_both_workloads(bench):
    table, config, folder = bench
    assert list(table['workload']) == ['ResNet 16 px', 'U-Net 32 px']  # quick profile: quarter-size images
    for k in PATHS: assert (table[f'{k}_images_per_s'] > 0).all()
    assert (table[['b_train_images_per_s', 'c_train_images_per_s']] > 0).all().all()
    # the quotients of the speeds as printed, to 3 decimals (Python's round and pandas' may differ by one at a tie)
    for k in 'ac': assert list(table[f'b_over_{k}']) == pytest.approx(table['b_images_per_s'] / table[f'{k}_images_per_s'], abs=1e-3)
    # whole epochs cost at least their training phase, which is at least as fast as the whole epoch
    for k in 'bc': assert (table[f'{k}_train_images_per_s'] >= table[f'{k}_images_per_s']).all()
    assert list(table['precision']) == ['fp32', 'fp32'] and (table['peak_mem_a_mib'] == '-').all()
    assert (table['device'] == 'cpu (1 thread)').all()
    assert (table['data_path'] == 'cpu').all() and (table['c_data_path'] == 'file (0 workers)').all()
    assert (folder / 'table.md').read_text().count('\n|---') == 1 and set(config['workloads']) == {'resnet', 'unet'}
    assert config['timed_epochs'] == 1 and config['warmup_epochs'] == 1
    assert config['precision'] == 'fp32' and config['machine']['precision_reason'].startswith('auto on the CPU')


def test_paths_see_the_same_training_images(bench):
    table, config, _ = bench
    for _, row in table.iterrows():
        seen = {row[f'{k}_train_images'] for k in PATHS}
        assert seen == {row['n_train'] // row['batch'] * row['batch']} and seen != {0}  # last partial batch dropped
    assert list(table['n_train']) == [18, 5] and list(table['batch']) == [18, 4]


def test_paths_are_what_they_say(bench):
    _, config, _ = bench
    res, seg = config['workloads']['resnet'], config['workloads']['unet']
    b, c = res['paths']['b']['callbacks'], res['paths']['c']['callbacks']
    assert 'ProgressCallback' not in b and {'Checkpoints (fit)', 'MetricsCSV (fit)'} <= set(b)
    assert 'ProgressCallback' in c and 'MixedPrecision' not in c  # fastai's defaults; fp32 on a CPU
    assert res['paths']['c']['optimizer'] == 'fastai.optimizer.Adam' and res['recipe']['classes'].count(',') == 2
    assert seg['recipe']['arch'] == 'unet' and seg['recipe']['size'] == 32 and seg['data']['data_path'] == 'cpu'


@pytest.mark.parametrize('argv, says', [
    (['--only', 'vgg'], "invalid choice: 'vgg'"),
    (['--epochs', '0'], '--epochs 0'),
    (['--quick', '--full'], 'contradict'),
    (['--only', 'resnet', '--data', '{tmp}/missing'], 'missing: no such folder'),
    (['--only', 'unet', '--moon', '{tmp}/missing'], 'missing'),
])
def test_bad_flags_give_one_line_and_exit_2(argv, says, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in argv] + ['--out', str(tmp_path / 'out')]
    with pytest.raises(SystemExit) as e: benchmark.main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and says in err, err
    assert not (tmp_path / 'out' / 'benchmark').exists()  # nothing was measured, nothing is left behind


def test_models_table_lists_every_architecture_with_its_cost(tmp_path):
    threads = torch.get_num_threads()
    try: benchmark.main(['--models', '--quick', '--out', str(tmp_path)])
    finally: torch.set_num_threads(threads)
    folder, = (tmp_path / 'benchmark').iterdir()
    table = pd.read_csv(folder / 'models.csv').set_index('model')
    assert {'3.1-B', 'T3.1 classifier', 'T3.2 U-Net', 'T3.3 A (frozen encoder)', 'T3.3 B (fine-tuned)'} <= set(table.index)
    assert (table['GMACs'] > 0).all() and (table['infer_images_per_s'] > 0).all() and (table['latency_ms'] > 0).all()
    assert table.loc['3.1-B', 'GMACs'] > 2.5 * table.loc['baseline (2, 3.1-A, 3.2-B, 3.3-A)', 'GMACs']  # ~3x at ~1x params
    a, b = table.loc['T3.3 A (frozen encoder)'], table.loc['T3.3 B (fine-tuned)']
    assert a['trainable_M'] < b['trainable_M'] == b['params_M'] and a['GMACs'] == b['GMACs']
    assert table['device'].str.startswith('cpu').all() and (table['peak_mem_mib'] == '-').all()
    assert 'no peak-allocation counter for the CPU' in (folder / 'models.md').read_text()
