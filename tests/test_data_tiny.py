"Tiny ImageNet data layer: item lists, split, Dataset, DataLoaders, bad inputs, generator, locating (T2.1, D3)."
import re, shutil
from collections import Counter
from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from fastai_lab.data import locate, synthetic
from fastai_lab.data.tiny_imagenet import TinyImageNetDataset, class_names, load_tiny_imagenet, read_words, test_dl, tiny_imagenet_dls

WNIDS = [f'n9{k:07d}' for k in range(10)]
REAL_NAMES = ['Egyptian cat', 'reel', 'volleyball', 'rocking chair', 'lemon', 'bullfrog', 'basketball', 'cliff',
              'espresso', 'plunger']


def per_class(items): return Counter(y for _, y in items)


def copy_of(root, tmp_path):
    return shutil.copytree(root, tmp_path/'copy')


# ----- item lists and split -----------------------------------------------------------------------------------------

def test_items_follow_the_layout(synthetic_tiny):
    s = load_tiny_imagenet(synthetic_tiny)
    assert s.wnids == WNIDS and s.names == synthetic.FAMILIES[:10]
    assert (len(s.train), len(s.valid), len(s.test)) == (160, 40, 50)
    assert per_class(s.train) == {y: 16 for y in range(10)} and per_class(s.valid) == {y: 4 for y in range(10)}
    assert per_class(s.test) == {y: 5 for y in range(10)}
    assert all(p.parts[-3] == s.wnids[y] for p, y in s.train + s.valid)  # train/<wnid>/images/<file>
    ann = dict(line.split('\t')[:2] for line in (synthetic_tiny/'val'/'val_annotations.txt').read_text().splitlines())
    assert [(p.name, s.wnids[y]) for p, y in s.test] == list(ann.items())
    assert 'test = official val' in s.notes


def test_split_is_stratified_disjoint_and_seeded(synthetic_tiny):
    a, b, c = (load_tiny_imagenet(synthetic_tiny, seed=k) for k in (42, 42, 7))
    assert a.train == b.train and a.valid == b.valid
    assert a.valid != c.valid and per_class(c.valid) == per_class(a.valid)
    files = sorted(p for w in WNIDS for p in (synthetic_tiny/'train'/w/'images').iterdir())
    assert sorted(p for p, _ in a.train + a.valid) == files


def test_split_of_a_class_does_not_depend_on_the_other_classes(synthetic_tiny):
    full, two = load_tiny_imagenet(synthetic_tiny), load_tiny_imagenet(synthetic_tiny, wnids=[WNIDS[3], WNIDS[1]])
    assert two.names == ['ring', 'square']
    assert [p for p, y in two.valid if y == 1] == [p for p, y in full.valid if y == 1]


def test_max_per_class_caps_train_and_test(synthetic_tiny):
    s = load_tiny_imagenet(synthetic_tiny, n_classes=4, max_per_class=3)
    assert per_class(s.train) == {y: 2 for y in range(4)} and per_class(s.valid) == {y: 1 for y in range(4)}
    assert per_class(s.test) == {y: 3 for y in range(4)}


def test_crlf_annotations_read_the_same(synthetic_tiny, tmp_path):
    root = copy_of(synthetic_tiny, tmp_path)
    ann = root/'val'/'val_annotations.txt'
    ann.write_bytes(ann.read_bytes().replace(b'\n', b'\r\n'))
    assert [(p.name, y) for p, y in load_tiny_imagenet(root).test] == \
           [(p.name, y) for p, y in load_tiny_imagenet(synthetic_tiny).test]


def test_class_names_are_short_and_unique():
    words = {'n1': 'cat, feline', 'n2': 'cat', 'n3': 'dog, domestic dog'}
    assert class_names(['n1', 'n2', 'n3', 'n4'], words) == ['cat (n1)', 'cat (n2)', 'dog', 'n4']


# ----- bad inputs ---------------------------------------------------------------------------------------------------

def _remove(root, rel): (root/rel).unlink() if (root/rel).is_file() else shutil.rmtree(root/rel)


def _empty_class(root, rel):
    for p in (root/rel).iterdir(): p.unlink()


