"""Trust, third pass: no silent change of the data (image modes, duplicated items) and every saved result carries
its caveats; an unwritable --out and a failed write say what failed."""
import errno, json, re, shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastai_lab.data.images import RGBImage, check_image, open_rgb


# ----- image modes ------------------------------------------------------------------------------------------------

def _save(path, arr, mode=None):
    Image.fromarray(arr, mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257, 32896], [65535, 1000, 60000]], np.uint16)
    png = _save(tmp_path / 'sixteen.png', v)
    assert Image.open(png).mode == 'I;16'
    assert np.asarray(Image.open(png).convert('RGB'))[0, 2, 0] == 255  # what PIL alone does: clipped to white
    rgb = np.asarray(open_rgb(png))
    assert rgb.shape == (2, 3, 3) and (rgb == rgb[..., :1]).all()
    assert rgb[..., 0].tolist() == [[0, 1, 128], [255, 4, 233]]  # v / 257, rounded
    big_endian = Image.frombytes('I;16B', (3, 2), v.astype('>u2').tobytes())
    from fastai_lab.data.images import to_rgb
    assert np.asarray(to_rgb(big_endian)).tolist() == rgb.tolist()
    # fastai's loaders go through it: RGBImage.create
    assert np.asarray(RGBImage.create(png)).tolist() == rgb.tolist()


def test_8_bit_modes_are_fastais_pixels(tmp_path):
    from fastai.vision.core import PILImage
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    files = [_save(tmp_path / 'rgb.png', rgb), _save(tmp_path / 'grey.png', rgb[..., 0]),
             _save(tmp_path / 'rgba.png', np.dstack([rgb, rgb[..., :1]])), tmp_path / 'p.png', tmp_path / 'c.jpg']
    Image.fromarray(rgb).convert('P').save(files[3]); Image.fromarray(rgb).convert('CMYK').save(files[4])
    for f in files:
        assert np.array_equal(np.asarray(open_rgb(f)), np.asarray(PILImage.create(f))), f


def test_wide_modes_without_a_range_are_kept_only_when_lossless_else_refused_by_name(tmp_path):
    ints = np.array([[0, 17, 255]], np.int32)
    i8 = _save(tmp_path / 'i.tif', ints)
    assert Image.open(i8).mode == 'I' and np.asarray(open_rgb(i8))[..., 0].tolist() == [[0, 17, 255]]
    for name, arr in (('wide.tif', np.array([[0, 300, 60000]], np.int32)), ('neg.tif', np.array([[-1, 3, 4]], np.int32)),
                      ('unit.tif', np.array([[0, 0.5, 1.0]], np.float32))):
        f = _save(tmp_path / name, arr)
        with pytest.raises(ValueError, match=rf"^{tmp_path / name}: image mode [IF] .*no fixed range"):
            open_rgb(f)
        with pytest.raises(ValueError, match=rf"^{tmp_path / name}: image mode"):
            check_image(f, rgb=True)
        assert check_image(f) == (3, 1)  # readable, only not as RGB
    whole = _save(tmp_path / 'whole.tif', np.array([[0, 9, 200]], np.float32))
    assert np.asarray(open_rgb(whole))[..., 0].tolist() == [[0, 9, 200]]


def test_a_16_bit_png_trains_as_its_picture_in_the_tiny_imagenet_loader(tmp_path):
    from fastai_lab.data.synthetic import make_tiny_imagenet_like
    from fastai_lab.data.tiny_imagenet import TinyImageNetDataset, load_tiny_imagenet, tiny_imagenet_dls
    root = make_tiny_imagenet_like(tmp_path / 'tiny', n_classes=2, n_train=5, n_val=1, size=16)
    splits = load_tiny_imagenet(root, n_classes=2)
    path = splits.train[0][0]
    ramp = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)
    png = path.with_suffix('.png'); path.unlink(); _save(png, ramp)
    splits = load_tiny_imagenet(root, n_classes=2)
    i = [p for p, _ in splits.train].index(png)
    x, _ = TinyImageNetDataset(splits.train, splits.names)[i]
    assert torch.allclose(x[0] * 255, torch.arange(256.).reshape(16, 16), atol=0.5)
    dls = tiny_imagenet_dls(splits, size=16, bs=2, augment=False)
    img = dls.train_ds[i][0]
    assert isinstance(img, RGBImage) and np.asarray(img)[..., 0].ravel().tolist() == list(range(256))



