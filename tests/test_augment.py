"Augmentation presets: PadCrop (vectorised reflect-pad + random crop) and the named batch-transform lists."
import pytest
import torch
import torch.nn.functional as F
from fastai.vision.all import Brightness, Flip, IntToFloatTensor, Pipeline, TensorCategory, TensorImage, TensorMask

from fastai_lab.data.augment import AUGMENTATIONS, PadCrop, augment_tfms


def images(n=6, h=20, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorImage(torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8))


def test_padcrop_is_a_reflect_pad_and_crop_per_image():
    x = images()
    tfm = PadCrop(8)
    torch.manual_seed(0)
    out = tfm(x, split_idx=0)
    assert type(out) is TensorImage and out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x.float(), (8, 8, 8, 8), mode='reflect')
    for i, (dy, dx) in enumerate(tfm.offs.tolist()):
        assert -8 <= dy <= 8 and -8 <= dx <= 8
        assert torch.equal(out[i].float(), padded[i, :, 8 + dy:8 + dy + 20, 8 + dx:8 + dx + 24])


def test_padcrop_offsets_differ_between_images_and_follow_torch_seed():
    x = TensorImage(images(1).repeat(16, 1, 1, 1))  # one image 16 times: any difference comes from the offsets
    torch.manual_seed(1)
    a = PadCrop(8)(x, split_idx=0)
    assert len({tuple(o.flatten().tolist()) for o in a}) > 8
    torch.manual_seed(1)
    assert torch.equal(a, PadCrop(8)(x, split_idx=0))
    torch.manual_seed(2)
    assert not torch.equal(a, PadCrop(8)(x, split_idx=0))


def test_padcrop_leaves_valid_split_masks_labels_and_pad_0_alone():
    x, mask, y = images(), TensorMask(torch.randint(0, 2, (6, 20, 24))), TensorCategory(torch.arange(6))
    torch.manual_seed(0)
    out, out_mask, out_y = PadCrop(8)((x, mask, y), split_idx=0)
    assert not torch.equal(out, x) and out_mask is mask and out_y is y
    assert PadCrop(8)(x, split_idx=1) is x  # valid split
    assert torch.equal(PadCrop(0)(x, split_idx=0), x)
    with pytest.raises(ValueError, match=r'PadCrop\(pad=20\): expected pad smaller than the 20x24 images'):
        PadCrop(20)(x, split_idx=0)


def test_padcrop_in_a_pipeline_runs_on_uint8_before_the_float_conversion():
    pipe = Pipeline([IntToFloatTensor(), *augment_tfms('padcrop')])
    assert [type(f) for f in pipe.fs] == [PadCrop, IntToFloatTensor, Flip]
    x = images(h=8, w=8)  # smaller than the pad: fine on the valid split, which PadCrop does not touch
    pipe.split_idx = 1
    state = torch.get_rng_state()
    # fastai's Flip resamples on the valid split too (identity grid), hence allclose.
    assert torch.allclose(pipe(x), x.float() / 255, atol=1e-5) and torch.equal(torch.get_rng_state(), state)
    x = images()
    pipe.split_idx = 0
    torch.manual_seed(0)
    assert not torch.allclose(pipe(x), x.float() / 255, atol=1e-2)


def settings(name):
    "(what, its parameters) of each random draw of a preset: fastai merges the affine and the lighting transforms."
    res = []
    for f in augment_tfms(name):
        parts = getattr(f, 'aff_fs', None) or (f.fs if hasattr(f, 'max_lighting') else [])
        res += [(getattr(p, 'func', p).__name__ if hasattr(p, 'func') else type(p).__name__,
                 {k: v for k, v in (p.keywords if hasattr(p, 'func') else vars(p)).items()
                  if k in ('p', 'max_deg', 'min_zoom', 'max_zoom', 'max_lighting')})
                for p in parts] or [(type(f).__name__, {'pad': f.pad})]
    return res


def test_presets_and_their_transforms():
    assert list(AUGMENTATIONS) == ['none', 'flip', 'light', 'padcrop', 'rrc', 'seg']
    assert augment_tfms('none') == []
    flip = ('flip_mat', {'p': 0.5})
    assert settings('flip') == [flip]
    assert settings('padcrop') == [('PadCrop', {'pad': 8}), flip]
    rrc = augment_tfms('rrc', min_scale=0.5)
    assert [type(f).__name__ for f in rrc] == ['BatchRandomResizedCrop', 'Flip'] and rrc[0].min_scale == 0.5
    assert augment_tfms('rrc')[0].min_scale == 0.35
    rotate_zoom = lambda deg: [('rotate_mat', {'max_deg': deg, 'p': 0.75}),
                               ('zoom_mat', {'min_zoom': 1.0, 'max_zoom': 1.1, 'p': 0.75})]
    light, seg = settings('light'), settings('seg')
    assert light[:3] == [flip, *rotate_zoom(10)] and seg[:3] == [flip, *rotate_zoom(5)]
    lighting = lambda p: [(n, {'max_lighting': 0.2, 'p': p}) for n in ('_BrightnessLogit', '_ContrastLogit')]
    assert light[3:] == lighting(0.5) and seg[3:] == lighting(0.75)  # p_lighting=0.5 for Tiny ImageNet
    assert [type(f) for f in augment_tfms('light')] == [Flip, Brightness]  # brightness and contrast merged
    assert augment_tfms('flip', size=48)[0].size == 48 and augment_tfms('flip')[0].size is None
    with pytest.raises(ValueError, match=r"^augment 'x': expected one of none, flip, light, padcrop, rrc, seg$"):
        augment_tfms('x')


def test_seg_preset_moves_masks_with_their_images():
    # Left third bright with a matching mask: after flips/rotations/zooms the mask must still cover the bright pixels.
    x = torch.zeros(8, 3, 32, 32)
    x[..., :11] = 1.
    mask = TensorMask((x[:, 0] > 0.5).long())
    torch.manual_seed(0)
    out, out_mask = Pipeline(augment_tfms('seg'), split_idx=0)((TensorImage(x), mask))
    assert type(out_mask) is TensorMask and out_mask.shape == mask.shape
    bright = out[:, 0] > out[:, 0].mean((1, 2), keepdim=True)  # brightness/contrast change the level, not the side
    assert (bright == out_mask.bool()).float().mean() > 0.9
    assert not torch.equal(out_mask, mask)  # something moved
