"""scripts/predict.py (a run's export.pkl) and scripts/evaluate.py (a run's model.pth) on the session's tiny results
tree (conftest `results`), in this process; errors are one line on stderr with exit code 2."""
import json, shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from scripts import evaluate, predict
from fastai_lab.io import read_json


def run_of(results, stage, name):
    return next((results['out'] / stage).glob(f'*/{name}'))


def fails(script, argv, capsys):
    "The one line `script` prints on stderr when it fails with exit code 2."
    capsys.readouterr()
    with pytest.raises(SystemExit) as e: dict(predict=predict, evaluate=evaluate)[script].main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    return err


def test_predict_top3_of_a_final_run_without_its_data(results, tmp_path, capsys):
    run = run_of(results, 'stage4_final', 'final-seed0')
    names = read_json(run / 'config.json')['data']['classes']
    images = tmp_path / 'images'
    shutil.copytree(results['tiny'] / 'val' / 'images', images)
    (images / '._val_0.JPEG').write_bytes(b'\x00\x05\x16\x07 AppleDouble')  # macOS litter: skipped in folders
    (images / '.DS_Store').write_bytes(b'\x00\x00\x00\x01Bud1')
    (images / 'notes.txt').write_text('not an image')
    n = len(list(images.glob('val_*.JPEG')))
    moved = results['tiny'].with_name('tiny-moved')
    results['tiny'].rename(moved)  # the training data is not needed
    try:
        capsys.readouterr()
        rows = predict.main([str(run), str(images), '--out', str(tmp_path / 'pred')])
    finally: moved.rename(results['tiny'])
    printed = [l for l in capsys.readouterr().out.splitlines() if '.JPEG: ' in l]
    assert len(rows) == len(printed) == n
    csv = pd.read_csv(tmp_path / 'pred' / 'predictions.csv')
    assert list(csv.columns) == ['file', 'top1', 'p1', 'top2', 'p2', 'top3', 'p3'] and len(csv) == n
    assert sorted(Path(f).name for f in csv.file) == sorted(p.name for p in images.glob('val_*.JPEG'))
    p = csv[['p1', 'p2', 'p3']].to_numpy()
    assert (p[:, 0] >= p[:, 1]).all() and (p[:, 1] >= p[:, 2]).all() and (p.sum(1) <= 1 + 1e-5).all() and (p > 0).all()
    assert all(sorted(r) == sorted(names) for r in csv[['top1', 'top2', 'top3']].to_numpy().tolist())
    # the same probabilities as the run's checkpoint through the training data pipeline (squish resize, normalise)
    from fastai_lab.data.loaders import build_data
    from fastai_lab.learner import make_learner
    from fastai_lab.models import load_run_model
    model, recipe = load_run_model(run)
    data = build_data(recipe, say=False)
    probs, _ = make_learner(recipe, model, data.dls).get_preds(dl=data.test_dl())
    by_name = csv.set_index(csv.file.map(lambda f: Path(f).name))
    for (path, _), pr in zip(data.test_items, probs):
        row = by_name.loc[Path(path).name]
        assert row.top1 == names[int(pr.argmax())] and row.p1 == pytest.approx(float(pr.max()), abs=1e-5)
    one = predict.main([str(run), str(images / 'val_0.JPEG')])
    assert len(one) == 1 and not (run / 'predictions').exists()  # one image: printed, no CSV
    assert one[0]['top1'] == by_name.loc['val_0.JPEG', 'top1'] and one[0]['p1'] == pytest.approx(by_name.loc['val_0.JPEG', 'p1'])


def test_predict_masks_and_overlays_of_a_unet_run(results, tmp_path):
    run = run_of(results, 'task3_unet', 'unet-seed0')
    renders = sorted((results['moon'] / 'images' / 'render').glob('*.png'))[:2]
    big = tmp_path / 'big_render.png'  # a render of another size: the mask comes back at that size
    Image.open(renders[0]).resize((75, 50)).save(big)
    rows = predict.main([str(run), str(renders[0]), str(renders[1]), str(big), '--out', str(tmp_path / 'm')])
    assert len(rows) == 3 and (tmp_path / 'm' / 'predictions.csv').is_file()
    for row, src in zip(rows, [*renders, big]):
        image = Image.open(src).convert('RGB')
        mask, overlay = Image.open(tmp_path / 'm' / row['mask']), Image.open(tmp_path / 'm' / row['overlay'])
        assert mask.size == overlay.size == image.size == (row['width'], row['height'])
        m = np.asarray(mask)
        assert mask.mode == 'L' and set(np.unique(m)) <= {0, 255}
        same = (np.asarray(overlay) == np.asarray(image)).all(-1)
        assert (same[m == 0]).all() and not same[m == 255].any()  # tinted exactly where rock is predicted
        assert row['rock_share'] == pytest.approx((m == 255).mean(), abs=1e-6)


