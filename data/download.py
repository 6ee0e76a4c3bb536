"""Getting the real datasets into fastai's data folder (`scripts/download.py`), checked by the loaders' own checks.

Tiny ImageNet comes through fastdownload's `download_url`, the engine of fastai's `untar_data` (its progress bar,
a `.part` file until the download is whole; not `untar_data` itself, whose config would point fastai's data folder
at `--dest`). FastDownload checks sizes and hashes only for fastai's own URLs, so the archive's
size and hashes are recorded here and checked before anything is extracted. The moon data comes from Kaggle through
`kagglehub` (optional). Either way the data is unpacked into a temporary folder beside its destination, its layout
is checked there (`find_tiny_imagenet` / `find_moon` with the path given), and only then renamed into place: a failed
or interrupted download leaves nothing half-extracted where the lab looks.
"""
import hashlib, shutil, tempfile, zipfile
from pathlib import Path

from .locate import MOON_URL, data_home, find_moon, find_tiny_imagenet

__all__ = ['DownloadError', 'TINY_IMAGENET', 'MOON_HANDLE', 'file_hashes', 'download_tiny_imagenet', 'download_moon']

# The archive cs231n publishes. Its size and md5 are the values the torchvision-style loaders of many projects
# check (e.g. Avalanche's TinyImagenet); its sha256 has not been published where this lab could read it, so it is
# None (unverified) and the download prints the one it computed, to record here.
TINY_IMAGENET = dict(url='http://cs231n.stanford.edu/tiny-imagenet-200.zip', folder='tiny-imagenet-200',
                     size=248_100_043, md5='90528d7ca1a48142e341f4ef8d21d0de', sha256=None)
MOON_HANDLE = 'romainpessia/artificial-lunar-rocky-landscape-dataset'
TINY_BY_HAND = ("download {url} by hand and unzip it so that {target} holds wnids.txt, train/ and val/ "
                "(or pass --data to the scripts)")
MOON_BY_HAND = ("download it from " + MOON_URL + " by hand and unzip it so that {target}/images/render/ and "
                "{target}/images/ground/ hold the renders and their masks (or pass --data to the moon scripts)")


class DownloadError(OSError):
    "A dataset could not be fetched or is not what it should be; the message says where to put the files by hand."


def file_hashes(path, chunk=2 ** 20):
    "(size, md5, sha256) of the file at `path`, read once."
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(chunk): md5.update(block); sha.update(block)
    return Path(path).stat().st_size, md5.hexdigest(), sha.hexdigest()


def _check_archive(path, spec):
    "A ValueError naming the archive unless its size and every recorded hash match `spec`; the sha256 otherwise."
    size, md5, sha256 = file_hashes(path)
    for name, got in (('size', size), ('md5', md5), ('sha256', sha256)):
        if spec.get(name) is not None and got != spec[name]:
            raise ValueError(f"{path}: {name} {got} is not the recorded {spec[name]} (a corrupt or changed archive); "
                             f"it was removed")
    return sha256


def _into_place(tmp, name, target, check):
    "Check the unpacked folder `tmp/name` with the loaders' `check`, then rename it to `target`."
    check(tmp / name)
    (tmp / name).rename(target)
    return target


def download_tiny_imagenet(dest=None, archive=None, spec=None):
    """Tiny ImageNet-200 in `dest`/tiny-imagenet-200 (default: fastai's data folder, where the lab looks first;
    an existing copy is checked and kept). The archive goes to `archive` (default: fastai's archive folder) and is
    kept there, as `untar_data` does. `spec`: url, folder, size and hashes (default `TINY_IMAGENET`). A DownloadError
    of one line says what failed and where to put the files."""
    from fastai.data.external import fastai_path
    from fastdownload import download_url
    spec = spec or TINY_IMAGENET
    dest = Path(dest) if dest is not None else data_home()
    target = dest / spec['folder']
    if target.exists(): find_tiny_imagenet(target, quiet=True); return target
    by_hand = TINY_BY_HAND.format(url=spec['url'], target=target)
    archive = Path(archive or fastai_path('archive'))
    archive.mkdir(parents=True, exist_ok=True)
    try: zipped = Path(download_url(spec['url'], archive))
    except OSError as e:  # offline, refused, a timeout, a full disk: URLError and the rest are OSErrors
        raise DownloadError(f"could not download {spec['url']} ({getattr(e, 'reason', e)}): {by_hand}") from None
    try: sha256 = _check_archive(zipped, spec)
    except ValueError as e:
        zipped.unlink()
        raise DownloadError(f"{e}: run again, or {by_hand}") from None
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix='.download-') as tmp:  # same disk: the rename is atomic
        try:
            with zipfile.ZipFile(zipped) as z: z.extractall(tmp)
            _into_place(Path(tmp), spec['folder'], target, lambda p: find_tiny_imagenet(p, quiet=True))
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise DownloadError(f"{zipped}: not a Tiny ImageNet archive ({e}); nothing was extracted: "
                                f"{by_hand}") from None
    if spec.get('sha256') is None: print(f"{zipped}: sha256 {sha256} (no recorded sha256 to compare it with)")
    return target


def download_moon(dest=None):
    """The Kaggle moon data in `dest`/moon (default: fastai's data folder) through `kagglehub.dataset_download`, or
    the existing copy, checked; a DownloadError of one line says what failed (kagglehub missing, offline, no Kaggle
    credentials) and where to put the files by hand."""
    dest = Path(dest) if dest is not None else data_home()
    target = dest / 'moon'
    if target.exists(): find_moon(target, quiet=True); return target
    by_hand = MOON_BY_HAND.format(target=target)
    try: import kagglehub
    except ImportError:
        raise DownloadError(f"the moon data needs kagglehub (pip install kagglehub), or {by_hand}") from None
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix='.download-') as tmp:
        try: got = Path(kagglehub.dataset_download(MOON_HANDLE, output_dir=str(Path(tmp) / 'moon')))
        except Exception as e:  # kagglehub raises its own kinds (no credentials, HTTP errors) besides OSErrors
            raise DownloadError(f"could not download {MOON_HANDLE} from Kaggle ({type(e).__name__}: "
                               f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}): {by_hand}") from None
        try: _into_place(got.parent, got.name, target, lambda p: find_moon(p, quiet=True))
        except (OSError, ValueError) as e:
            raise DownloadError(f"{MOON_HANDLE}: not the moon layout ({e}): {by_hand}") from None
    return target
