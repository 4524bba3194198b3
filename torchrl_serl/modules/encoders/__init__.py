"""Pixel encoders: SERL's ResNet-10 trunk, a small conv trunk, MobileNetV3, poolings, multi-camera wrapper."""

from torchrl_serl.modules.encoders.flax_convert import (
    convert_serl_resnet10,
    load_serl_resnet10_params,
    to_serl_resnet10,
)
from torchrl_serl.modules.encoders.mobilenet import MobileNetV3SmallEncoder
from torchrl_serl.modules.encoders.multi_camera import MultiCameraEncoder
from torchrl_serl.modules.encoders.pooling import AvgPool, SpatialLearnedEmbeddings, SpatialSoftmax, make_pooling
from torchrl_serl.modules.encoders.resnet import ResNetEncoder, resnet10
from torchrl_serl.modules.encoders.small_conv import SmallConvEncoder

__all__ = [
    "AvgPool",
    "MobileNetV3SmallEncoder",
    "MultiCameraEncoder",
    "ResNetEncoder",
    "SmallConvEncoder",
    "SpatialLearnedEmbeddings",
    "SpatialSoftmax",
    "convert_serl_resnet10",
    "load_serl_resnet10_params",
    "make_pooling",
    "resnet10",
    "to_serl_resnet10",
]
