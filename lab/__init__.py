"""fastai_lab: the lab's one import name (this folder, lab/; arch/ is fastai_lab.arch, data/ fastai_lab.data).

A call goes down, never back up:
- the experiment layer: `stage` (a stage = variants x seeds: resume, --jobs, DDP, the choice handed on), `comparisons`
  and `ablation` (what Task 2 compares), `rows` (table layouts, the T2.13 table), `lookup`, `results`;
- the run layer: `train` (one run's folder), `learner`, `models`, `evaluate`, `checkpoint`, `callbacks`, `progress`,
  `record` (the run's result, read by everything above and by the use side);
- the parts: `recipe`, `flags`/`cli`, `metrics`, `losses`, `ingredients`, `machine`, `distributed`, `io`, `figures`, `stats`,
  `tables`, and the packages `arch` (models) and `data` (images: reading, checking, splitting, loading);
- the use side: `saved` (a finished run again), `predict`, `report`.
"""
import gc
import warnings

warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')  # raised inside fastai's imports

# Every module of the lab stands on torch, torchvision and fastai. Importing them makes about 0.9M objects that live as
# long as the process: the collector would walk them over and over while they load and find nothing to free. So they
# load with it paused and are then frozen out of every later collection (gc.freeze, the documented way). Measured on the
# 2-core CPU, `import fastai_lab.stage` then exit: 6.4 s -> 4.5 s (median of 5).
_collecting = gc.isenabled()
gc.disable()
try: import fastai.vision.all  # noqa: F401
finally:
    gc.freeze()
    if _collecting: gc.enable()
