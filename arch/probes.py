"""Task 1 probe networks: weight variance through a 5-layer net (T1.1) and gradients through depth (T1.3).

`VarianceProbeNet` has exactly five weighted layers (3x3 convs, stride 2, no bias) and a global average pool,
so a `(B, 3, H, W)` image becomes `(B, 512, 1, 1)`. Its weights are set by `standardised_init_`: each layer's
tensor is drawn from a normal and then shifted and rescaled so that its *empirical* variance (`w.var()`, as
measured on the actual weights) equals its target exactly. Layers 2-4 share a width, hence a fan-in, and the
base target is Kaiming's ``gain**2 / fan_in`` (gain sqrt(2) for ReLU); layer 3 gets `layer3_ratio` times it.
`VarianceProbeNet(layer3_ratio=1)` is the control twin: with the same seed it draws the same standardised
tensors, so the two nets differ only in the scale of layer 3.

`DeepConvReLU` alternates `Conv2d` and `ReLU` (`depth` of each) and maps `(B, 3, 8*2**n_down, same)` to
`(B, 64, 8, 8)`; its `init` picks PyTorch's default initialisation or a scaled Kaiming one.
"""
import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn

from .layers import make_activation

__all__ = ['standardised_init_', 'VarianceProbeNet', 'DeepConvReLU', 'init_convs', 'weighted_layers',
           'weight_variances', 'activation_profile', 'ks_distance']


def weighted_layers(model, types=(nn.Conv2d, nn.Linear)):
    "The `(name, module)` pairs of `model`'s layers of `types` that hold a weight, in forward-definition order."
    return [(n, m) for n, m in model.named_modules() if isinstance(m, types) and getattr(m, 'weight', None) is not None]


@torch.no_grad()
def standardised_init_(weight, var, generator=None):
    "Fill `weight` with a normal draw rescaled so that `weight.var()` is exactly `var` and its mean exactly 0."
    w = torch.randn(weight.shape, generator=generator, dtype=torch.float64)
    w = (w - w.mean()) / w.std() * math.sqrt(var)   # done in float64 so the float32 result is exact to ~1e-7
    return weight.copy_(w.to(weight.dtype))


@torch.no_grad()
def weight_variances(model, unbiased=True):
    "Empirical variance of each weighted layer's weight tensor, as `{name: float}` (computed in float64)."
    return {n: m.weight.double().var(unbiased=unbiased).item() for n, m in weighted_layers(model)}


class VarianceProbeNet(nn.Module):
    """Five stride-2 3x3 convs (each followed by `act`) and a global average pool: image -> `(B, out_channels, 1, 1)`.

    Weighted layers `conv1`..`conv5` have widths `in_channels -> width -> width -> width -> width -> out_channels`.
    Initialisation (`standardised_init_`, exact on the actual weights): conv2 and conv4 get variance
    `v = gain**2 / (width*9)`, conv3 gets `layer3_ratio * v`, conv1 and conv5 get Kaiming's `gain**2 / fan_in`.
    There are no biases, so the weights alone set the activation scale.
    """
    def __init__(self,
                 layer3_ratio=2.0,    # weight variance of conv3 over that of conv2 and conv4 (1.0: the control twin)
                 in_channels=3,       # image channels
                 width=64,            # channels of conv1..conv4 (conv2-4 thus share one fan-in)
                 out_channels=512,    # channels of conv5, hence of the pooled output
                 gain=math.sqrt(2),   # Kaiming gain for the base variance (sqrt(2) suits ReLU)
                 act='relu',          # activation after every conv (see `arch.layers.make_activation`)
                 seed=0):             # seed of the weight draw: same seed, same standardised tensors
        super().__init__()
        widths = [in_channels, width, width, width, width, out_channels]
        self.layer3_ratio, self.gain = float(layer3_ratio), float(gain)
        self.convs = nn.ModuleList(nn.Conv2d(ci, co, 3, stride=2, padding=1, bias=False)
                                   for ci, co in zip(widths[:-1], widths[1:]))
        self.acts = nn.ModuleList(make_activation(act) for _ in self.convs)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reset_weights(seed)

    def target_variances(self):
        "The variance each conv is initialised to: Kaiming for conv1/conv5, `v, ratio*v, v` for conv2-4."
        fan_in = [c.in_channels * c.kernel_size[0] * c.kernel_size[1] for c in self.convs]
        v = [self.gain ** 2 / f for f in fan_in]
        v[2] *= self.layer3_ratio
        return v

    def reset_weights(self, seed=0):
        "Redraw all weights from `seed` with `standardised_init_` (same seed -> same tensors up to layer 3's scale)."
        g = torch.Generator().manual_seed(seed)
        for conv, var in zip(self.convs, self.target_variances()): standardised_init_(conv.weight, var, g)
        return self

    def forward_layers(self, x):
        "The post-activation output of each of the 5 layers, then the pooled `(B, C, 1, 1)` output."
        outs = []
        for conv, act in zip(self.convs, self.acts):
            x = act(conv(x)); outs.append(x)
        return outs + [self.pool(x)]

    def forward(self, x): return self.forward_layers(x)[-1]


