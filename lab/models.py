"""A recipe's model: built from the recipe's arch and model config (`MODELS`), initialised from the checkpoint it
names (a classifier for the backbone U-Net's encoder, or a whole model), and rebuilt from a lab checkpoint, which
carries its recipe.
"""
from dataclasses import replace
from pathlib import Path

from fastai_lab.arch.resnet import ResNet
from fastai_lab.arch.unet import BackboneUNet, UNet
from .checkpoint import read_checkpoint
from .recipe import Recipe

__all__ = ['n_classes_of', 'MODELS', 'load_encoder_from_classifier', 'load_init', 'build_model', 'load_checkpoint',
           'load_run_model']


def n_classes_of(recipe):
    "Classes of a classifier recipe: the length of its wnid list, or its count."
    text = str(recipe.classes)
    return len([w for w in text.split(',') if w.strip()]) if ',' in text else int(text.split('@')[0])


MODELS = {'resnet': ResNet, 'unet': UNet, 'backbone_unet': BackboneUNet}  # a recipe's arch -> its model class


def load_encoder_from_classifier(model, checkpoint_path):
    """Load a `ResNet` classifier's checkpoint into `model`: a `ResNet`, or a `BackboneUNet`'s encoder (its head
    weights are then ignored). Raises `FileNotFoundError` or `ValueError`, naming the file, when it is missing
    or does not fit. Returns `model`."""
    path = Path(checkpoint_path)
    if not path.is_file(): raise FileNotFoundError(f"classifier checkpoint not found: {path}")
    state = read_checkpoint(path)['model']
    target = model.encoder if isinstance(model, BackboneUNet) else model
    if target is not model: state = {k: v for k, v in state.items() if not k.startswith('head.')}
    expected = target.state_dict()
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    shapes = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        few = lambda ks: ', '.join(ks[:5]) + (f' (+{len(ks) - 5} more)' if len(ks) > 5 else '')
        problems = [f"{what}: {few(ks)}" for what, ks in
                    (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', shapes)) if ks]
        raise ValueError(f"{path} does not fit {type(target).__name__ if target is model else 'the encoder'}: "
                         + '; '.join(problems))
    target.load_state_dict(state)
    return model


def load_init(model, path):
    "Load `path` into `model`: a whole model's weights, or (for a backbone U-Net) a classifier's stem and stages."
    state = read_checkpoint(path)
    if isinstance(model, BackboneUNet) and not any(k.startswith('encoder.') for k in state['model']):
        return load_encoder_from_classifier(model, path)
    try: model.load_state_dict(state['model'])
    except RuntimeError as e: raise ValueError(f"{path} does not fit the model: {str(e).splitlines()[0]}") from None
    return model


def build_model(recipe):
    "The recipe's model, initialised from `recipe.init` when it names a checkpoint."
    m = dict(recipe.model)
    if recipe.arch == 'resnet': m['n_classes'] = n_classes_of(recipe)
    if recipe.arch == 'backbone_unet': m['encoder'] = ResNet(**m['encoder'])
    model = MODELS[recipe.arch](**m)
    if recipe.init: load_init(model, recipe.init)
    return model


def load_checkpoint(path):
    "(model, recipe) from a lab checkpoint: the model is rebuilt from the recipe stored with it, then loaded."
    state = read_checkpoint(path)
    if not state.get('recipe'):
        raise ValueError(f"{path}: no recipe inside (a bare state dict); load it into a model you build yourself")
    recipe = Recipe.from_dict(state['recipe'], source=str(path))
    model = build_model(replace(recipe, init=None))
    model.load_state_dict(state['model'])
    return model, recipe


def load_run_model(run_dir):
    "(model, recipe) of a finished run folder (its model.pth), in eval mode."
    run_dir = Path(run_dir)
    if not run_dir.is_dir(): raise FileNotFoundError(f"{run_dir}: no such run folder")
    model, recipe = load_checkpoint(run_dir / 'model.pth')
    return model.eval(), recipe
