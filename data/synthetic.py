"""Seeded procedural datasets in the real on-disk layouts (D3), for working without the real data.

`make_tiny_imagenet_like`: the Tiny ImageNet layout with classes that are shape families (circle, square, stripes...)
drawn with random colour, position, scale and rotation over cluttered, noisy backgrounds, plus a smaller distractor
shape of another family: learnable, but not in one epoch. `make_moon_like`: the moon layout with procedural lunar
renders and Kaggle-style RGB masks. Both write into a temporary folder and rename it when done, so a folder that
exists is complete; it holds `SYNTHETIC` (the generator and its arguments) and `.complete` markers.
"""
import json, os, shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['FAMILIES', 'make_tiny_imagenet_like', 'make_moon_like', 'SKY', 'SMALL_ROCK', 'LARGE_ROCK']

FAMILIES = ['circle', 'square', 'triangle', 'ring', 'cross', 'star', 'stripes', 'checker', 'dots', 'blobs',
            'hexagon', 'zigzag']
SKY, SMALL_ROCK, LARGE_ROCK = (226, 0, 0), (0, 255, 0), (0, 0, 255)  # Kaggle ground-mask colours; ground is black


@contextmanager
def _atomic_folder(root, generator, **kwargs):
    "Yield a temporary folder that becomes `root` (with its markers) only if the body finishes."
    root = Path(root)
    if root.exists(): raise FileExistsError(f"{root}: already exists (remove it to generate a new dataset there)")
    tmp = root.with_name(f'.{root.name}.partial-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        (tmp/'SYNTHETIC').write_text(json.dumps({'generator': generator, **kwargs}, indent=1) + '\n')
        (tmp/'.complete').touch()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try: tmp.rename(root)
    except OSError:  # another process finished the same folder first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root/'.complete').exists(): raise


# ----- Tiny ImageNet-like -------------------------------------------------------------------------------------------

def _place(u, v, a, cx, cy):
    "Points (u, v) of a shape's own frame -> image (x, y): rotated by `a`, centred at (cx, cy)."
    c, s = np.cos(a), np.sin(a)
    return list(zip(cx + c * u - s * v, cy + s * u + c * v))


def _polygon(n, r, a, cx, cy, jitter=0.0, aspect=1.0, rng=None):
    "Vertices of a regular n-gon of radius r (vertex radii jittered by +-`jitter`, v squeezed by `aspect`)."
    t = np.arange(n) * 2 * np.pi / n
    rr = r * (1 + rng.uniform(-jitter, jitter, n)) if jitter else r
    return _place(rr * np.cos(t), rr * np.sin(t) * aspect, a, cx, cy)


def _shape_mask(family, rng, hw, cx, cy, r, a):
    "Float (hw, hw) coverage mask of one shape of `family`, centred at (cx, cy), of radius r, rotated by a."
    im = Image.new('L', (hw, hw))
    d = ImageDraw.Draw(im)
    if family == 'circle': d.polygon(_polygon(40, r, a, cx, cy, aspect=rng.uniform(0.85, 1.15)), fill=255)
    elif family == 'square': d.polygon(_polygon(4, r, a, cx, cy, aspect=rng.uniform(0.8, 1.25)), fill=255)
    elif family == 'triangle': d.polygon(_polygon(3, r, a, cx, cy, jitter=0.12, rng=rng), fill=255)
    elif family == 'hexagon': d.polygon(_polygon(6, r, a, cx, cy, jitter=0.05, rng=rng), fill=255)
    elif family == 'ring':
        d.polygon(_polygon(40, r, a, cx, cy), fill=255)
        d.polygon(_polygon(40, r * rng.uniform(0.55, 0.75), a, cx, cy), fill=0)
    elif family == 'star':
        k = rng.integers(5, 7)
        rr = np.where(np.arange(2 * k) % 2, rng.uniform(0.35, 0.5), 1) * r
        t = np.arange(2 * k) * np.pi / k
        d.polygon(_place(rr * np.cos(t), rr * np.sin(t), a, cx, cy), fill=255)
    elif family == 'cross':
        w = r * rng.uniform(0.25, 0.4)
        for b in (a, a + np.pi / 2): d.polygon(_place(np.array([-r, r, r, -r]), np.array([-w, -w, w, w]), b, cx, cy),
                                               fill=255)
    elif family == 'blobs':
        for _ in range(rng.integers(3, 7)):
            q, t = rng.uniform(0, 0.6 * r), rng.uniform(0, 2 * np.pi)
            d.polygon(_polygon(24, r * rng.uniform(0.25, 0.45), 0, cx + q * np.cos(t), cy + q * np.sin(t)), fill=255)
    elif family == 'zigzag':
        n = rng.integers(3, 6)
        u, v = np.linspace(-r, r, n + 1), np.where(np.arange(n + 1) % 2, 1, -1) * r * rng.uniform(0.3, 0.6)
        d.line(_place(u, v, a, cx, cy), fill=255, width=max(2, int(r * 0.25)), joint='curve')
    else:  # textures inside a disk or a square patch: the pattern, not the outline, tells the class
        y, x = np.mgrid[:hw, :hw] + 0.5
        c, s = np.cos(a), np.sin(a)
        u, v = c * (x - cx) + s * (y - cy), -s * (x - cx) + c * (y - cy)
        region = (u**2 + v**2 < r**2) if rng.random() < 0.5 else (np.maximum(abs(u), abs(v)) < 0.85 * r)
        p = r * rng.uniform(0.25, 0.45)
        if family == 'stripes': pattern = (u / p) % 1 < 0.5
        elif family == 'checker': pattern = (np.floor(u / p) + np.floor(v / p)) % 2 == 0
        elif family == 'dots': pattern = ((u / p) % 1 - 0.5)**2 + ((v / p) % 1 - 0.5)**2 < 0.09
        else: raise ValueError(f"unknown shape family {family!r}: expected one of {FAMILIES}")
        return (region & pattern).astype(np.float32)
    return np.asarray(im, dtype=np.float32) / 255


def _smooth_noise(rng, shape, cells):
    "Low-frequency noise in [0, 1]: a cells x cells random grid upsampled bicubically to `shape` (h, w)."
    grid = Image.fromarray(rng.random((cells, cells)).astype(np.float32))  # mode 'F'
    return np.asarray(grid.resize(shape[::-1], Image.BICUBIC)).clip(0, 1)


def _paint(img, mask, colour):
    "Blend `colour` into `img` with coverage `mask`, in place, only where the mask is (clutter is small)."
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows): return
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    m = mask[box][..., None]
    img[box] = img[box] * (1 - m) + m * np.asarray(colour, np.float32)


