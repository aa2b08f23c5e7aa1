"""`preprocessing(arch)` agrees with torchvision's weights' transforms and models."""

import numpy as np
import pytest
import torch
from torchvision.models import ResNet50_Weights, VGG16_Weights, segmentation

from jaxseg.convert import ARCHS, IMAGENET_MEAN, IMAGENET_STD, preprocessing
from jaxseg.data import IMAGENET_MEAN as DATA_MEAN
from jaxseg.data import IMAGENET_STD as DATA_STD


def test_every_arch_has_a_rule_and_unknown_ones_are_refused():
    for arch in ARCHS:
        rule = preprocessing(arch)
        assert rule["mean"] == IMAGENET_MEAN and rule["std"] == IMAGENET_STD
        assert rule["pixel_scale"] == 1 / 255
    with pytest.raises(ValueError, match="known archs"):
        preprocessing("alexnet")
    # The converter's constants are the input pipelines'.
    np.testing.assert_allclose(IMAGENET_MEAN, DATA_MEAN)
    np.testing.assert_allclose(IMAGENET_STD, DATA_STD)


@pytest.mark.parametrize(
    ("arch", "weights"),
    [
        ("resnet50", ResNet50_Weights.IMAGENET1K_V1),
        ("vgg16", VGG16_Weights.IMAGENET1K_V1),
        ("fcn_resnet50", segmentation.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1),
        ("fcn_resnet101", segmentation.FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1),
    ],
)
def test_matches_torchvision_weights_transforms(arch, weights):
    transform = weights.transforms()  # built from the weights' metadata: no download
    rule = preprocessing(arch)
    assert rule["weights"] == weights.name
    assert list(transform.resize_size) == [rule["resize_size"]]
    crop = getattr(transform, "crop_size", None)  # SemanticSegmentation does not crop
    assert crop == ([rule["crop_size"]] if rule["crop_size"] else None)
    assert tuple(transform.mean) == rule["mean"] and tuple(transform.std) == rule["std"]
    assert transform.interpolation.value == rule["interpolation"]
    assert transform.antialias == rule["antialias"]
    image = torch.randint(0, 256, (3, 300, 200), dtype=torch.uint8)
    out = transform(image)
    side = rule["crop_size"] or rule["resize_size"]
    assert min(out.shape[1:]) == side
