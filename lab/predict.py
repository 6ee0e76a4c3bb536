"""Using a finished run: find its folder, check the images given, and predict with its exported Learner
(export.pkl, `learn.export()`) on the CPU, without its training data (scripts/predict.py).

A classifier gives the top classes of each image; a U-Net gives a rock mask at the image's own size and an overlay.
"""
import pickle, types, warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data.images import check_image
from .io import read_json

__all__ = ['IMAGE_SUFFIXES', 'check_run_dir', 'run_task', 'image_files', 'check_image', 'load_exported',
           'predict_classes', 'predict_masks', 'overlay_mask']


IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp')


def check_run_dir(run_dir, need):
    """`run_dir` as a Path when it is a run folder holding `need` ('export.pkl' or 'model.pth'); otherwise a
    FileNotFoundError that says what it is instead (missing, a stage folder and its runs that have `need`, an
    unfinished run, a finished run without it) and where to look."""
    run = Path(run_dir)
    if not run.exists(): raise FileNotFoundError(f"{run}: no such run folder")
    if not run.is_dir(): raise FileNotFoundError(f"{run}: not a folder (expected a run folder such as "
                                                 f"results/stage4_final/<timestamp>/final-seed0)")
    if (run / need).is_file(): return run
    inside = sorted({p.parent.relative_to(run).as_posix() for pattern in (f'*/{need}', f'*/*/{need}')
                     for p in run.glob(pattern) if not any(s.startswith('.') for s in p.parent.relative_to(run).parts)})
    if inside:
        shown = ', '.join(inside[:8]) + (f" and {len(inside) - 8} more" if len(inside) > 8 else '')
        raise FileNotFoundError(f"{run}: not a run folder but holds runs with {need}: {shown} (pass one of them, "
                                f"e.g. {run / inside[0]})")
    beside = sorted(p.parent.name for p in run.parent.glob(f'*/{need}') if p.parent != run)
    others = (f"; runs beside it with {need}: {', '.join(beside[:8])}" if beside else
              "; no run beside it has one")
    if (run / 'config.json').is_file():
        if not (run / 'summary.json').is_file():
            when = 'when the run finishes' if need == 'export.pkl' else 'after its first epoch'
            raise FileNotFoundError(f"{run}: an unfinished run (no summary.json), without {need}: it is written {when}; "
                                    f"finish it with --resume{others}")
        raise FileNotFoundError(f"{run}: a finished run without {need}" +
                                (' (trained with export off)' if need == 'export.pkl' else '') + others)
    raise FileNotFoundError(f"{run}: not a run folder (no config.json, no {need}){others}")


def run_task(run_dir, learn=None):
    "'classify' or 'segment': from the run's config.json recipe, else from the exported model's class."
    config = Path(run_dir) / 'config.json'
    if config.is_file():
        arch = read_json(config).get('recipe', {}).get('arch')
        if arch: return 'classify' if arch == 'resnet' else 'segment'
    if learn is not None: return 'classify' if type(learn.model).__name__ == 'ResNet' else 'segment'
    raise ValueError(f"{run_dir}: no config.json to tell a classifier from a segmentation run")


