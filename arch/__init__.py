"Models of the lab: Task 1 probes, the ResNet family and the U-Nets."
from .layers import *
from .resnet import *
from .unet import *
