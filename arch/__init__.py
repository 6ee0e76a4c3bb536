"""fastai_lab.arch: the models. Layers and the budget check (`layers`), the ResNet family (`resnet`), the U-Nets (`unet`),
the Task 1 probe networks (`probes`); none imports the training machinery."""
from .layers import *
from .resnet import *
from .unet import *
