"""Building blocks shared by every model: one activation factory and one parameter-budget check."""
import torch.nn as nn

__all__ = ['ACTIVATIONS', 'make_activation', 'count_params', 'max_channels', 'check_budget', 'BudgetError']

# Name -> (class, kwargs). `inplace` is added only where the layer accepts it (nn.GELU has none).
ACTIVATIONS = {
    'relu': (nn.ReLU, {}),
    'leakyrelu': (nn.LeakyReLU, {'negative_slope': 0.01}),
    'elu': (nn.ELU, {'alpha': 1.0}),
    'gelu': (nn.GELU, {}),
}
_INPLACE = {nn.ReLU, nn.LeakyReLU, nn.ELU}


def make_activation(name='relu', inplace=True):
    "A new activation module from its name (relu, leakyrelu, elu, gelu; case and '_' ignored)."
    key = str(name).lower().replace('_', '').replace('-', '')
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: expected one of {', '.join(ACTIVATIONS)}")
    cls, kwargs = ACTIVATIONS[key]
    if cls in _INPLACE: kwargs = {**kwargs, 'inplace': inplace}
    return cls(**kwargs)


def count_params(model, trainable_only=False):
    "Number of parameters (optionally only those with requires_grad)."
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def max_channels(model):
    "The widest conv/linear layer of `model`, in channels (in or out)."
    widths = [w for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
              for w in (m.in_channels, m.out_channels)]
    widths += [m.in_features for m in model.modules() if isinstance(m, nn.Linear)]
    return max(widths, default=0)


class BudgetError(ValueError):
    "A model breaks the lab's size limits."


def check_budget(model, max_params=5_000_000, max_width=512, name=None):
    "Raise `BudgetError` if `model` has more than `max_params` parameters or any layer wider than `max_width`; return the count."
    name = name or type(model).__name__
    n, w = count_params(model), max_channels(model)
    if n > max_params:
        raise BudgetError(f"{name} has {n:,} parameters; the budget is {max_params:,}")
    if max_width is not None and w > max_width:
        raise BudgetError(f"{name} has a layer with {w} channels; the limit is {max_width}")
    return n