@pytest.mark.parametrize('break_it, kwargs, error, named', [
    (partial(_remove, rel='wnids.txt'), {}, FileNotFoundError, 'wnids.txt'),
    (partial(_remove, rel='val/val_annotations.txt'), {}, FileNotFoundError, 'val/val_annotations.txt'),
    (partial(_remove, rel=f'train/{WNIDS[2]}'), {}, FileNotFoundError, f'train/{WNIDS[2]}/images'),
    (partial(_empty_class, rel=f'train/{WNIDS[4]}/images'), {}, ValueError, f'train/{WNIDS[4]}/images'),
    (partial(_remove, rel='val/images/val_3.JPEG'), {}, FileNotFoundError, 'val/images/val_3.JPEG'),
    (None, {'n_classes': 11}, ValueError, 'wnids.txt'),
    (None, {'wnids': [WNIDS[0], 'n01234567']}, ValueError, 'wnids.txt'),
])
def test_bad_layouts_raise_naming_the_path(synthetic_tiny, tmp_path, break_it, kwargs, error, named):
    root = copy_of(synthetic_tiny, tmp_path)
    if break_it: break_it(root)
    with pytest.raises(error, match=re.escape(str(root/named))):
        load_tiny_imagenet(root, **kwargs)


def test_unknown_wnid_is_named(synthetic_tiny):
    with pytest.raises(ValueError, match=r"unknown wnids \['n01234567'\]"):
        load_tiny_imagenet(synthetic_tiny, wnids=['n01234567'])


def test_missing_root_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path/'nowhere'))):
        load_tiny_imagenet(tmp_path/'nowhere')


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path/'broken.JPEG'
    bad.write_bytes(b'not a jpeg')
    with pytest.raises(OSError, match='broken.JPEG'):
        TinyImageNetDataset([(bad, 0)], ['cat'])[0]


# ----- Dataset and DataLoaders --------------------------------------------------------------------------------------

def test_dataset_gives_rgb_float_tensors_and_labels(synthetic_tiny):
    ds = TinyImageNetDataset.from_folder(synthetic_tiny, 'valid')
    s = load_tiny_imagenet(synthetic_tiny)
    assert len(ds) == 40 and ds.classes == s.names and ds.items == s.valid
    x, y = ds[5]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y == s.valid[5][1]
    with pytest.raises(ValueError, match="'tset'"):
        TinyImageNetDataset.from_folder(synthetic_tiny, 'tset')


def test_grayscale_images_become_rgb(synthetic_tiny, tmp_path):
    made = tmp_path/'grey.JPEG'
    Image.fromarray(np.arange(64 * 48, dtype=np.uint8).reshape(48, 64), 'L').save(made)
    generated = synthetic_tiny/'train'/WNIDS[0]/'images'/f'{WNIDS[0]}_7.JPEG'  # every 50th image from k=7 is grey
    for path in (made, generated):
        assert Image.open(path).mode == 'L'
        x, _ = TinyImageNetDataset([(path, 0)], ['a'])[0]
        assert x.shape[0] == 3 and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_dataloaders_agree_with_the_dataset(synthetic_tiny):
    s = load_tiny_imagenet(synthetic_tiny)
    dls = tiny_imagenet_dls(s, bs=16, augment=False)
    assert dls.vocab == s.names and list(dls.train_ds.items) == s.train and list(dls.valid_ds.items) == s.valid
    ds = TinyImageNetDataset(s.valid, s.names)
    for i in (0, 17, 39):
        img, label = dls.valid_ds[i]
        x, y = ds[i]
        assert int(label) == y
        assert np.array_equal(np.asarray(img), (x * 255).round().byte().permute(1, 2, 0).numpy())
    xb, yb = dls.one_batch()
    assert xb.shape == (16, 3, 64, 64) and yb.shape == (16,)


def test_dataloaders_resize_to_128(synthetic_tiny):
    s = load_tiny_imagenet(synthetic_tiny, n_classes=2)
    xb, _ = tiny_imagenet_dls(s, size=128, bs=4).one_batch()
    assert xb.shape == (4, 3, 128, 128)


def test_test_dl_has_labels(synthetic_tiny):
    s = load_tiny_imagenet(synthetic_tiny)
    tdl = test_dl(tiny_imagenet_dls(s, bs=16), s)
    assert [int(tdl.dataset[i][1]) for i in range(len(s.test))] == [y for _, y in s.test]
    _, yb = tdl.one_batch()
    assert len(yb) == 50 and yb.tolist() == [y for _, y in s.test]  # test_dl does not shuffle; its batch is 4x bs


def test_show_batch_titles_are_class_names(synthetic_tiny):
    s = load_tiny_imagenet(synthetic_tiny)
    plt.close('all')
    tiny_imagenet_dls(s, bs=16).show_batch(max_n=4)
    titles = [ax.get_title() for ax in plt.gcf().axes if ax.get_title()]
    assert len(titles) == 4 and set(titles) <= set(s.names)
    plt.close('all')


# ----- generator ----------------------------------------------------------------------------------------------------

