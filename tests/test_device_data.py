"Device data path: item caches on disk, DeviceDL batches equal to the file path's, fastai features on top of them."
import os, random, re, shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn
from fastai.callback.progress import ProgressCallback  # noqa: F401 (adds Learner.no_bar)
from fastai.data.core import TfmdDL
from fastai.interpret import ClassificationInterpretation
from fastai.learner import Learner, load_learner
from fastai.vision.all import (CategoryBlock, DataBlock, ImageBlock, IndexSplitter, ItemGetter, PILImage, PILImageBW,
                               Pipeline, RandomResizedCrop, Resize, TensorCategory, TensorImage, TensorMask, Transform)

import fastai_lab.data.cache as cache_module
from fastai_lab.data.augment import PadCrop
from fastai_lab.data.cache import cache_dir_for, item_cache
from fastai_lab.data.device import DeviceDL, to_device_dls
from fastai_lab.data.moon import moon_dls
from fastai_lab.data.synthetic import make_moon_like, make_tiny_imagenet_like
from fastai_lab.data.tiny_imagenet import load_tiny_imagenet, tiny_imagenet_dls


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "3 classes x 8 train images (-> 18 train, 6 valid) and 6 test images of 64 px."
    return make_tiny_imagenet_like(tmp_path_factory.mktemp('dev')/'tiny', n_classes=3, n_train=8, n_val=2)


@pytest.fixture(scope='module')
def moon(tmp_path_factory):
    return make_moon_like(tmp_path_factory.mktemp('dev')/'moon', n=6, width=48, height=32)


def tiny_dls(root, bs=8, size=32, n_classes=3):
    splits = load_tiny_imagenet(root, n_classes=n_classes)
    return splits, tiny_imagenet_dls(splits, size=size, bs=bs, augment=False)