def test_predict_errors_are_one_line(results, tmp_path, capsys):
    final = run_of(results, 'stage4_final', 'final-seed0')
    unet = run_of(results, 'task3_unet', 'unet-seed0')
    image = next((results['tiny'] / 'val' / 'images').glob('*.JPEG'))
    unfinished = tmp_path / 'stage' / 'final-seed1'; unfinished.mkdir(parents=True)
    shutil.copy(final / 'config.json', unfinished)
    (tmp_path / 'notes.txt').write_text('hello')
    (tmp_path / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40)
    (tmp_path / 'empty').mkdir()
    assert f'{tmp_path}/missing: no such run folder' in fails('predict', [tmp_path / 'missing', image], capsys)
    err = fails('predict', [final.parent, image], capsys)
    assert 'not a run folder but holds runs with export.pkl: final-seed0' in err
    assert 'an unfinished run (no summary.json), without export.pkl' in fails('predict', [unfinished, image], capsys)
    assert 'notes.txt: not a readable image' in fails('predict', [final, tmp_path / 'notes.txt'], capsys)
    assert 'broken.png: not a readable image' in fails('predict', [final, tmp_path / 'broken.png'], capsys)
    assert 'nothing.png: no such file or folder' in fails('predict', [final, tmp_path / 'nothing.png'], capsys)
    assert 'empty: no images in this folder' in fails('predict', [final, tmp_path / 'empty'], capsys)
    err = fails('predict', [unet, image, '--task', 'classify'], capsys)
    assert 'a segmentation run, not a classifier one (--task classify)' in err
    assert 'a classifier run, not a segmentation one' in fails('predict', [final, image, '--task', 'segment'], capsys)


def test_evaluate_a_128px_classifier_run(results, tmp_path):
    run = run_of(results, 'task3_classifier128', 'classifier128-seed0')
    out = evaluate.main([str(run), '--out', str(tmp_path / 'ev')])
    folder = tmp_path / 'ev'
    n_test = len(list((results['tiny'] / 'val' / 'images').glob('*.JPEG')))
    cm = pd.read_csv(folder / 'confusion_matrix.csv', index_col=0)
    assert cm.shape == (3, 3) and cm.values.sum() == n_test == read_json(run / 'config.json')['data']['n_test']
    assert (folder / 'confusion_matrix.png').stat().st_size > 1000
    for name in ('per_class.csv', 'per_class.md', 'test_samples.png', 'show_results.png', 'metrics.md'):
        assert (folder / name).is_file(), name
    trained = read_json(run / 'summary.json')
    assert out['test_acc'] == pytest.approx(trained['test_acc']) == pytest.approx(cm.values.trace() / n_test)
    assert out['valid_acc'] == pytest.approx(trained['best']['valid_accuracy'])  # the same checkpoint, the same data
    saved = json.loads((folder / 'evaluation.json').read_text())
    assert saved['recipe']['model']['stem'] == '3x3s2' and saved['test_acc'] == pytest.approx(out['test_acc'])


def test_evaluate_a_unet_run_into_its_own_folder(results, tmp_path):
    run = tmp_path / 'unet-seed0'
    shutil.copytree(run_of(results, 'task3_unet', 'unet-seed0'), run)
    out = evaluate.main([str(run)])
    (folder,) = (run / 'evaluation').iterdir()
    trained = read_json(run / 'summary.json')
    assert out['valid_iou'] == pytest.approx(trained['best']['valid_iou'], abs=1e-6)
    assert out['test_iou'] == pytest.approx(trained['test_iou'], abs=1e-6) and 0 <= out['test_dice'] <= 1
    saved = read_json(folder / 'evaluation.json')
    assert {'valid_iou', 'valid_dice', 'valid_pixel_acc', 'test_iou', 'test_dice', 'test_pixel_acc'} <= set(saved)
    assert (folder / 'prediction_0.png').is_file() and (folder / 'test_prediction_0.png').is_file()
    assert 'test_iou' in (folder / 'metrics.md').read_text()


def test_evaluate_errors_are_one_line(results, tmp_path, capsys):
    c128 = run_of(results, 'task3_classifier128', 'classifier128-seed0')
    assert 'nowhere: no such run folder' in fails('evaluate', [tmp_path / 'nowhere'], capsys)
    started = tmp_path / 'started'; started.mkdir()
    shutil.copy(c128 / 'config.json', started)
    err = fails('evaluate', [started], capsys)
    assert 'an unfinished run (no summary.json), without model.pth: it is written after its first epoch' in err
    assert 'holds runs with model.pth: classifier128-seed0' in fails('evaluate', [c128.parent], capsys)
    moved = tmp_path / 'moved-run'; moved.mkdir()
    state = torch.load(c128 / 'model.pth', map_location='cpu', weights_only=True)
    state['recipe']['data'] = str(tmp_path / 'old-place' / 'tiny')
    torch.save(state, moved / 'model.pth')
    err = fails('evaluate', [moved], capsys)
    assert f"{tmp_path / 'old-place' / 'tiny'}: the data folder of {moved}" in err and 'pass --data' in err
    assert not (moved / 'evaluation').exists()  # a failed evaluation leaves no folder behind


def test_an_export_of_the_earlier_layout_finds_its_classes_under_fastai_lab():
    "export.pkl files written before the one import name pickled `arch.`, `data.`, `lab.` modules: they still load."
    import io
    from fastai_lab.arch.resnet import ResNet
    from fastai_lab.data.cache import item_cache
    from fastai_lab.metrics import DeviceAccuracy
    from fastai_lab.predict import _Unpickler, new_module
    assert new_module('lab.metrics') == 'fastai_lab.metrics' and new_module('lab.data') == 'fastai_lab.data.loaders'
    assert new_module('data.augment') == 'fastai_lab.data.augment' and new_module('torch.nn') == 'torch.nn'
    for module, name, found in (('arch.resnet', 'ResNet', ResNet), ('lab.metrics', 'DeviceAccuracy', DeviceAccuracy),
                                ('lab.device_data', 'item_cache', item_cache)):
        assert _Unpickler(io.BytesIO(f"c{module}\n{name}\n.".encode())).load() is found  # protocol 0: GLOBAL
    with pytest.raises(ModuleNotFoundError):
        _Unpickler(io.BytesIO(b"cno_such_module\nX\n.")).load()
