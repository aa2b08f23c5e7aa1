"""Converting `maskrcnn_resnet50_fpn`: both key namings, layouts, class counts, errors."""

import re

import jax
import numpy as np
import pytest
import torch
import torchvision

from jaxseg.convert import convert_state_dict, get_arch, guess_arch
from jaxseg.convert.naming import canonical_mask_rcnn_key
from jaxseg.models import MODELS

ARCH = "maskrcnn_resnet50_fpn"


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    net = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    return net.state_dict()


def _old_names(state):
    """Returns `state` under torchvision < 0.13's names (those of its COCO checkpoint)."""
    renamed = {}
    for key, value in state.items():
        key = re.sub(r"^(backbone\.fpn\.\w+_blocks\.\d+)\.0\.", r"\1.", key)
        key = re.sub(r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv.", key)
        key = re.sub(
            r"^roi_heads\.mask_head\.(\d)\.0\.",
            lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.",
            key,
        )
        renamed[key] = value
    return renamed


def test_current_and_old_key_names_give_the_same_variables(state):
    old = _old_names(state)
    assert "rpn.head.conv.weight" in old and "roi_heads.mask_head.mask_fcn4.bias" in old
    assert "backbone.fpn.inner_blocks.3.weight" in old
    assert {canonical_mask_rcnn_key(k) for k in old} == set(state)
    new, legacy = convert_state_dict(state, ARCH), convert_state_dict(old, ARCH)
    assert new.settings == {"num_classes": 90}  # torchvision's 91 includes background
    assert new.reinitialised == () and legacy.reinitialised == ()
    assert {k for k in new.dropped if "num_batches_tracked" not in k} == set()
    assert jax.tree.structure(new.variables) == jax.tree.structure(legacy.variables)
    for a, b in zip(jax.tree.leaves(new.variables), jax.tree.leaves(legacy.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    assert guess_arch(set(state)) == ARCH and guess_arch(set(old)) == ARCH
    assert get_arch(ARCH).model_name in MODELS


def test_layouts_of_the_heads(state):
    params = convert_state_dict(state, ARCH).variables["params"]
    heads = params["roi_heads"]
    fc6 = state["roi_heads.box_head.fc6.weight"].numpy()  # [1024, 256 * 7 * 7], (c, y, x)
    kernel = np.asarray(heads["box_head"]["fc6"]["kernel"])  # [7 * 7 * 256, 1024], (y, x, c)
    np.testing.assert_array_equal(
        kernel.reshape(7, 7, 256, 1024)[2, 5, 17], fc6.reshape(1024, 256, 7, 7)[:, 17, 2, 5]
    )
    conv5 = state["roi_heads.mask_predictor.conv5_mask.weight"].numpy()  # [in, out, 2, 2]
    np.testing.assert_array_equal(
        heads["mask_head"]["conv5_mask"]["kernel"], conv5.transpose(2, 3, 0, 1)
    )
    np.testing.assert_array_equal(
        heads["mask_head"]["mask_fcn3"]["kernel"],
        state["roi_heads.mask_head.2.0.weight"].numpy().transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        params["fpn"]["layer_blocks_1"]["kernel"],
        state["backbone.fpn.layer_blocks.1.0.weight"].numpy().transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        params["rpn"]["head"]["bbox_pred"]["bias"], state["rpn.head.bbox_pred.bias"].numpy()
    )
    np.testing.assert_array_equal(
        heads["box_predictor"]["cls_score"]["kernel"],
        state["roi_heads.box_predictor.cls_score.weight"].numpy().T,
    )


def test_other_class_count_keeps_backbone_fpn_rpn_and_heads_but_the_class_layers(state, caplog):
    with caplog.at_level("WARNING"):
        conversion = convert_state_dict(state, ARCH, num_classes=3)
    layers = {p.rsplit("/", 1)[0] for p in conversion.reinitialised}
    assert layers == {
        "params/roi_heads/box_predictor/cls_score",
        "params/roi_heads/box_predictor/bbox_pred",
        "params/roi_heads/mask_head/mask_fcn_logits",
    }
    assert "initialised afresh: params/roi_heads/box_predictor/bbox_pred/bias" in caplog.text
    assert (
        "90 classes in the checkpoint, 3 requested"
        in (conversion.dropped["roi_heads.mask_predictor.mask_fcn_logits.weight"])
    )
    heads = conversion.variables["params"]["roi_heads"]
    assert heads["box_predictor"]["cls_score"]["kernel"].shape == (1024, 4)
    assert heads["box_predictor"]["bbox_pred"]["kernel"].shape == (1024, 16)
    assert heads["mask_head"]["mask_fcn_logits"]["kernel"].shape == (1, 1, 256, 4)
    np.testing.assert_array_equal(
        heads["box_head"]["fc7"]["bias"], state["roi_heads.box_head.fc7.bias"].numpy()
    )
    np.testing.assert_array_equal(
        conversion.variables["batch_stats"]["backbone"]["layer3_5"]["bn2"]["mean"],
        state["backbone.body.layer3.5.bn2.running_mean"].numpy(),
    )


def test_missing_and_unexpected_keys_are_listed_under_the_files_names(state):
    old = _old_names(state)
    del old["rpn.head.cls_logits.weight"]
    old["roi_heads.mask_head.mask_fcn5.weight"] = torch.zeros(1)
    old["rpn.head.conv.bias"] = torch.zeros(7)
    with pytest.raises(ValueError) as error:
        convert_state_dict(old, ARCH)
    message = str(error.value)
    assert "missing keys (1):\n    rpn.head.cls_logits.weight (for params/rpn/head/cls_logits" in (
        message
    )
    assert "unexpected keys (1):\n    roi_heads.mask_head.mask_fcn5.weight" in message
    assert "shape mismatches (1):\n    rpn.head.conv.bias: file (7,)" in message
    both = {**state, "rpn.head.conv.weight": state["rpn.head.conv.0.0.weight"]}
    with pytest.raises(ValueError, match=r"has both rpn\.head\.conv\.0\.0\.weight and rpn"):
        convert_state_dict(both, ARCH)
