"""The name -> module table that configs resolve through."""

import pytest

from jaxseg.models import FCN, MODELS, FCNResNet, build_model


def test_names_resolve_to_their_modules():
    assert set(MODELS) == {
        "fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce", "fcn_resnet50", "fcn_resnet101",
        "mask_rcnn_resnet18_fpn", "mask_rcnn_resnet34_fpn", "mask_rcnn_resnet50_fpn",
        "mask_rcnn_resnet101_fpn",
    }  # fmt: skip
    model = build_model("fcn16s", num_classes=21, width=0.25)
    assert isinstance(model, FCN)
    assert (model.stride, model.skip_scaling, model.width) == (16, False, 0.25)
    atonce = build_model("fcn8s_atonce", num_classes=21)
    assert (atonce.stride, atonce.skip_scaling) == (8, True)
    resnet = build_model("fcn_resnet101", num_classes=21, aux_loss=True)
    assert isinstance(resnet, FCNResNet)
    assert (resnet.depth, resnet.aux_loss) == (101, True)


def test_bad_names_and_settings_are_value_errors():
    with pytest.raises(ValueError, match=r"unknown model 'fcn4s'.*fcn8s"):
        build_model("fcn4s", num_classes=21)
    with pytest.raises(ValueError, match=r"does not take \['widht'\].*'width'"):
        build_model("fcn8s", num_classes=21, widht=0.5)
    with pytest.raises(ValueError, match=r"does not take \['stride'\].*fixed by the name"):
        build_model("fcn32s", num_classes=21, stride=8)