def image_files(paths):
    """The image files named by `paths` (files, or folders: every image file directly in them, by name; '.'-files such
    as '._x.JPEG' and .DS_Store skipped), each once; FileNotFoundError for a missing path or a folder without images."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            inside = sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith('.')
                            and q.suffix.lower() in IMAGE_SUFFIXES)
            if not inside: raise FileNotFoundError(f"{p}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
            files += inside
        elif p.is_file(): files.append(p)
        else: raise FileNotFoundError(f"{p}: no such file or folder")
    return list(dict.fromkeys(files))


# Where the modules of runs exported before the lab's one import name (`fastai_lab`) live now: the longest prefix wins.
OLD_MODULES = {'lab.data': 'fastai_lab.data.loaders', 'lab.device_data': 'fastai_lab.data.cache', 'lab': 'fastai_lab',
               'arch': 'fastai_lab.arch', 'data': 'fastai_lab.data'}


def new_module(name):
    "The module that holds what `name` held in the lab's earlier layout (`OLD_MODULES`); other names as they are."
    for old in sorted(OLD_MODULES, key=len, reverse=True):
        if name == old or name.startswith(old + '.'): return OLD_MODULES[old] + name[len(old):]
    return name


class _Unpickler(pickle.Unpickler):
    """pickle's Unpickler that finds the lab's classes of an earlier layout in their modules of today (mapped first:
    from a checkout, `arch` may still import as a folder, and its classes would not be the lab's)."""
    def find_class(self, module, name): return super().find_class(new_module(module), name)


_PICKLE = types.SimpleNamespace(Unpickler=_Unpickler, load=lambda f, **kw: _Unpickler(f, **kw).load(),
                                __name__='pickle')


def load_exported(run_dir):
    "A run folder's exported Learner (export.pkl) on the CPU, its earlier layout's too; its data is not needed."
    from fastai.learner import load_learner
    path = check_run_dir(run_dir, 'export.pkl') / 'export.pkl'
    try:
        with warnings.catch_warnings():  # fastai warns that export.pkl is a pickle: it is the lab's own run
            warnings.filterwarnings('ignore', message='.*load_learner.*pickle', category=UserWarning)
            learn = load_learner(path, cpu=True, pickle_module=_PICKLE)
    except Exception as e:
        raise ValueError(f"{path}: cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         f"it needs the lab's code (fastai_lab) importable") from None
    learn.model.eval()
    return learn


def _outputs(learn, files):
    "The model's raw outputs for `files`, through the exported inference pipeline (resize, normalise), on the CPU."
    dl = learn.dls.test_dl([(str(f),) for f in files])
    outs = []
    with torch.no_grad():
        for batch in dl: outs.append(learn.model(batch[0]).float().cpu())
    return torch.cat(outs).as_subclass(torch.Tensor)


def predict_classes(learn, files, k=3):
    "Rows (file, top1, p1, ..., top`k`, p`k`): the `k` most probable classes of each image (softmax), best first."
    probs = torch.softmax(_outputs(learn, files), dim=1)
    vocab = list(learn.dls.vocab)
    top = probs.topk(min(k, probs.shape[1]), dim=1)
    rows = []
    for f, ps, idx in zip(files, top.values.tolist(), top.indices.tolist()):
        row = dict(file=str(f))
        for j in range(k):
            row[f'top{j + 1}'], row[f'p{j + 1}'] = (vocab[idx[j]], round(ps[j], 6)) if j < len(idx) else ('', None)
        rows.append(row)
    return rows


def predict_masks(learn, files, threshold=0.5, sizes=None):
    """Per file: (rock probability map at the image's own size (H, W) as a float array, its mask as uint8 0/255).
    `sizes`: the files' (width, height) when the caller has them from `check_image` already."""
    logits = _outputs(learn, files)
    results = []
    for f, lg, size in zip(files, logits, sizes or map(check_image, files)):
        w, h = size
        prob = F.interpolate(torch.sigmoid(lg)[None], size=(h, w), mode='bilinear', align_corners=False)[0, 0].numpy()
        results.append((prob, np.where(prob > threshold, 255, 0).astype(np.uint8)))
    return results


def overlay_mask(image_path, mask, colour=(255, 40, 0), alpha=0.5):
    "The image at `image_path` (RGB) with the pixels where `mask` > 0 tinted by `colour`, as a PIL image."
    from PIL import Image
    with Image.open(image_path) as im: rgb = np.asarray(im.convert('RGB'), dtype=np.float32)
    hit = mask > 0
    rgb[hit] = (1 - alpha) * rgb[hit] + alpha * np.asarray(colour, dtype=np.float32)
    return Image.fromarray(rgb.round().clip(0, 255).astype(np.uint8))
