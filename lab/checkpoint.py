"""Checkpoints: the best epoch (model.pth, with its recipe inside), the resume state of the last finished epoch
(last.pth: model, optimiser, RNG states of every generator and loader, smoothed loss, statistics), both written
atomically, and reading them back weights-only, with errors that name the file.
"""
import random
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.optimizer import OptimWrapper
from fastai.torch_core import get_model, to_device
from fastcore.foundation import L

from .distributed import is_rank0
from .io import atomic_write

__all__ = ['read_torch_file', 'read_checkpoint', 'save_checkpoint', 'Checkpoints', 'resume']


def read_torch_file(path):
    """A `torch.save` file read weights-only, letting through what fastai and the lab store besides tensors:
    fastcore `L`s and numpy scalars (fastai's one-cycle and `slice` learning rates live in the optimiser state as
    numpy floats), as fastai's own `load_model` does, and nothing else."""
    numpy_scalar = np.float64(0).__reduce__()[0]  # numpy's pickle reconstructor, wherever numpy keeps it
    allowed = [L, numpy_scalar, np.dtype, *(getattr(np.dtypes, name) for name in np.dtypes.__all__)]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location='cpu', weights_only=True)


def read_checkpoint(path):
    "{'model': state dict, 'recipe': dict or None, ...} from a lab checkpoint or a bare state dict; errors name the file."
    path = Path(path)
    if not path.is_file(): raise FileNotFoundError(f"{path}: no such checkpoint")
    try: raw = read_torch_file(path)
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}; expected a model.pth written "
                         f"by the lab or torch.save(state_dict))") from None
    if isinstance(raw, dict) and 'model' in raw: return raw
    if isinstance(raw, dict): return {'model': raw}
    raise ValueError(f"{path}: not a model checkpoint (expected a state dict)")


def _plain(o):
    "`o` with fastai's tensor subclasses made plain tensors and numpy scalars Python numbers, for weights-only loading."
    if isinstance(o, torch.Tensor): return o.as_subclass(torch.Tensor)
    if isinstance(o, np.generic): return o.item()  # one-cycle puts numpy floats in the optimiser's param groups
    if isinstance(o, dict): return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)): return type(o)(_plain(v) for v in o)
    return o


def save_checkpoint(obj, path):
    "`torch.save` of `obj` (plain tensors and numbers, readable weights-only), atomically."
    with atomic_write(path) as tmp: torch.save(_plain(obj), tmp)


class Checkpoints(Callback):
    """The best epoch's weights (model.pth, by `monitor`; the last epoch when `monitor` is None or its value undefined)
    and the resume state of the last finished epoch (last.pth: model, optimiser, RNG states, smoothed loss,
    statistics), both written atomically, so a kill mid-write leaves the previous file whole.

    Replaces fastai's SaveModelCallback: that one writes weights only, in place, and forgets the best value on resume;
    here the checkpoint carries its recipe, so `load_checkpoint` rebuilds the model without any other file."""
    order = 65  # after MetricsCSV, so that a saved epoch is always in metrics.csv

    def __init__(self, run_dir, recipe, monitor, best=None, stats=()):
        self.run_dir, self.recipe, self.monitor, self.stats = Path(run_dir), recipe, monitor, list(stats)
        self.best = best  # (epoch, value) of the best epoch so far, restored on resume

    def before_fit(self):
        if self.monitor: self.idx = list(self.recorder.metric_names[1:]).index(self.monitor)

    def after_epoch(self):
        if not is_rank0(): return
        model = get_model(self.learn.model)
        value = self.recorder.values[-1][self.idx] if self.monitor else None
        # an undefined value (nan: valid IoU of masks without rock) cannot pick an epoch: the last one is kept
        undefined = value is None or value != value
        if self.monitor is None or self.best is None or undefined or value > self.best[1]:
            self.best = (self.epoch, value)
            save_checkpoint(dict(model=model.state_dict(), recipe=self.recipe.to_dict(), epoch=self.epoch,
                              monitor=self.monitor, value=value), self.run_dir / 'model.pth')
        save_checkpoint(dict(model=model.state_dict(), opt=self.learn.opt.state_dict(), epoch=self.epoch,
                          best=list(self.best), rng=_rng_state(self.learn), recipe=self.recipe.to_dict(),
                          smooth=[self.recorder.smooth_loss.val, self.recorder.smooth_loss.count],
                          stats=[s.state() for s in self.stats]), self.run_dir / 'last.pth')


def _rng_state(learn):
    np_state = np.random.get_state()
    return dict(python=random.getstate(), numpy=[np_state[0], torch.as_tensor(np_state[1].astype(np.int64)),
                                                 *np_state[2:]],
                torch=torch.get_rng_state(), cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                loaders=[_loader(dl).rng.getstate() for dl in learn.dls.loaders])


def _loader(dl): return getattr(dl, 'dl', dl)  # under DDP fastai's DistributedDL wraps the loader that shuffles


def _set_rng_state(learn, state):
    random.setstate(_tuples(state['python']))
    np.random.set_state((state['numpy'][0], state['numpy'][1].numpy().astype(np.uint32), *state['numpy'][2:]))
    torch.set_rng_state(state['torch'])
    if torch.cuda.is_available() and state['cuda']: torch.cuda.set_rng_state_all(state['cuda'])
    for dl, s in zip(learn.dls.loaders, state['loaders']): _loader(dl).rng.setstate(_tuples(s))


def _tuples(o): return tuple(_tuples(v) for v in o) if isinstance(o, (list, tuple)) else o


class _RestoreSmoothLoss(Callback):
    "Put back the smoothed training loss of the epoch a run resumes after (the Recorder resets it in before_fit)."
    order = 55
    def __init__(self, val, count): self.val, self.count = val, count
    def before_fit(self):
        sl = self.recorder.smooth_loss
        sl.val, sl.count = torch.as_tensor(self.val).to(sl.val.device if torch.is_tensor(sl.val) else 'cpu'), self.count


def resume(learn, run_dir, recipe, stats):
    "Load last.pth when there is one: (first epoch to run, best so far, callbacks to add)."
    path = Path(run_dir) / 'last.pth'
    if not path.exists(): return 0, None, []
    state = read_checkpoint(path)
    if state.get('recipe') != recipe.to_dict():
        raise ValueError(f"{path}: a checkpoint of another recipe; remove the run folder {run_dir} to train it anew")
    get_model(learn.model).load_state_dict(state['model'])
    if learn.opt is None: learn.create_opt()
    opt_state = state['opt']
    if not isinstance(learn.opt, OptimWrapper):  # fastai's own optimisers (ranger) keep their state where it is loaded
        opt_state = to_device(opt_state, next(get_model(learn.model).parameters()).device)
    learn.opt.load_state_dict(opt_state)
    _set_rng_state(learn, state['rng'])
    for s, st in zip(stats, state['stats']): s.load_state(st)
    print(f"{Path(run_dir).name}: resuming after epoch {state['epoch']} ({state['epoch'] + 1} of {recipe.epochs} "
          f"epochs done; epochs count from 0)")
    return state['epoch'] + 1, tuple(state['best']), [_RestoreSmoothLoss(*state['smooth'])]
