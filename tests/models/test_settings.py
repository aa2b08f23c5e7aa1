"""Nested model settings: Mask R-CNN's groups reach every part, old flat keys name new ones."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import pytest
from flax.core import FrozenDict

from jaxseg.models import build_model
from jaxseg.models.fpn import FPN
from jaxseg.models.mask_rcnn import RENAMED_SETTINGS, MaskRCNN
from jaxseg.models.roi_heads import RoIHeads
from jaxseg.models.rpn import RPN
from jaxseg.models.settings import get_setting, group_defaults, nest
from jaxseg.testing import dotted, tiny_mask_rcnn

NAME = "mask_rcnn_resnet50_fpn"
# One value of each old flat key, of the type its new key takes.
OLD_VALUES = {
    "anchor_sizes": ((16,), (32,), (64,), (128,), (256,)),
    "aspect_ratios": (1.0,),
    "pooler": "roi_pool",
    "aligned": True,
}


def _value(old):
    return OLD_VALUES.get(old, 0.25 if "threshold" in old or "fraction" in old else 8)


@pytest.mark.parametrize("old, new", sorted(RENAMED_SETTINGS.items()))
def test_an_old_flat_key_is_refused_naming_its_new_key(old, new):
    message = f"setting '{old}' is now '{new}'"
    with pytest.raises(ValueError, match=f"^model '{NAME}': {message}$"):
        build_model(NAME, num_classes=3, **{old: _value(old)})
    with pytest.raises(ValueError, match=f"^MaskRCNN: {message}$"):
        MaskRCNN(num_classes=3, **{old: _value(old)})
    # ... and the new key takes the value, into the part it names.
    model = build_model(NAME, num_classes=3, **nest({new: _value(old)}))
    assert get_setting(model, new) == _value(old)


def test_every_old_key_maps_to_a_setting_of_a_part():
    defaults = dotted(group_defaults(MaskRCNN))
    assert set(RENAMED_SETTINGS.values()) <= set(defaults)
    assert not set(RENAMED_SETTINGS) & {f.name for f in dataclasses.fields(MaskRCNN)}


def _parts(model, images):
    """Returns {module path: module} of the parts `model` builds in inference."""
    parts = {}

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            parts["/".join(context.module.path)] = context.module
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda k: model.init(k, images, train=False), jax.random.key(0))
    return parts


def test_every_part_setting_reaches_its_part():
    # Non-default values for the settings that were unreachable when they were flat.
    overrides = {
        "fpn.extra_max_pool": True,
        "rpn.min_size": 0.5,
        "rpn.score_threshold": 0.01,
        "rpn.smooth_l1_beta": 0.2,
        "roi_heads.box_weights": (1.0, 2.0, 3.0, 4.0),
        "roi_heads.smooth_l1_beta": 0.3,
        "roi_heads.box_output_size": 5,
        "roi_heads.mask_output_size": 6,
        "roi_heads.max_sampling_ratio": 3,
        "roi_heads.mask_target_sampling_ratio": 2,
        "roi_heads.mask_head.num_convs": 2,
    }
    model = MaskRCNN(**tiny_mask_rcnn(**nest(overrides)), nms="greedy")
    parts = _parts(model, jnp.zeros((1, 64, 64, 3)))
    paths = {"fpn": "fpn", "rpn": "rpn", "roi_heads": "roi_heads"}
    paths.update({"roi_heads.box_head": "roi_heads/box_head"})
    paths.update({"roi_heads.mask_head": "roi_heads/mask_head"})
    settings = dotted(
        {k: v for k, v in tiny_mask_rcnn(**nest(overrides)).items() if isinstance(v, dict)}
    )
    assert set(overrides) <= set(settings)
    for key, value in settings.items():
        group, _, attribute = key.rpartition(".")
        assert getattr(parts[paths[group]], attribute) == value, key
    # The parent's own settings: what it derives, not the parts' defaults.
    assert parts["rpn"].nms == parts["roi_heads"].nms == "greedy"
    assert parts["roi_heads"].num_classes == 3 and parts["roi_heads/mask_head"].num_classes == 4
    assert "roi_heads/mask_head/mask_fcn2" in parts
    assert "roi_heads/mask_head/mask_fcn3" not in parts


def test_groups_from_a_config_and_the_defaults_build_the_same_model():
    config = ml_collections.ConfigDict({"name": NAME, "num_classes": 3})
    config.update(group_defaults(MaskRCNN))
    config.rpn.pre_nms_top_n_test = 500
    config.roi_heads.mask_head.channels = 128
    settings = config.to_dict()
    model = build_model(settings.pop("name"), **settings)
    assert isinstance(model.rpn, FrozenDict) and hash(model) == hash(model.clone())
    assert get_setting(model, "rpn.pre_nms_top_n_test") == 500
    assert get_setting(model, "roi_heads.mask_head.channels") == 128
    # Listing every default changes nothing: the same parameters as the bare model's.
    images = jnp.zeros((1, 64, 64, 3))
    shapes = [
        jax.tree_util.tree_map(
            jnp.shape,
            jax.eval_shape(lambda k, m=m: m.init(k, images, train=False), jax.random.key(0)),
        )
        for m in (
            build_model(NAME, num_classes=3, **group_defaults(MaskRCNN)),
            MaskRCNN(num_classes=3),
        )
    ]
    assert shapes[0] == shapes[1]
    assert get_setting(MaskRCNN(num_classes=3), "roi_heads.mask_rois_per_image") == 128
    assert get_setting(MaskRCNN(num_classes=3), "depth") == 50


def test_defaults_are_the_parts_own():
    defaults = group_defaults(MaskRCNN)
    assert defaults["rpn"]["pre_nms_top_n_train"] == RPN.pre_nms_top_n_train == 2000
    assert defaults["fpn"] == {"channels": FPN.channels, "extra_max_pool": True}
    assert defaults["roi_heads"]["mask_head"] == {"channels": 256, "num_convs": 4}
    assert defaults["roi_heads"]["box_weights"] == RoIHeads.box_weights
    # What the parent supplies is no group's setting.
    for group, key in (("rpn", "nms"), ("rpn", "dtype"), ("roi_heads", "num_classes")):
        assert key not in defaults[group]
    assert "num_classes" not in defaults["roi_heads"]["mask_head"]


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"rpn": {"pre_nms_topn_train": 5}},
            r"group 'rpn' does not take \['pre_nms_topn_train'\] \(did you mean: "
            r"pre_nms_topn_train -> pre_nms_top_n_train\?\); it takes \['anchor_sizes'",
        ),
        (
            {"roi_heads": {"mask_head": {"chanels": 5}}},
            r"group 'roi_heads.mask_head' does not take \['chanels'\].*-> channels\?",
        ),
        ({"rpn": {"nms": "greedy"}}, r"group 'rpn' cannot set \['nms'\]: its parent supplies"),
        (
            {"roi_heads": {"mask_head": {"num_classes": 4}}},
            r"'roi_heads.mask_head' cannot set \['num_classes'\]",
        ),
        ({"fpn": 16}, r"setting 'fpn' is a group of FPN settings.*got 16"),
        ({"fpn_width": 16}, r"does not take \['fpn_width'\]"),
        ({"depth": 18}, r"\['depth'\] fixed by the name"),
    ],
)
def test_bad_settings_name_the_group_and_the_key(settings, message):
    with pytest.raises(ValueError, match=f"^model '{NAME}'.*{message}"):
        build_model(NAME, num_classes=3, **settings)


def test_nest_and_dotted_are_inverses():
    settings = {"width": 0.5, "rpn.min_size": 0.0, "roi_heads.mask_head.channels": 8}
    assert nest(settings) == {
        "width": 0.5,
        "rpn": {"min_size": 0.0},
        "roi_heads": {"mask_head": {"channels": 8}},
    }
    assert dotted(nest(settings)) == settings
    with pytest.raises(ValueError, match="'rpn' is a value and a group"):
        nest({"rpn": 1, "rpn.min_size": 0.0})
