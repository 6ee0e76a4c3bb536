"""--rocks all|large (D4's "large rocks only"): a recipe field and flag of the moon scripts, recorded with the run."""
import json
from dataclasses import replace

import pytest
import torch

from fastai_lab.data.loaders import build_data, resolve_data
from fastai_lab.recipe import UNET, scale_to_profile


def _masks(moon, rocks):
    r = resolve_data(replace(scale_to_profile(UNET, 'quick'), data=str(moon), size=32, bs=6, augment='none',
                             rocks=rocks))
    return torch.cat([y for _, y in build_data(r, say=False).dls.valid]), r


def test_large_rocks_are_a_subset_of_all_rocks(synthetic_moon):
    (every, r_all), (large, r_large) = _masks(synthetic_moon, 'all'), _masks(synthetic_moon, 'large')
    assert (large <= every).all() and 0 < large.sum() < every.sum()
    assert r_all.data_key() == {k: v for k, v in r_large.data_key().items() if k != 'rocks'}  # old keys unchanged
    assert r_large.data_key()['rocks'] == 'large'  # never compared with all-rock runs


def test_rocks_flag_is_recorded_and_checked(synthetic_moon, tmp_path, capsys):
    from scripts import task3_unet
    with pytest.raises(SystemExit) as e: task3_unet.main(['--data', str(synthetic_moon), '--out', str(tmp_path),
                                                          '--quick', '--rocks', 'medium'])
    assert e.value.code == 2 and "--rocks 'medium': expected one of all, large" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    from scripts import stage2_baseline
    with pytest.raises(SystemExit): stage2_baseline.main(['--out', str(tmp_path), '--quick', '--rocks', 'large'])
    assert '--rocks: not used by the ResNet classifier' in capsys.readouterr().err
    task3_unet.main(['--data', str(synthetic_moon), '--out', str(tmp_path), '--quick', '--epochs', '1', '--size', '16',
                     '--bs', '2', '--base', '4', '--depth', '2', '--rocks', 'large'])
    config, = tmp_path.glob('task3_unet/*/*/config.json')
    assert json.loads(config.read_text())['recipe']['rocks'] == 'large'