def test_moon_renders_and_16_bit_masks_keep_their_values(tmp_path):
    from fastai_lab.data.moon import load_mask, moon_dls, moon_pairs
    from fastai_lab.data.synthetic import make_moon_like
    root = make_moon_like(tmp_path / 'moon', n=3, width=24, height=16)
    render, ground = moon_pairs(root)[0]
    grey = np.asarray(Image.open(render).convert('L'))
    Image.fromarray(grey.astype(np.uint16) * 257).save(render)  # the same picture in 16 bits
    mask = load_mask(ground)
    Image.fromarray(mask.astype(np.uint16)).save(ground)  # 0/1 in 16 bits: still a 0/1 mask
    assert Image.open(ground).mode == 'I;16' and np.array_equal(load_mask(ground), mask)
    dls = moon_dls(root, size=16, bs=1, augment=False, valid_pct=0.34)
    assert np.array_equal(np.asarray(RGBImage.create(render))[..., 0], grey)
    assert all(isinstance(ds[j][0], RGBImage) for ds in (dls.train_ds, dls.valid_ds) for j in range(len(ds)))
    Image.fromarray(mask.astype(np.uint16) * 65535).save(ground)  # 0/65535: not a scheme the lab knows; refused
    with pytest.raises(ValueError, match=rf"^{ground}: grey mask with values 0..65535"):
        load_mask(ground)

# ----- duplicates -------------------------------------------------------------------------------------------------

def test_repeated_annotation_lines_and_linked_files_count_once(tmp_path, capsys):
    from fastai_lab.data.synthetic import make_tiny_imagenet_like
    from fastai_lab.data.tiny_imagenet import load_tiny_imagenet
    root = make_tiny_imagenet_like(tmp_path / 'tiny', n_classes=2, n_train=5, n_val=3, size=16)
    first = load_tiny_imagenet(root, n_classes=2)
    ann = root / 'val' / 'val_annotations.txt'
    lines = ann.read_text().splitlines()
    ann.write_text('\n'.join(lines + lines[:4] + lines[:1]) + '\n')  # 5 repeated lines
    # one train image reached twice: a symlink beside it in its class folder
    a = first.train[0][0]
    (a.parent / ('z' + a.name)).symlink_to(a)
    capsys.readouterr()
    again = load_tiny_imagenet(root, n_classes=2)
    out = capsys.readouterr().out
    assert out.count('\n') == 1 and 'dropped 5 repeated line(s)' in out and '1 train file(s)' in out
    assert again.test == first.test and len(again.test) == 6
    assert sorted(again.train + again.valid) == sorted(first.train + first.valid)
    # the same image with two classes: refused, naming both lines
    name, wnid = lines[0].split('\t')[:2]
    other = next(l.split('\t')[1] for l in lines if l.split('\t')[1] != wnid)
    ann.write_text('\n'.join(lines + [f'{name}\t{other}\t0\t0\t1\t1']) + '\n')
    with pytest.raises(ValueError, match=rf"line {len(lines) + 1}: {name} labelled {other}, but line 1"):
        load_tiny_imagenet(root, n_classes=2)
    # a test image that is a train file too: refused (the test set would not be held out)
    ann.write_text('\n'.join(lines) + '\n')
    test0 = first.test[0][0]
    test0.unlink(); test0.symlink_to(first.train[1][0])
    with pytest.raises(ValueError, match='test image.* are train/valid files too'):
        load_tiny_imagenet(root, n_classes=2)


def test_a_moon_frame_reached_twice_is_refused(tmp_path):
    from fastai_lab.data.moon import moon_pairs
    from fastai_lab.data.synthetic import make_moon_like
    root = make_moon_like(tmp_path / 'moon', n=3, width=24, height=16)
    render = sorted((root / 'images' / 'render').glob('*.png'))[0]
    n = int(render.stem[len('render'):])
    (render.parent / f'render{n}.png').write_bytes(render.read_bytes())
    with pytest.raises(ValueError, match=rf"frame {n} again"):
        moon_pairs(root)


# ----- caveats: saved with the result they concern ----------------------------------------------------------------

def _stage(out, name):
    from fastai_lab.lookup import latest_stage_summary
    s = latest_stage_summary(out, name)
    return s, Path(s['path'])


def test_a_stages_caveats_are_saved_in_its_summaries_and_tables(tiny_cli, tmp_path, capsys):
    from fastai_lab.caveats import caveat
    from fastai_lab.io import read_json
    from scripts import stage2_baseline, stage3_1_channels, stage3_2_blocks
    out = tmp_path / 'out'
    stage2_baseline.main(tiny_cli())  # one seed, quick profile, generated data
    stage, folder = _stage(out, 'stage2_baseline')
    quick, generated, one = caveat('quick'), caveat('generated'), caveat('one_seed')
    assert stage['caveats'] == [quick, generated, one]
    table = (folder / 'table.md').read_text()
    assert all(f"**Caveat:** {c}." in table for c in (quick, generated, one))
    run = folder / 'baseline-seed0'
    assert read_json(run / 'summary.json')['caveats'] == [quick, generated]  # a run has no seed noise of its own
    assert read_json(run / 'config.json')['caveats'] == [quick, generated]
    # two seeds: no one-seed caveat
    stage2_baseline.main(tiny_cli('--seeds', '2', '--epochs', '1'))
    assert one not in _stage(out, 'stage2_baseline')[0]['caveats']
    # --from a stage on other classes: the console's warning is saved too
    stage3_1_channels.main(tiny_cli('--classes', '2', '--epochs', '1'))
    _, other = _stage(out, 'stage3_1_channels')
    capsys.readouterr()
    stage3_2_blocks.main(tiny_cli('--from', other, '--epochs', '1'))
    said = [l for l in capsys.readouterr().out.splitlines() if l.startswith('WARNING: --from')]
    stage, folder = _stage(out, 'stage3_2_blocks')
    assert len(said) == 1 and said[0][len('WARNING: '):] in stage['caveats']
    assert f"**Caveat:** {said[0][len('WARNING: '):]}." in (folder / 'table.md').read_text()
    assert 'classes:' in said[0]


