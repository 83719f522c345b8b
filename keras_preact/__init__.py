"""keras_preact: the pre-activation residual networks of He et al., ECCV 2016.

"Identity Mappings in Deep Residual Networks" (ResNet v2) as a Keras 3 model
zoo: one layer per residual-unit placement (Fig. 4) and per shortcut variant
(Fig. 2), network builders for the paper's CIFAR and ImageNet depths, and a
registry of ``--arch`` names.
"""

from keras_preact.models import (
    PreActResNet18,
    PreActResNet20,
    PreActResNet32,
    PreActResNet34,
    PreActResNet44,
    PreActResNet50,
    PreActResNet56,
    PreActResNet101,
    PreActResNet110,
    PreActResNet152,
    PreActResNet164,
    PreActResNet200,
    PreActResNet1001,
    PreActResNet1202,
    build_resnet,
    preact_resnet_cifar,
    preact_resnet_imagenet,
)
from keras_preact.shortcuts import SHORTCUTS, PROJECTIONS
from keras_preact.units import PLACEMENTS

__version__ = "0.1.0"
from keras_preact import registry, shortcuts, units
from keras_preact.registry import MODELS, get_model, list_models, model_info
