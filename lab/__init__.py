"""fastai_lab: the lab's one import name (this folder, lab/; arch/ is fastai_lab.arch, data/ fastai_lab.data).

A call goes down, never back up:
- the experiment layer: `stage` (a stage = variants x seeds: resume, --jobs, DDP, the choice handed on), `comparisons`
  and `ablation` (what Task 2 compares), `rows` (table layouts, the T2.13 table), `lookup`, `results`;
- the run layer: `train` (one run's folder), `learner`, `models`, `evaluate`, `checkpoint`, `callbacks`, `progress`,
  `record` (the run's result, read by everything above and by the use side);
- the parts: `recipe`, `flags`/`cli`, `metrics`, `losses`, `ingredients`, `machine`, `distributed`, `io`, `stats`,
  `tables`, and the packages `arch` (models) and `data` (images: reading, checking, splitting, loading);
- the use side: `saved` (a finished run again), `predict`, `report`.
"""
import warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')  # raised inside fastai's imports
