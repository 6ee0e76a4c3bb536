"""U-Nets for binary segmentation (T3.2, T3.3): a hand-written `UNet` and a `BackboneUNet` on a `ResNet`'s stages.

Both return **1 channel of logits** at the input's size: train them with `BCEWithLogits`/Dice on logits
(`lab.losses.BCEDiceLoss`) and apply the sigmoid only to predict; the loss's `activation` does that for
fastai's `get_preds`/`show_results`.

Written by hand rather than with fastai's `unet_learner`/`DynamicUnet`: on the (32, 64, 128, 256) '3x3s2' ResNet
it builds 7,545,804 parameters (a 4.75M decoder) and, taking skips only where the resolution changes, has
3 up levels, not 4.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from fastai.torch_core import params

from .layers import make_activation, count_params, check_budget
from .resnet import ResNet, conv_bn

__all__ = ['UNet', 'BackboneUNet', 'UpBlock', 'unet_widths', 'unet_splitter', 'backbone_unet_splitter']


def conv_bn_act(in_ch, out_ch, kernel_size=3, stride=1, act='relu'):
    "Conv (no bias) -> BatchNorm -> activation."
    return nn.Sequential(*conv_bn(in_ch, out_ch, kernel_size, stride), make_activation(act))


def double_conv(in_ch, out_ch, stride=1, act='relu'):
    "The U-Net block: (conv3x3 -> BN -> act) x 2; `stride` applies to the first conv."
    return nn.Sequential(conv_bn_act(in_ch, out_ch, 3, stride, act), conv_bn_act(out_ch, out_ch, 3, 1, act))


def resize(x, size):
    "`x` at spatial `size`: average-pooled when shrinking, bilinear-interpolated when growing, as is when equal."
    size = tuple(size)
    if tuple(x.shape[-2:]) == size: return x
    if all(s >= t for s, t in zip(x.shape[-2:], size)): return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


def unet_widths(base=32, depth=4, width_cap=144):
    "Channels of each level, input level to bottleneck: `base` doubled at every level, capped at `width_cap`."
    return [min(base * 2 ** i, width_cap) for i in range(depth + 1)]


class UpBlock(nn.Module):
    """One decoder level: upsample `x` to the skip's size, concatenate the skip, `double_conv`.

    Args:
        in_ch: channels of `x`, the deeper level's output.
        out_ch: channels of the skip and of the block's output.
        act: activation name (relu, leakyrelu, elu, gelu).
        up: 'transpose' (ConvTranspose2d k2 s2) or 'bilinear' (bilinear x2 then conv1x1, fewer parameters).
    """
    def __init__(self, in_ch, out_ch, act='relu', up='transpose'):
        super().__init__()
        if up == 'transpose': self.up = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        elif up == 'bilinear':
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False),
                                    nn.Conv2d(in_ch, out_ch, 1))
        else: raise ValueError(f"up={up!r}: expected 'transpose' or 'bilinear'")
        self.conv = double_conv(2 * out_ch, out_ch, act=act)

    def forward(self, x, skip):
        # Odd sizes upsample one pixel short of the skip: resize rather than crop.
        return self.conv(torch.cat([skip, resize(self.up(x), skip.shape[-2:])], dim=1))


class UNet(nn.Module):
    """U-Net with `depth` down / `depth` up levels and concatenated skips (T3.2).

    Args:
        in_ch: input image channels.
        base: channels of the first level; each deeper level doubles them up to `width_cap`.
        depth: number of down-samplings (and of up-samplings and skips); T3.2 asks for 4.
        act: activation name for every block (relu, leakyrelu, elu, gelu).
        down: 'maxpool' (MaxPool2d(2) before each deeper level) or 'stride' (the level's first conv has
            stride 2); both have the same parameters.
        up: 'transpose' or 'bilinear', see `UpBlock`.
        width_cap: widest level. The classic doubling at base 32 (32-64-128-256-512) has 7.8M parameters; 128 px
            inputs leave the 16x16 and 8x8 levels little to see, so the width stops growing there instead:
            144 is the widest multiple of 16 that keeps the default model under 2.5M (32-64-128-144-144,
            2,354,353 parameters; 'bilinear' 2,206,129; 2.08M with 128).
        max_params, max_width: the budget checked at construction (T3.2: ~2.5M +-10%, so 2.75M; T2.4: 512).

    Levels: `encoder[0]` (full size) ... `encoder[depth]` (the bottleneck, 1/2**depth). `decoder[j]` runs
    j-th, deepest first, and takes the skip of `encoder[depth - 1 - j]`. `head` is a 1x1 conv to 1 logit.
    """
    def __init__(self, in_ch=3, base=32, depth=4, act='relu', down='maxpool', up='transpose', width_cap=144,
                 max_params=2_750_000, max_width=512):
        super().__init__()
        if down not in ('maxpool', 'stride'): raise ValueError(f"down={down!r}: expected 'maxpool' or 'stride'")
        self.widths = unet_widths(base, depth, width_cap)
        levels = []
        for i, (c_in, c_out) in enumerate(zip([in_ch, *self.widths], self.widths)):
            if i == 0: levels.append(double_conv(c_in, c_out, act=act))
            elif down == 'stride': levels.append(double_conv(c_in, c_out, stride=2, act=act))
            else: levels.append(nn.Sequential(nn.MaxPool2d(2), double_conv(c_in, c_out, act=act)))
        self.encoder = nn.ModuleList(levels)
        deepest_first = self.widths[::-1]
        self.decoder = nn.ModuleList(UpBlock(c_in, c_out, act, up) for c_in, c_out in
                                     zip(deepest_first, deepest_first[1:]))
        self.head = nn.Conv2d(self.widths[0], 1, 1)
        self.n_params = check_budget(self, max_params or float('inf'), max_width, name=f'UNet{tuple(self.widths)}')

    def forward(self, x):
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        x = skips.pop()
        for up, skip in zip(self.decoder, reversed(skips)): x = up(x, skip)
        return self.head(x)


class BackboneUNet(nn.Module):
    """U-Net whose encoder is a `ResNet` classifier's stem and conv stages (head and GAP dropped) (T3.3).

    Args:
        encoder: the classifier; its `stem` and `stages` become `self.encoder` (shared, not copied), so weights
            loaded into either model are seen by both. Its `head` is not kept.
        decoder_channels: width of each decoder level, full size first, one per stage; None takes the
            `UNet`'s schedule (32-64-128-144 for 4 stages), so that T3.2 and T3.3 differ only in the encoder.
        act: activation name of the adapters and decoder.
        up: 'transpose' or 'bilinear', see `UpBlock`.
        max_decoder_params: budget of everything but the encoder (adapters, decoder, head); the total is checked
            against the encoder's parameters plus this (the encoder itself was checked at <= 5M as a classifier).
        max_width: widest layer allowed (T2.4).

    Levels: the encoder's features are [stem, layer1, ..., layerN]. Decoder level i (i < N) runs at 1/2**i of
    the input and takes feature i as its skip; the last stage, layerN, is the bottleneck at 1/2**N. Each skip
    goes through a 1x1 adapter (conv-BN-act) to the level's width, then is resized to the level's size:
    bilinear when smaller, average-pooled when larger. With the '3x3s2' stem (reductions 2, 2, 4, 8, 16) only
    the stem's output moves (1/2 -> full size); with '3x3' (1, 1, 2, 4, 8) every stage is pooled one level
    down; with '7x7' (4, 4, 8, 16, 32) every feature is upsampled one level, the stem's two.

    Frozen encoder (variant A): `learn.freeze()` on a Learner made with `train_bn=False` turns off the encoder's
    gradients, BN affine parameters included; `train()` then keeps the encoder in eval mode, so its BN running
    statistics do not move either. `learn.unfreeze()` gives the encoder back to training (variant B).
    """
    def __init__(self, encoder: ResNet, decoder_channels=None, act='relu', up='transpose',
                 max_decoder_params=2_000_000, max_width=512):
        super().__init__()
        n = len(encoder.stages)
        self.encoder = nn.ModuleDict({'stem': encoder.stem,
                                      **{f'layer{i + 1}': stage for i, stage in enumerate(encoder.stages)}})
        self.decoder_channels = list(decoder_channels or unet_widths(depth=n)[:n])
        if len(self.decoder_channels) != n:
            raise ValueError(f"decoder_channels={decoder_channels}: expected {n} widths, one per encoder stage")
        feat_ch = encoder.feature_channels
        self.adapters = nn.ModuleList(conv_bn_act(c, d, 1, act=act) for c, d in zip(feat_ch, self.decoder_channels))
        deepest_first = self.decoder_channels[::-1]
        self.decoder = nn.ModuleList(UpBlock(c_in, c_out, act, up) for c_in, c_out in
                                     zip([feat_ch[-1], *deepest_first], deepest_first))
        self.head = nn.Conv2d(self.decoder_channels[0], 1, 1)
        self.n_params = check_budget(self, count_params(self.encoder) + max_decoder_params, max_width,
                                     name=f'BackboneUNet{tuple(encoder.channels)}->{tuple(self.decoder_channels)}')

    @property
    def encoder_frozen(self):
        "True when no encoder parameter requires a gradient (after fastai's `freeze()` with `train_bn=False`)."
        return not any(p.requires_grad for p in self.encoder.parameters())

    def train(self, mode=True):
        super().train(mode)
        # A frozen encoder must not update its BN running statistics either.
        if mode and self.encoder_frozen: self.encoder.eval()
        return self

    def forward(self, x):
        h, w = x.shape[-2:]
        level_size = lambda i: (-(-h // 2 ** i), -(-w // 2 ** i))  # rounded up, as stride-2 convs round
        skips = []
        for block in self.encoder.values():
            x = block(x)
            skips.append(x)
        x = resize(skips.pop(), level_size(len(skips)))
        for i, up in zip(reversed(range(len(skips))), self.decoder):
            x = up(x, resize(self.adapters[i](skips[i]), level_size(i)))
        return self.head(x)


def unet_splitter(model):
    "fastai parameter groups [encoder, rest (adapters, decoder, head)]: `freeze()` trains the rest only."
    rest = [p for name, m in model.named_children() if name != 'encoder' for p in m.parameters()]
    return [params(model.encoder), rest]


# The same two groups; `lr_max=slice(lo, hi)` gives the encoder `lo` and the rest `hi`.
backbone_unet_splitter = unet_splitter