def test_generator_writes_the_real_layout(synthetic_tiny):
    assert (synthetic_tiny/'.complete').exists() and (synthetic_tiny/'SYNTHETIC').exists()
    assert (synthetic_tiny/'wnids.txt').read_text().split() == WNIDS
    assert read_words(synthetic_tiny)[WNIDS[6]] == 'stripes, synthetic shape class'
    boxes = (synthetic_tiny/'train'/WNIDS[0]/f'{WNIDS[0]}_boxes.txt').read_text().splitlines()
    assert len(boxes) == 20 and boxes[0].split('\t')[0] == f'{WNIDS[0]}_0.JPEG' and len(boxes[0].split('\t')) == 5
    ann = (synthetic_tiny/'val'/'val_annotations.txt').read_text().splitlines()
    assert len(ann) == 50 and all(len(line.split('\t')) == 6 for line in ann)
    modes = Counter(Image.open(p).mode for p in (synthetic_tiny/'train').glob('*/images/*.JPEG'))
    assert modes == {'RGB': 190, 'L': 10}


def test_generator_is_seeded_and_atomic(tmp_path, monkeypatch):
    make = partial(synthetic.make_tiny_imagenet_like, n_classes=2, n_train=2, n_val=1)
    a, b, c = make(tmp_path/'a', seed=1), make(tmp_path/'b', seed=1), make(tmp_path/'c', seed=2)
    rel = f'train/{WNIDS[1]}/images/{WNIDS[1]}_1.JPEG'
    assert (a/rel).read_bytes() == (b/rel).read_bytes() != (c/rel).read_bytes()
    with pytest.raises(FileExistsError, match=re.escape(str(a))):
        make(a)

    def fail(*args): raise RuntimeError('disk full')
    monkeypatch.setattr(synthetic, '_tiny_image', fail)
    with pytest.raises(RuntimeError):
        make(tmp_path/'d')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a', 'b', 'c']  # no half-made folder left


# ----- real data ----------------------------------------------------------------------------------------------------

def test_real_subset(real_tiny):
    s = load_tiny_imagenet(real_tiny)
    assert s.names == REAL_NAMES
    assert per_class(s.train) == {y: 400 for y in range(10)} and per_class(s.valid) == {y: 100 for y in range(10)}
    assert per_class(s.test) == {y: 50 for y in range(10)}
    grey = [p for p, _ in s.train + s.valid + s.test if Image.open(p).mode == 'L']
    assert len(grey) == 77
    x, _ = TinyImageNetDataset([(grey[0], 0)], s.names)[0]
    assert x.shape == (3, 64, 64) and torch.equal(x[0], x[2])
    dls = tiny_imagenet_dls(s, bs=8)
    assert dls.vocab == REAL_NAMES and len(test_dl(dls, s).dataset) == 500


# ----- locating and downloading -------------------------------------------------------------------------------------

@pytest.fixture
def empty_data_home(tmp_path, monkeypatch):
    "fastai's data folder empty, and no ../shared beside the checkout: the data folder."
    monkeypatch.setattr(locate, 'REPO', tmp_path/'repo')
    monkeypatch.setattr(locate, 'data_home', lambda: tmp_path/'fastai-data')
    return tmp_path/'fastai-data'


def test_explicit_path_must_be_valid(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path/'none'))):
        locate.find_tiny_imagenet(tmp_path/'none')
    (tmp_path/'half').mkdir()
    (tmp_path/'half'/'wnids.txt').write_text('n1\n')
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path/'half'/'train'))):
        locate.find_tiny_imagenet(tmp_path/'half')


def test_generated_data_is_reported_synthetic(synthetic_tiny, capsys):
    assert locate.find_tiny_imagenet(synthetic_tiny) == (synthetic_tiny, 'synthetic')
    assert 'NOTICE' in capsys.readouterr().out


def test_fallback_generates_once_then_reuses(empty_data_home, monkeypatch, capsys):
    with pytest.raises(FileNotFoundError, match='scripts/download.py tiny-imagenet'):
        locate.find_tiny_imagenet(generate=False)
    monkeypatch.setattr(locate, 'make_tiny_imagenet_like',
                        partial(synthetic.make_tiny_imagenet_like, n_classes=2, n_train=2, n_val=1))
    target = empty_data_home/'tiny-imagenet-synthetic'
    assert locate.find_tiny_imagenet() == (target, 'synthetic')
    monkeypatch.setattr(locate, 'make_tiny_imagenet_like', None)  # a second generation would fail
    assert locate.find_tiny_imagenet() == (target, 'synthetic')
    assert capsys.readouterr().out.count('NOTICE') == 2


def test_known_location_is_found(real_tiny):
    path, source = locate.find_tiny_imagenet(generate=False)
    assert source == 'real' and (path/'wnids.txt').exists()

