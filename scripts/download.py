#!/usr/bin/env python
"""Download a real dataset into fastai's data folder, where the lab looks for it, and check its layout.

  python scripts/download.py tiny-imagenet      # ~/.fastai/data/tiny-imagenet-200 (the 248 MB zip: ~/.fastai/archive)
  python scripts/download.py moon               # ~/.fastai/data/moon, from Kaggle (needs kagglehub)
  python scripts/download.py moon --dest DIR    # DIR/moon: pass --data DIR/moon to the moon scripts

Tiny ImageNet comes from cs231n (fastai's downloader, with its progress bar); the archive's size and hashes are
checked before it is unzipped. The moon data is Kaggle's "Artificial Lunar Rocky Landscape Dataset" through
`kagglehub` (pip install kagglehub; Kaggle may ask for credentials: ~/.kaggle/kaggle.json or KAGGLE_USERNAME and
KAGGLE_KEY). A copy already in place is checked and kept. Offline, without credentials or with a corrupt archive:
one line that says what failed and where to put the files by hand; nothing half-extracted is left behind.
"""
from fastai_lab.cli import script


def flags(p):
    p.add_argument('dataset', choices=('tiny-imagenet', 'moon'), help='which dataset')
    p.add_argument('--dest', default=None, help="the folder to put it in (default: fastai's data folder, "
                                                "~/.fastai/data unless ~/.fastai/config.ini says otherwise)")


def run(args):
    from fastai_lab.data.download import download_moon, download_tiny_imagenet
    get = download_tiny_imagenet if args.dataset == 'tiny-imagenet' else download_moon
    path = get(args.dest)
    print(f"{args.dataset}: {path} (layout checked)")
    return path


main = script(run, flags)
if __name__ == '__main__': main()
