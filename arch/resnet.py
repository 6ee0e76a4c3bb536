"""A configurable ResNet (BasicBlock family) for small images, in the shape of timm's `models/resnet.py`.

`ResNet(channels=(64, 128, 256, 512), blocks=(2, 2, 2, 2), stem='7x7')` is ResNet18 and has exactly the
parameters of `timm.create_model('resnet18', num_classes=10)`; the lab's defaults are sized for 64 px
Tiny ImageNet and the <= 5M parameter, <= 512 channel budget (T2.4).
"""
import torch.nn as nn
from fastai.torch_core import params

from .layers import make_activation, check_budget

__all__ = ['BasicBlock', 'ResNet', 'resnet_splitter', 'STEMS']

STEMS = ('3x3', '3x3s2', '7x7')


def conv_bn(in_ch, out_ch, kernel_size=3, stride=1):
    "Conv (no bias, BN follows) -> BatchNorm."
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    """Conv3x3(stride) -> BN -> act -> Conv3x3 -> BN -> (+ skip) -> act (T2.2).

    Args:
        in_ch: input channels.
        out_ch: output channels.
        stride: stride of the first conv (2 halves the resolution).
        act: activation name, built by `make_activation` (relu, leakyrelu, elu, gelu).
    The skip is Conv1x1(stride) + BN when the shape changes, the identity otherwise.
    """
    def __init__(self, in_ch, out_ch, stride=1, act='relu'):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = make_activation(act)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = conv_bn(in_ch, out_ch, 1, stride) if stride != 1 or in_ch != out_ch else nn.Identity()
        self.act2 = make_activation(act)

    def forward(self, x):
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + self.downsample(x))


class ResNet(nn.Module):
    """ResNet of `BasicBlock`s: stem -> layer1..layerN -> AdaptiveAvgPool(1) -> Flatten -> Linear (T2.3).

    Args:
        channels: output channels of each stage; 3 or 4 stages (e.g. (32, 64, 128, 256) or (64, 128, 256)).
        blocks: BasicBlocks per stage, same length as `channels`.
        act: activation name for every block and the stem (relu, leakyrelu, elu, gelu).
        stem: '3x3' (conv 3x3 s1, for 64 px), '3x3s2' (conv 3x3 s2, for 128 px) or '7x7' (conv 7x7 s2 + max-pool).
        n_classes: outputs of the final Linear layer.
        in_ch: input image channels.
        drop: dropout before the final Linear layer (0 disables it).
        zero_init_last: start each block's last BN at zero, so every block begins as the identity (as timm does).
        max_params, max_width: the budget (T2.4) checked at construction; None disables a limit.
    Stage 1 keeps the stem's resolution, each later stage halves it with a stride-2 first block.
    """
    def __init__(self, channels=(32, 64, 128, 256), blocks=(2, 2, 2, 2), act='relu', stem='3x3', n_classes=10,
                 in_ch=3, drop=0.0, zero_init_last=True, max_params=5_000_000, max_width=512):
        super().__init__()
        channels, blocks = tuple(channels), tuple(blocks)
        if len(channels) not in (3, 4):
            raise ValueError(f"channels={channels}: expected 3 or 4 stages")
        if len(blocks) != len(channels) or min(blocks) < 1:
            raise ValueError(f"blocks={blocks}: expected {len(channels)} positive counts, one per stage of channels={channels}")
        if stem not in STEMS:
            raise ValueError(f"stem={stem!r}: expected one of {STEMS}")
        self.channels, self.blocks, self.act_name, self.stem_kind = channels, blocks, act, stem
        c0 = channels[0]
        if stem == '7x7':
            self.stem = nn.Sequential(*conv_bn(in_ch, c0, 7, 2), make_activation(act), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(*conv_bn(in_ch, c0, 3, 2 if stem == '3x3s2' else 1), make_activation(act))
        in_c = c0
        for i, (c, n) in enumerate(zip(channels, blocks)):
            stage = [BasicBlock(in_c if j == 0 else c, c, 2 if (i > 0 and j == 0) else 1, act) for j in range(n)]
            setattr(self, f'layer{i + 1}', nn.Sequential(*stage))
            in_c = c
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  *([nn.Dropout(drop)] if drop else []), nn.Linear(in_c, n_classes))
        self._init_weights(zero_init_last)
        self.n_params = check_budget(self, max_params or float('inf'), max_width, name=f'ResNet{channels}x{blocks}')

    @property
    def stages(self):
        "The conv stages layer1..layerN, in order."
        return [getattr(self, f'layer{i + 1}') for i in range(len(self.channels))]

    @property
    def feature_channels(self):
        "Channels of the stem's and each stage's output, as `features` returns them."
        return [self.channels[0], *self.channels]

    @property
    def feature_reductions(self):
        "How many times smaller than the input each of `features`' maps is."
        r = {'3x3': 1, '3x3s2': 2, '7x7': 4}[self.stem_kind]
        return [r] + [r * 2 ** i for i in range(len(self.channels))]

    def features(self, x):
        "The stem's output and every stage's output: the encoder view used by the U-Nets."
        feats = [self.stem(x)]
        for stage in self.stages: feats.append(stage(feats[-1]))
        return feats

    def forward(self, x):
        return self.head(self.features(x)[-1])

    def _init_weights(self, zero_init_last):
        for m in self.modules():
            if isinstance(m, nn.Conv2d): nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, BasicBlock): nn.init.zeros_(m.bn2.weight)


def resnet_splitter(model):
    "fastai parameter groups: stem, each stage, head; `freeze()` then trains only the head."
    return [params(model.stem), *[params(s) for s in model.stages], params(model.head)]