def init_convs(model, scheme='default', gain=1.0, seed=None):
    """(Re)initialise every `Conv2d` of `model` in place and return it.

    'default': PyTorch's own `reset_parameters` (kaiming_uniform with a=sqrt(5), so Var(w) = 1/(3*fan_in), and a
    uniform bias). 'kaiming': N(0, gain**2 * 2/fan_in) weights and zero bias, so `gain=1` preserves the ReLU
    signal variance from layer to layer and `gain<1`/`gain>1` shrink/grow it geometrically.
    """
    if seed is not None: torch.manual_seed(seed)
    for m in model.modules():
        if not isinstance(m, nn.Conv2d): continue
        if scheme == 'default': m.reset_parameters()
        elif scheme == 'kaiming':
            nn.init.kaiming_normal_(m.weight, nonlinearity='relu')
            with torch.no_grad(): m.weight.mul_(gain)
            if m.bias is not None: nn.init.zeros_(m.bias)
        else: raise ValueError(f"unknown init scheme {scheme!r}: expected 'default' or 'kaiming'")
    return model


class DeepConvReLU(nn.Sequential):
    """`depth` blocks of `Conv2d(3x3) -> ReLU` (named conv1, relu1, ...), strictly alternating; output `(B, width, 8, 8)`.

    The first `n_down` convs have stride 2, so the input must be `8 * 2**n_down` pixels square (32 for the
    default). The default depth is 8 (>= 6, as T1.3 asks): with PyTorch's default init the first layer's weight
    gradient is then smaller than the last one's both in L2 norm and per weight (mean |grad|) for every seed
    tried (30, batch 16), whereas at depth 6 the per-weight ratio is about 0.75 on average and above 1 for some
    seeds (see scripts/task1_gradients.py).
    """
    def __init__(self,
                 depth=8,            # number of Conv2d layers (each followed by a ReLU)
                 in_channels=3,      # input image channels
                 width=64,           # channels of every conv (and of the output)
                 n_down=2,           # leading stride-2 convs: input side = 8 * 2**n_down
                 bias=True,          # conv biases (PyTorch's default)
                 init='default',     # 'default' (PyTorch) or 'kaiming' (see `init_convs`)
                 gain=1.0,           # multiplier of the Kaiming std when init='kaiming'
                 seed=None):         # seed for the initialisation (None: the global RNG)
        if depth < n_down: raise ValueError(f"depth={depth} is smaller than n_down={n_down}")
        layers, c = {}, in_channels
        for i in range(depth):
            layers[f'conv{i + 1}'] = nn.Conv2d(c, width, 3, stride=2 if i < n_down else 1, padding=1, bias=bias)
            layers[f'relu{i + 1}'] = nn.ReLU()
            c = width
        super().__init__(OrderedDict(layers))
        self.input_size = 8 * 2 ** n_down
        init_convs(self, init, gain, seed)


@torch.inference_mode()
def activation_profile(model, x, batch_size=256):
    """Run `x` through a `VarianceProbeNet` in batches: per-layer activation std (over every value of every
    sample) and the pooled output as an `(N, C)` tensor."""
    model.eval()
    moments, pooled = torch.zeros(len(model.convs), 3, dtype=torch.float64), []   # per layer: count, sum, sum of squares
    for xb in x.split(batch_size):
        outs = model.forward_layers(xb)
        moments += torch.tensor([[o.numel(), o.sum().item(), torch.linalg.vector_norm(o).item() ** 2] for o in outs[:-1]],
                                dtype=torch.float64)
        pooled.append(outs[-1].flatten(1))
    n, s, q = moments.unbind(1)
    return ((q / n - (s / n) ** 2).clamp_min(0).sqrt()).tolist(), torch.cat(pooled)


def ks_distance(a, b):
    "Kolmogorov-Smirnov distance (largest gap between the two empirical CDFs) of two 1-d samples."
    a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, 'right') / len(a) - np.searchsorted(b, grid, 'right') / len(b)).max())