def test_the_report_shows_each_sections_caveats(results, tmp_path):
    from scripts import report
    from fastai_lab.caveats import caveat
    out = tmp_path / 'r'
    shutil.copytree(results['out'], out, ignore=shutil.ignore_patterns('report', 'REPORT.*'))
    report.main(['--out', str(out)])
    text = (out / 'REPORT.md').read_text()
    for c in (caveat('quick'), caveat('generated'), caveat('one_seed')):
        assert f"> **Caveat:** {c}." in text


def test_evaluate_saves_an_unfinished_runs_caveat_and_marks_a_test_on_request(tiny_cli, tmp_path):
    import pandas as pd
    from fastai_lab.caveats import caveat
    from fastai_lab.io import read_json
    from scripts import evaluate, stage2_baseline
    stage2_baseline.main(tiny_cli())
    _, folder = _stage(tmp_path / 'out', 'stage2_baseline')
    run = folder / 'baseline-seed0'
    # as if it had been killed after its first epoch of two
    (run / 'summary.json').unlink()
    pd.read_csv(run / 'metrics.csv').iloc[:1].to_csv(run / 'metrics.csv', index=False)
    evaluate.main([str(run), '--out', str(tmp_path / 'ev'), '--no-figures'])
    saved = read_json(tmp_path / 'ev' / 'evaluation.json')
    unfinished = caveat('unfinished', done=1, epochs=2)
    assert unfinished.startswith('unfinished run: 1 of 2 epochs trained')
    assert saved['on_request'] is True
    assert saved['caveats'] == [caveat('quick'), caveat('generated'), unfinished, caveat('on_request')]
    table = (tmp_path / 'ev' / 'metrics.md').read_text()
    assert '(on request: evaluate.py)' in table and all(f"**Caveat:** {c}." in table for c in saved['caveats'])


# ----- --out that cannot be written; a write that fails mid-run ---------------------------------------------------

def test_an_unwritable_out_is_refused_first_naming_the_flag(tiny_cli, tmp_path, capsys, monkeypatch):
    from fastai_lab.data import loaders
    from scripts import evaluate, stage2_baseline
    monkeypatch.setattr(loaders, 'build_data', lambda *a, **k: pytest.fail('data read before --out was checked'))
    afile = tmp_path / 'afile'
    afile.write_text('x')
    for out, why in ((afile, 'a file, not a folder'), (afile / 'below', 'is a file, so no folder can be made')):
        argv = [a if a != str(tmp_path / 'out') else str(out) for a in tiny_cli()]
        for main, args in ((stage2_baseline.main, argv), (evaluate.main, [str(tmp_path), '--out', str(out)])):
            with pytest.raises(SystemExit) as stop: main(args)
            err = capsys.readouterr().err.strip()
            assert stop.value.code == 2 and len(err.splitlines()) == 1, err
            assert err.startswith(f"error: --out {out}: ") and why in err


def test_a_failed_write_names_its_file_and_cause_and_leaves_no_stage_folder(tiny_cli, tmp_path, capsys, monkeypatch):
    from fastai_lab import checkpoint
    from scripts import stage2_baseline
    stage2_baseline.main(tiny_cli('--epochs', '1', '--out', str(tmp_path / 'warm')))  # the data cache exists
    def full(obj, f, *a, **k): raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(checkpoint.torch, 'save', full)
    with pytest.raises(SystemExit) as stop: stage2_baseline.main(tiny_cli())
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2
    assert err[-1].startswith('error: ')
    assert re.search(r"baseline-seed0/(model|last)\.pth: not written \(No space left on device\)", err[-1])
    assert "in fastai's Checkpoints callback, after_epoch" in err[-1]
    assert not (tmp_path / 'out').exists()  # no empty stage folder, nor the --out made for it


# The ablation's test columns (none) and its one tested run: tests/test_scripts.py, on its stage 4 ablation run.
