"""Where the data is (D3): an explicit path, else known locations, else a generated synthetic dataset (loudly).

Datasets never live in the code: they are downloaded and generated into fastai's data folder (`data_home()`:
`~/.fastai/data`, or where fastai's config.ini says, as `untar_data` does). Both finders return ``(path, source)``
with source 'real' or 'synthetic'; a folder made by `data.synthetic` holds a `SYNTHETIC` marker and is reported as
synthetic wherever it is.
"""
import shutil, tempfile, urllib.request, zipfile
from pathlib import Path

from .home import data_home
from .moon import moon_pairs
from .synthetic import make_moon_like, make_tiny_imagenet_like
from .tiny_imagenet import read_wnids

__all__ = ['REPO', 'TINY_IMAGENET_URL', 'data_home', 'data_source', 'find_tiny_imagenet', 'find_moon', 'moon_places',
           'download_tiny_imagenet']

REPO = Path(__file__).resolve().parents[1]  # the checkout; ../shared beside it on this team's machines
TINY_IMAGENET_URL = 'http://cs231n.stanford.edu/tiny-imagenet-200.zip'
MIN_MOON_PAIRS = 20
MOON_URL = 'https://www.kaggle.com/datasets/romainpessia/artificial-lunar-rocky-landscape-dataset'


def _check_tiny(path):
    "Raise, naming what is missing, unless `path` holds the Tiny ImageNet layout."
    if not path.is_dir(): raise FileNotFoundError(f"{path}: no such folder (expected a Tiny ImageNet folder)")
    read_wnids(path)
    for sub in ('train', 'val/images', 'val/val_annotations.txt'):
        if not (path/sub).exists(): raise FileNotFoundError(f"{path/sub}: not found (expected Tiny ImageNet's layout)")


def _shared(name):
    "A read-only copy of a dataset beside the checkout (`../shared/data/<name>`), on machines that have one."
    return REPO.parent/'shared'/'data'/name


def _find(kind, path, places, check, generated, generate, how_to_get, quiet=False):
    "The explicit `path`, else the first of `places` that exists, else the `generated` dataset."
    if path is not None: check(Path(path)); found = Path(path)  # no fallback: the user asked for this folder
    else:
        found = next((p for p in places if p.exists()), None)
        if found is not None: check(found)  # a known place that exists but is broken should be fixed, not skipped
        elif not generate:
            raise FileNotFoundError(f"no {kind} data in {[str(p) for p in places]}: {how_to_get}, or pass --data")
        else:
            target, make = generated
            if not (target/'.complete').exists(): make(target)
            found = target
    source = data_source(found)
    if source == 'synthetic' and not quiet:
        print(f"NOTICE: {found} is a SYNTHETIC stand-in for {kind} (no real data found): the numbers of this run "
              f"are not {kind} numbers. {how_to_get}, or pass --data.")
    return found, source


def data_source(folder):
    "'synthetic' for a generated stand-in (it holds the `SYNTHETIC` marker), else 'real'."
    return 'synthetic' if (Path(folder)/'SYNTHETIC').exists() else 'real'


def find_tiny_imagenet(path=None, generate=True, quiet=False):
    "`(folder, 'real' | 'synthetic')` of Tiny ImageNet: `path`, known locations, or a generated stand-in (`quiet`: no notice)."
    places = [data_home()/'tiny-imagenet-200', _shared('tiny-imagenet-10')]
    return _find('Tiny ImageNet', path, places, _check_tiny,
                 (data_home()/'tiny-imagenet-synthetic', make_tiny_imagenet_like), generate,
                 f"Run data.locate.download_tiny_imagenet() or put it at {places[0]}", quiet)


def moon_places():
    "Where the moon data is looked for, in order: fastai's data folder, then ../shared/data/moon."
    return [data_home()/'moon', _shared('moon')]


def find_moon(path=None, generate=True, quiet=False):
    """`(folder, 'real' | 'synthetic')` of the moon data: `path`, known locations, or a generated stand-in.
    A known location with fewer than `MIN_MOON_PAIRS` frames is skipped (said): it cannot train and validate a U-Net."""
    places = moon_places()
    how_to_get = f"Get it from {MOON_URL} (images/render, images/ground) into {places[0]}"
    if path is None:
        small = {p: len(moon_pairs(p)) for p in places if p.exists() and len(moon_pairs(p)) < MIN_MOON_PAIRS}
        for p, n in small.items() if not quiet else ():
            print(f"NOTICE: {p} holds only {n} render/ground pair(s), too few to train on: skipped "
                  f"(pass --data {p} to use it anyway)")
        places = [p for p in places if p not in small]
    return _find('the Kaggle moon data', path, places, moon_pairs,
                 (data_home()/'moon-synthetic', make_moon_like), generate, how_to_get, quiet)


def download_tiny_imagenet(dest=None):
    """Download and unzip Tiny ImageNet-200 into `dest`/tiny-imagenet-200 (default: fastai's data folder, where the
    lab looks first; reused when there); RuntimeError offline."""
    dest = Path(dest) if dest is not None else data_home()
    target = dest/'tiny-imagenet-200'
    if target.exists(): _check_tiny(target); return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix='.download-') as tmp:  # half a download is never left behind
        archive = Path(tmp)/'tiny-imagenet-200.zip'
        try:
            with urllib.request.urlopen(TINY_IMAGENET_URL, timeout=60) as r, open(archive, 'wb') as f:
                shutil.copyfileobj(r, f)
            with zipfile.ZipFile(archive) as z: z.extractall(tmp)
        except (OSError, zipfile.BadZipFile) as e:  # URLError, timeouts and disk errors are OSErrors
            raise RuntimeError(f"could not download {TINY_IMAGENET_URL}: {getattr(e, 'reason', e)}; put the dataset "
                               f"at {target} or pass --data") from e
        Path(tmp, 'tiny-imagenet-200').rename(target)
    _check_tiny(target)
    return target
