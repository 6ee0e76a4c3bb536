"""What to look at in each of the report's figures, by file name: one line under every figure."""
from pathlib import Path

__all__ = ['LOOK', 'look_at']

_CURVE = 'the gap between train and valid: a valid curve that turns while train keeps improving is overfitting'
LOOK = {
    # Task 1
    'gap_histogram.png': 'how much wider the x2 net\'s distribution is than the control\'s',
    'layer_std.png': 'the step at layer 3 in the x2 net, and whether the later layers carry it on',
    'grad_per_layer.png': 'how fast the gradient norm falls from the last layer back to the first',
    'signal_per_layer.png': 'whether the forward and backward signals stay level across depth or shrink',
    'init_and_depth.png': 'the ratio near 1 for a good initialisation; far from 1 it vanishes or explodes with depth',
    # Task 2 runs and stages
    'accuracy.png': 'where valid accuracy stops rising, and its gap to train (' + _CURVE.split(': ')[1] + ')',
    'loss.png': _CURVE,
    'iou.png': 'the epoch where valid IoU levels off, and its gap to train',
    'dice.png': 'the same shape as IoU, higher: Dice weighs the overlap twice',
    'pixel_acc.png': 'little: most pixels are ground, so pixel accuracy stays high even for a poor mask',
    'valid_accuracy.png': 'which variant ends highest, and whether the lines cross or stay apart',
    'train_accuracy.png': 'which variant fits the training set fastest (compare with valid for overfitting)',
    'valid_loss.png': 'the variant with the lowest valid loss, and any that rise again (overfitting)',
    'train_loss.png': 'how fast each variant fits; a line that stalls early is under-fitting',
    'statistics_per_layer.png': 'the dead share and std per layer, activation by activation: dead units no longer learn',
    'gradients_over_training.png': 'whether the early layers\' gradients stay within reach of the last layer\'s',
    'accuracy_vs_macs.png': 'the ringed variants on the Pareto front: none beats them on accuracy at fewer MACs; a '
                            'point far to the right within the bars of a cheaper one is a tie paid for in compute',
    'ablation_valid.png': 'the green rows, the ingredients kept: each beat the row before by more than the noise bar',
    # test reports
    'confusion_matrix.png': 'the off-diagonal cells: the pairs of classes the model confuses most',
    'test_samples.png': 'the wrong predictions and whether a person would make them too',
    'show_results.png': 'the wrong predictions (red titles in fastai\'s display)',
    # segmentation
    'prediction_0.png': 'the rock edges and the small rocks: what the predicted mask misses or adds',
    'prediction_1.png': 'whether the misses are of the same kind as on the first frame',
    'test_prediction_0.png': 'whether a frame the model never saw shows the same errors as the valid frames',
    'iou_vs_macs.png': 'whether the dearer U-Nets buy IoU beyond the bars of the cheaper ones (the Pareto front, ringed)',
    'real_prediction_0.png': 'how many of a real photo\'s rocks a model trained on renders still finds (sim-to-real)',
}


def look_at(name):
    "The line of what to look at in the figure file `name` ('' when there is none)."
    return LOOK.get(Path(name).name, '')