def same_batches(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.fixture
def builds(monkeypatch):
    "Counts the cache builds (decoding passes) of `item_cache`."
    calls = []
    original = cache_module._build
    monkeypatch.setattr(cache_module, '_build', lambda dl: calls.append(dl) or original(dl))
    return calls


# ----- batches ------------------------------------------------------------------------------------------------------

def test_tiny_batches_equal_the_file_path(tiny):
    _, dls = tiny_dls(tiny, bs=4)
    ddls = to_device_dls(dls, tiny)
    assert ddls.data_path == 'cpu' and isinstance(ddls.train, DeviceDL) and isinstance(ddls.valid, DeviceDL)
    assert ddls.vocab == dls.vocab and ddls.c == 3 and ddls.device == dls.device
    for file_dl, dev_dl in zip(dls.loaders, ddls.loaders):
        attrs = lambda dl: (len(dl), dl.bs, dl.drop_last, dl.shuffle, dl.device)
        assert attrs(dev_dl) == attrs(file_dl)
        file_dl.rng, dev_dl.rng = random.Random(5), random.Random(5)  # same draws -> same shuffled order
        file_batches, dev_batches = list(file_dl), list(dev_dl)
        assert len(dev_batches) == len(file_batches) == len(file_dl)
        for a, b in zip(file_batches, dev_batches):
            assert type(b[0]) is TensorImage and type(b[1]) is TensorCategory
            assert b[0].dtype == torch.float32 and same_batches(a, b)
    # DistributedDL hands its own sample indices to the wrapped loader's create_batches.
    x, y = next(ddls.valid.create_batches(iter([5, 1, 3])))
    items = [ddls.valid.do_item(i) for i in (5, 1, 3)]
    assert torch.equal(x, torch.stack([i[0] for i in items])) and y.tolist() == [int(i[1]) for i in items]
    assert x.dtype == torch.uint8  # after_batch (IntToFloatTensor, Normalize) comes later, in DataLoader.__iter__


def test_moon_batches_equal_the_file_path_with_masks(moon):
    dls = moon_dls(moon, size=32, bs=2, augment=False)
    ddls = to_device_dls(dls, moon)
    for file_dl, dev_dl in zip(dls.loaders, ddls.loaders):
        file_dl.rng, dev_dl.rng = random.Random(1), random.Random(1)
        for a, b in zip(file_dl, dev_dl):
            assert type(b[0]) is TensorImage and type(b[1]) is TensorMask and b[1].shape[1:] == (32, 32)
            assert b[1].dtype == torch.long and set(b[1].unique().tolist()) <= {0, 1} and same_batches(a, b)


def test_shuffling_follows_the_rng_and_drop_last(tiny):
    _, dls = tiny_dls(tiny, bs=4)
    dl = to_device_dls(dls, tiny).train

    def labels(dl, seed):
        dl.rng = random.Random(seed)
        return [b[1].tolist() for b in dl]

    assert labels(dl, 3) == labels(dl, 3) and labels(dl, 3) != labels(dl, 4)
    assert len(dl.dataset) == 18 and len(dl) == 4 and [len(b) for b in labels(dl, 3)] == [4] * 4  # 2 dropped
    full = dl.new(shuffle=False, drop_last=False)
    assert isinstance(full, DeviceDL) and len(full) == 5
    ys = [y for b in labels(full, 0) for y in b]
    assert ys == [y for _, y in dl.dataset.items]  # every item once, in dataset order, the last batch partial
    # Anything the cache does not hold falls back to fastai's per-item loader (test sets, export, other item tfms).
    assert type(dl.new(dl.dataset.new_empty())) is TfmdDL and type(dl.new(after_item=Pipeline([]))) is TfmdDL
    assert type(dl.new(after_item=dl.after_item)) is DeviceDL


# ----- the cache ----------------------------------------------------------------------------------------------------

def test_cache_is_loaded_then_rebuilt_when_a_file_changes(tmp_path, builds):
    root = make_tiny_imagenet_like(tmp_path/'tiny', n_classes=2, n_train=4, n_val=1)
    _, dls = tiny_dls(root, n_classes=2)
    first = item_cache(dls.train, root)
    (file,) = cache_dir_for(root).glob('*.pt')
    assert file.parent == root/'.lab-cache' and re.fullmatch(r'[0-9a-f]{40}\.pt', file.name) and len(builds) == 1
    assert first[0].shape == (len(dls.train_ds), 3, 32, 32) and first[0].dtype == torch.uint8
    assert [type(t) for t in first] == [TensorImage, TensorCategory]
    items = [dls.train.do_item(i) for i in range(len(dls.train_ds))]
    assert same_batches(first, [torch.stack(o) for o in zip(*items)])  # exactly the item pipeline's output
    again = item_cache(dls.train, root)
    assert len(builds) == 1 and same_batches(first, again) and [type(t) for t in again] == [TensorImage, TensorCategory]
    path = dls.train_ds.items[2][0]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    item_cache(dls.train, root)
    assert len(builds) == 2 and len(list(cache_dir_for(root).glob('*.pt'))) == 2
    item_cache(tiny_dls(root, size=16, n_classes=2)[1].train, root)  # another image size: another cache
    assert len(builds) == 3


class Draws(Transform):
    "An item transform that draws from every global RNG."
    order = 99
    def encodes(self, x: TensorImage): random.random(); np.random.rand(); torch.rand(1); return x


def rng_states():
    return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist()


def test_building_leaves_the_rngs_alone(tmp_path, builds):
    root = make_tiny_imagenet_like(tmp_path/'tiny', n_classes=2, n_train=4, n_val=1)
    _, dls = tiny_dls(root, n_classes=2)
    dls.valid.after_item.add(Draws())
    before = rng_states()
    item_cache(dls.valid, root)
    assert len(builds) == 1 and rng_states() == before
    dls.valid.do_item(0)
    assert rng_states() != before  # the transform does draw: the cache put the states back


def test_a_building_run_and_a_cached_run_give_the_same_numbers(tmp_path, builds):
    root = make_tiny_imagenet_like(tmp_path/'tiny', n_classes=2, n_train=4, n_val=1)

    def run():
        random.seed(0); np.random.seed(0); torch.manual_seed(0)
        _, dls = tiny_dls(root, bs=2, n_classes=2)
        dls.train.after_batch.add(PadCrop(4))  # torch-seeded augmentation after the (cached or built) data
        ddls = to_device_dls(dls, root)
        return [b[0] for b in ddls.train] + [torch.rand(3), torch.tensor(random.random())]

    first, n_builds = run(), len(builds)
    second = run()
    assert n_builds == 2 and len(builds) == 2 and same_batches(first, second)  # built train+valid, then loaded


def test_a_corrupt_cache_file_is_rebuilt(tmp_path, builds):
    root = make_tiny_imagenet_like(tmp_path/'tiny', n_classes=2, n_train=4, n_val=1)
    _, dls = tiny_dls(root, n_classes=2)
    first = item_cache(dls.valid, root)
    (file,) = cache_dir_for(root).glob('*.pt')
    file.write_bytes(file.read_bytes()[:100])
    assert same_batches(first, item_cache(dls.valid, root)) and len(builds) == 2
    assert same_batches(first, item_cache(dls.valid, root)) and len(builds) == 2  # the rewritten file is good


def test_mask_option_gives_another_cache(moon, builds):
    # RockMask's repr leaves out large_only: the key must still tell the two apart.
    rocks, large = (moon_dls(moon, size=32, augment=False, large_only=k).train for k in (False, True))
    item_cache(rocks, moon)
    n = len(builds)
    assert not same_batches(item_cache(large, moon), item_cache(rocks, moon)) and len(builds) == n + 1


def test_the_key_tells_image_types_apart(tiny):
    # Both create functions print as 'PILBase.create': the key looks at what they are bound to.
    items = load_tiny_imagenet(tiny, n_classes=3).train
    keys = {cache_module._cache_key(DataBlock(blocks=(ImageBlock(cls), CategoryBlock), get_x=ItemGetter(0),
                                        get_y=ItemGetter(1), item_tfms=Resize(32, method='squish'),
                                        splitter=IndexSplitter(range(4)))
                              .dataloaders(items, bs=4).valid) for cls in (PILImage, PILImageBW, PILImage)}
    assert len(keys) == 2


def test_a_truncated_image_is_named(tmp_path):
    root = make_tiny_imagenet_like(tmp_path/'tiny', n_classes=2, n_train=4, n_val=1)
    _, dls = tiny_dls(root, n_classes=2)
    bad = dls.train_ds.items[1][0]
    bad.write_bytes(bad.read_bytes()[:len(bad.read_bytes()) // 2])
    with pytest.raises(ValueError, match=rf'^{re.escape(str(bad))}: not a readable image \(image file is truncated'):
        item_cache(dls.train, root)
    assert not list(cache_dir_for(root).glob('*.pt'))


def test_read_only_data_is_cached_in_the_fastai_data_folder(tmp_path, monkeypatch):
    root = make_tiny_imagenet_like(tmp_path/'ro-tiny', n_classes=2, n_train=4, n_val=1)
    _, dls = tiny_dls(root, n_classes=2)
    monkeypatch.setattr(cache_module, 'data_home', lambda: tmp_path/'fastai-data')
    expected = tmp_path/'fastai-data'/'lab-cache'
    os.chmod(root, 0o555)
    cache = cache_dir_for(root)
    try:
        assert cache.parent == expected and re.fullmatch(r'ro-tiny-[0-9a-f]{10}', cache.name)
        item_cache(dls.valid, root)
        assert len(list(cache.glob('*.pt'))) == 1 and not (root/'.lab-cache').exists()
    finally:
        os.chmod(root, 0o755)
        shutil.rmtree(cache, ignore_errors=True)
        if expected.is_dir() and not any(expected.iterdir()): expected.rmdir()
    assert cache_dir_for(root) == root/'.lab-cache'


@pytest.mark.parametrize('item_tfm', [RandomResizedCrop(32), Resize(32)], ids=['RandomResizedCrop', 'Resize-crop'])
def test_random_item_transforms_are_refused(tiny, item_tfm):
    # Resize crops at a random place on the training split by default (method='crop'); squish does not.
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=ItemGetter(0), get_y=ItemGetter(1), item_tfms=item_tfm)
    dls = block.dataloaders(load_tiny_imagenet(tiny, n_classes=3).train, bs=4)
    with pytest.raises(ValueError, match=rf"\['{type(item_tfm).__name__}'\].*random per epoch"):
        item_cache(dls.train, tiny)
    item_cache(dls.valid, tiny)  # the valid split crops at the centre: cacheable


# ----- fastai features on the device loaders ------------------------------------------------------------------------

def tiny_model(n_classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n_classes))


def test_fastai_features_work_on_device_loaders(tiny, tmp_path, monkeypatch):
    splits, dls = tiny_dls(tiny)
    ddls = to_device_dls(dls, tiny)
    learn = Learner(ddls, tiny_model(), path=tmp_path)
    file_learn = Learner(dls, learn.model, path=tmp_path)
    with learn.no_bar(), learn.no_logging(), file_learn.no_bar():
        learn.fit(1, 1e-3)
        file_preds, file_targs = file_learn.get_preds()  # same model object, now trained

        # The cached loaders never decode an item: any per-item call on a DeviceDL fails.
        monkeypatch.setattr(DeviceDL, 'do_item', lambda self, s: pytest.fail('DeviceDL decoded an item'))
        preds, targs = learn.get_preds()
        assert preds.shape == (len(splits.valid), 3) and torch.allclose(preds, file_preds, atol=1e-6)
        assert targs.tolist() == [y for _, y in splits.valid] == file_targs.tolist()  # dataset order

        ddls.show_batch(max_n=4)
        assert len(plt.gcf().axes) >= 4; plt.close('all')
        ddls.show_batch(max_n=4, unique=True)  # samples an endless stream of index 0: must stay lazy
        assert len(plt.gcf().axes) >= 4; plt.close('all')
        learn.show_results(max_n=4)
        assert len(plt.gcf().axes) >= 4; plt.close('all')

        interp = ClassificationInterpretation.from_learner(learn)
        assert interp.confusion_matrix().sum() == len(splits.valid)
        tta_preds, tta_targs = learn.tta(dl=ddls.valid.new(shuffle=False))
        assert tta_preds.shape == (len(splits.valid), 3) and tta_targs.tolist() == targs.tolist()

        test = ddls.test_dl(splits.test, with_labels=True)  # other items: the plain per-item loader
        assert type(test) is TfmdDL
        test_preds, test_targs = learn.get_preds(dl=test)
        assert test_preds.shape == (len(splits.test), 3) and test_targs.tolist() == [y for _, y in splits.test]

    learn.export()
    loaded = load_learner(tmp_path/'export.pkl')
    assert all(type(dl) is TfmdDL for dl in loaded.dls.loaders)  # the export carries no cache
    with loaded.no_bar():
        name, label, probs = loaded.predict(splits.test[0][0])
    assert name in splits.names and probs.shape == (3,) and torch.allclose(probs, test_preds[0], atol=1e-5)
