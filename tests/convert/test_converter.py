"""The converter's bookkeeping: every key used or explained, heads, errors, arch guessing."""

import jax
import numpy as np
import pytest
import torch
import torchvision
from torchvision.models import segmentation

from jaxseg.convert import ARCHS, convert_state_dict, from_torchvision, get_arch, guess_arch
from jaxseg.models import MODELS


def _state(builder, **kwargs):
    torch.manual_seed(0)
    return builder(weights=None, **kwargs).state_dict()


def _meta_keys(builder, **kwargs):
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return set(builder(weights=None, **kwargs).state_dict())


def test_guess_arch_tells_every_arch_apart():
    builders = {
        "vgg16": torchvision.models.vgg16,
        **{f"resnet{d}": getattr(torchvision.models, f"resnet{d}") for d in (18, 34, 50, 101, 152)},
    }
    for name, builder in builders.items():
        assert guess_arch(_meta_keys(builder)) == name
    for depth in (50, 101):
        builder = getattr(segmentation, f"fcn_resnet{depth}")
        keys = _meta_keys(builder, weights_backbone=None, aux_loss=True)
        assert guess_arch(keys) == f"fcn_resnet{depth}"
    assert guess_arch({"something.else"}) is None
    assert set(builders) | {"fcn_resnet50", "fcn_resnet101"} <= set(ARCHS)


def test_unknown_arch_and_settings_are_refused():
    with pytest.raises(ValueError, match=r"unknown arch 'resnet42'.*'fcn_resnet50'.*'vgg16'"):
        get_arch("resnet42")
    with pytest.raises(ValueError, match=r"does not take \['colour'\]"):
        convert_state_dict({}, "resnet18", colour="red")
    with pytest.raises(ValueError, match=r"\['depth'\] fixed by the arch"):
        convert_state_dict({}, "resnet18", depth=50)


def test_imagenet_classifier_drops_fc_and_counters():
    state = _state(torchvision.models.resnet18)
    conversion = convert_state_dict(state, "resnet18", norm="frozen")
    assert set(conversion.dropped) == {"fc.weight", "fc.bias"}
    assert conversion.reinitialised == ()
    assert conversion.settings == {"norm": "frozen"}
    params, stats = conversion.variables["params"], conversion.variables["batch_stats"]
    np.testing.assert_array_equal(
        params["layer2_0"]["downsample_conv"]["kernel"],
        state["layer2.0.downsample.0.weight"].numpy().transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        stats["layer4_1"]["bn2"]["var"], state["layer4.1.bn2.running_var"].numpy()
    )
    count = sum(v.size for v in jax.tree.leaves(conversion.variables))
    used = sum(v.numel() for k, v in state.items() if not k.startswith("fc."))
    assert count == used - sum(1 for k in state if k.endswith("num_batches_tracked"))


def test_missing_unexpected_and_mismatched_keys_are_all_listed():
    state = dict(_state(torchvision.models.resnet18))
    del state["layer1.0.conv1.weight"]
    state["layer9.0.conv1.weight"] = torch.zeros(1)
    state["bn1.running_mean"] = torch.zeros(65)
    with pytest.raises(ValueError) as error:
        from_torchvision(state, "resnet18")
    message = str(error.value)
    assert (
        "missing keys (1):\n    layer1.0.conv1.weight (for params/layer1_0/conv1/kernel" in message
    )
    assert "unexpected keys (1):\n    layer9.0.conv1.weight" in message
    assert "shape mismatches (1):\n    bn1.running_mean: file (65,)" in message


def test_wrong_arch_for_the_file_names_the_keys_and_the_likely_arch():
    state = _state(torchvision.models.resnet18)
    with pytest.raises(ValueError, match=r"looks like a torchvision 'resnet18'") as error:
        from_torchvision(state, "resnet34")
    assert "layer1.2.conv1.weight" in str(error.value)
    with pytest.raises(ValueError, match=r"looks like a torchvision 'resnet18'") as error:
        from_torchvision(state, "fcn_resnet50")  # no classifier: num_classes unknown
    assert "missing keys" in str(error.value) and "backbone.conv1.weight" in str(error.value)
    assert "unexpected keys" in str(error.value) and "    conv1.weight" in str(error.value)
    with pytest.raises(ValueError, match=r"shape mismatches \(\d+\)"):
        from_torchvision(state, "resnet18", width=0.5)


def test_other_class_count_keeps_backbone_and_reinitialises_class_layers(caplog):
    state = _state(segmentation.fcn_resnet50, weights_backbone=None, num_classes=21, aux_loss=True)
    with caplog.at_level("WARNING"):
        conversion = convert_state_dict(state, "fcn_resnet50", num_classes=3, aux_loss=False)
    assert conversion.settings == {"num_classes": 3, "aux_loss": False}
    assert conversion.reinitialised == (
        "params/classifier/score/bias",
        "params/classifier/score/kernel",
    )
    assert "initialised afresh: params/classifier/score/bias" in caplog.text
    assert {k for k in conversion.dropped if k.startswith("classifier")} == {
        "classifier.4.weight",
        "classifier.4.bias",
    }
    assert "21 classes in the checkpoint, 3 requested" in conversion.dropped["classifier.4.weight"]
    aux = {k for k in state if k.startswith("aux_classifier") and "num_batches" not in k}
    assert aux <= set(conversion.dropped)
    params = conversion.variables["params"]
    assert "aux_classifier" not in params
    assert params["classifier"]["score"]["kernel"].shape == (1, 1, 512, 3)
    assert float(np.abs(params["classifier"]["score"]["kernel"]).max()) > 0
    np.testing.assert_array_equal(
        params["classifier"]["conv"]["kernel"],
        state["classifier.0.weight"].numpy().transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        params["backbone"]["layer4_2"]["bn3"]["scale"], state["backbone.layer4.2.bn3.weight"]
    )


def test_fcn_resnet101_converts_whole_and_an_aux_head_can_be_added():
    state = _state(segmentation.fcn_resnet101, weights_backbone=None, num_classes=4)
    assert not any(k.startswith("aux_classifier") for k in state)
    conversion = convert_state_dict(state, "fcn_resnet101", aux_loss=True)
    assert conversion.settings == {"num_classes": 4, "aux_loss": True}
    assert conversion.dropped == {}
    assert all(
        path.startswith("params/aux_classifier/") or "aux_classifier" in path
        for path in conversion.reinitialised
    )
    assert len(conversion.reinitialised) == 7  # conv, bn (scale, bias, mean, var), score (2)
    assert conversion.variables["params"]["aux_classifier"]["score"]["kernel"].shape == (
        1, 1, 256, 4,
    )  # fmt: skip
    assert "fcn_resnet101" in MODELS  # the converted model is also a config model name