def _tiny_image(rng, family, size):
    "One (uint8 HxWx3 image, box) of class `family`: drawn at 2x size and box-downsampled, for anti-aliased edges."
    hw = 2 * size
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ramp = np.linspace(0, 1, hw)[:, None] if rng.random() < 0.5 else np.linspace(0, 1, hw)[None, :]
    img = np.broadcast_to(c1 + (c2 - c1) * ramp[..., None] * rng.uniform(0, 1), (hw, hw, 3)).astype(np.float32)
    img += (_smooth_noise(rng, (hw, hw), 4)[..., None] - 0.5) * rng.uniform(0, 120, 3).astype(np.float32)
    for _ in range(rng.integers(2, 8)):  # clutter: faint small shapes
        cx, cy = rng.uniform(0, hw, 2)
        m = _shape_mask(rng.choice(['circle', 'square', 'triangle']), rng, hw, cx, cy, rng.uniform(0.03, 0.1) * hw,
                        rng.uniform(0, np.pi))
        _paint(img, m * rng.uniform(0.2, 0.6), rng.uniform(0, 255, 3))
    r = rng.uniform(0.18, 0.38) * hw
    cx, cy = rng.uniform(r * 0.7, hw - r * 0.7, 2)
    if rng.random() < 0.5:  # a distractor of another family, smaller than the object
        other = rng.choice([f for f in FAMILIES if f != family])
        dx, dy = rng.uniform(0, hw, 2)
        _paint(img, _shape_mask(other, rng, hw, dx, dy, r * rng.uniform(0.35, 0.6), rng.uniform(0, 2 * np.pi)) *
               rng.uniform(0.5, 1), rng.uniform(0, 255, 3))
    fg = rng.uniform(0, 255, 3)
    if abs(fg - img.mean((0, 1))).sum() < 150: fg = 255 - fg  # keep the object visible against its background
    m = _shape_mask(family, rng, hw, cx, cy, r, rng.uniform(0, 2 * np.pi))
    _paint(img, m, fg)
    img = img.reshape(size, 2, size, 2, 3).mean((1, 3)) + rng.normal(0, rng.uniform(3, 18), (size, size, 3))
    ys, xs = np.nonzero(m.reshape(size, 2, size, 2).max((1, 3)) > 0.5)
    box = (xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else (0, 0, size - 1, size - 1)
    return img.clip(0, 255).astype(np.uint8), box


def make_tiny_imagenet_like(root, n_classes=10, n_train=500, n_val=50, size=64, seed=0):
    """Write a Tiny ImageNet-layout dataset of `n_classes` procedural shape classes to `root` and return it.

    `n_train` train and `n_val` val images per class; 2% of the images are saved grayscale, like the real set."""
    if not 1 <= n_classes <= len(FAMILIES):
        raise ValueError(f"n_classes={n_classes}: the generator has 1..{len(FAMILIES)} shape families")
    rng = np.random.default_rng(seed)
    wnids = [f'n9{k:07d}' for k in range(n_classes)]
    root = Path(root)
    with _atomic_folder(root, 'make_tiny_imagenet_like', n_classes=n_classes, n_train=n_train, n_val=n_val,
                        size=size, seed=seed) as tmp:
        (tmp/'wnids.txt').write_text(''.join(f'{w}\n' for w in wnids))
        (tmp/'words.txt').write_text(''.join(f'{w}\t{f}, synthetic shape class\n' for w, f in zip(wnids, FAMILIES)))

        def save(label, path, k):
            arr, box = _tiny_image(rng, FAMILIES[label], size)
            im = Image.fromarray(arr)
            (im.convert('L') if k % 50 == 7 else im).save(path, quality=90)
            return '\t'.join(map(str, box))

        for label, w in enumerate(wnids):
            (tmp/'train'/w/'images').mkdir(parents=True)
            boxes = [f'{w}_{k}.JPEG\t' + save(label, tmp/'train'/w/'images'/f'{w}_{k}.JPEG', k) for k in range(n_train)]
            (tmp/'train'/w/f'{w}_boxes.txt').write_text('\n'.join(boxes) + '\n')
        (tmp/'val'/'images').mkdir(parents=True)
        labels = rng.permutation(np.repeat(np.arange(n_classes), n_val))  # the real val split interleaves classes
        ann = [f'val_{k}.JPEG\t{wnids[y]}\t' + save(y, tmp/'val'/'images'/f'val_{k}.JPEG', k)
               for k, y in enumerate(labels)]
        (tmp/'val'/'val_annotations.txt').write_text('\n'.join(ann) + '\n')
    return root


# ----- moon-like ----------------------------------------------------------------------------------------------------

def _moon_frame(rng, width, height):
    "One (render uint8 HxWx3, Kaggle mask uint8 HxWx3)."
    h, w = height, width
    waves = [(rng.uniform(0, 0.03), rng.uniform(0.3, 1.5) * w, rng.uniform(0, 2 * np.pi)) for _ in range(2)]
    horizon = h * (rng.uniform(0.22, 0.45) + sum(a * np.sin(2 * np.pi * np.arange(w) / p + ph) for a, p, ph in waves))
    yy = np.arange(h)[:, None]
    sky = yy < horizon[None, :]
    depth = np.clip((yy - horizon[None, :]) / (h - horizon[None, :]), 0, 1)  # 0 at the horizon, 1 at the bottom
    tex = sum(a * _smooth_noise(rng, (h, w), c) for a, c in ((0.5, 6), (0.3, 16), (0.2, 48)))
    ground = rng.uniform(0.3, 0.5) * (0.75 + 0.5 * tex) * (0.8 + 0.3 * depth) + rng.normal(0, 0.03, (h, w))
    img = np.where(sky, rng.uniform(0, 0.04) + rng.normal(0, 0.005, (h, w)), ground)
    mask = np.zeros((h, w, 3), np.uint8)
    mask[sky] = SKY
    sun = rng.choice([-1, 1]) * rng.uniform(0.4, 1)  # light from the left (<0) or right, low over the horizon
    light = np.array([sun, -0.3, rng.uniform(0.3, 0.8)]); light /= np.linalg.norm(light)
    n_rocks = rng.integers(8, 30)
    ys = np.sort(rng.uniform(0, 1, n_rocks) ** 0.7)  # far to near, so nearer rocks are drawn over farther ones
    for t in ys:
        cx = rng.uniform(0, w)
        cy = horizon[int(cx)] + t * (h - horizon[int(cx)])
        size = min(rng.pareto(2.5) * 0.02 + 0.01, 0.12)  # physical size: mostly pebbles, a few boulders
        rx = size * w * (0.15 + t); ry = rx * rng.uniform(0.45, 0.8)
        if rx < 1: continue
        sx, sy = cx - sun * rx * 1.2, cy + ry * 0.3  # the shadow falls away from the sun
        x0, x1 = int(max(0, min(cx, sx) - 2.5 * rx)), int(min(w, max(cx, sx) + 2.5 * rx))
        y0, y1 = int(max(0, cy - 1.5 * ry)), int(min(h, cy + 1.5 * ry))
        if x0 >= x1 or y0 >= y1: continue
        gy, gx = np.mgrid[y0:y1, x0:x1] + 0.5
        shadow = ((gx - sx) / (rx * 1.6))**2 + ((gy - sy) / (ry * 0.8))**2 < 1
        img[y0:y1, x0:x1][shadow] *= rng.uniform(0.3, 0.5)
        u, v = (gx - cx) / rx, (gy - cy) / ry
        theta = np.arctan2(v, u)  # a lumpy outline: the radius wobbles with the angle
        rad2 = (1 + sum(rng.uniform(0, 0.1) * np.sin(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)))**2
        rock = u**2 + v**2 < rad2
        nz = np.sqrt(np.clip(1 - (u**2 + v**2) / rad2, 0, 1))
        shade = np.clip(u * light[0] + v * light[1] + nz * light[2], 0, 1)
        albedo = rng.uniform(0.4, 0.7)
        img[y0:y1, x0:x1][rock] = (0.05 + albedo * shade + rng.normal(0, 0.03, shade.shape))[rock]
        mask[y0:y1, x0:x1][rock] = LARGE_ROCK if size > 0.03 else SMALL_ROCK
    render = np.repeat(img.clip(0, 1)[..., None], 3, axis=2) * rng.uniform(0.95, 1.0, 3) * 255
    return render.astype(np.uint8), mask


def make_moon_like(root, n=200, width=360, height=240, seed=0):
    "Write `n` procedural lunar frames in the moon layout (renders + Kaggle-style RGB ground masks) to `root`."
    rng = np.random.default_rng(seed)
    root = Path(root)
    with _atomic_folder(root, 'make_moon_like', n=n, width=width, height=height, seed=seed) as tmp:
        for sub in ('render', 'ground'): (tmp/'images'/sub).mkdir(parents=True)
        for k in range(1, n + 1):
            render, mask = _moon_frame(rng, width, height)
            # compress_level=1: a third of the default's time for files 5% larger
            Image.fromarray(render).save(tmp/'images'/'render'/f'render{k:04d}.png', compress_level=1)
            Image.fromarray(mask).save(tmp/'images'/'ground'/f'ground{k:04d}.png', compress_level=1)
    return root
