"""The `nms` setting: greedy and tiled NMS give Mask R-CNN the same proposals and detections."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.detection.postprocess import detect_boxes, select_proposals
from jaxseg.models.mask_rcnn import MaskRCNN
from jaxseg.models.rpn import RPN
from jaxseg.testing import tiny_mask_rcnn

TINY = tiny_mask_rcnn(
    rpn={"pre_nms_top_n_test": 200, "post_nms_top_n_test": 60},
    roi_heads={"detections_per_image": 20},
)


def _random_variables(model, images, seed):
    """Variables of `model` drawn with NumPy (compiling `init` costs more than the test)."""
    shapes = jax.eval_shape(lambda k: model.init(k, images, train=False), jax.random.key(0))
    rng = np.random.default_rng(seed)

    def leaf(path, shape):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "var":
            return rng.uniform(0.5, 2.0, size=shape.shape).astype(shape.dtype)
        if name == "kernel":
            fan_in = np.prod(shape.shape[:-1])
            return (rng.normal(size=shape.shape) / np.sqrt(fan_in)).astype(shape.dtype)
        return ((name == "scale") + 0.1 * rng.normal(size=shape.shape)).astype(shape.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def test_greedy_and_tiled_detections_are_equal():
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    greedy, tiled = MaskRCNN(**TINY, nms="greedy"), MaskRCNN(**TINY, nms="tiled")
    variables = _random_variables(greedy, images, seed=1)

    def detect(model):
        return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)

    a, b = detect(greedy), detect(tiled)
    assert int(a.valid.sum()) > 5  # there is something to compare
    for name in ("boxes", "scores", "classes", "valid", "masks"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_postprocess_methods_agree():
    rng = np.random.default_rng(2)
    # Proposals: 3 levels of candidates from clustered anchors.
    num = 600
    centres = rng.uniform(10, 90, size=(num, 2))
    anchors = np.concatenate([centres - 12, centres + 12], 1).astype(np.float32)
    objectness = rng.normal(size=num).astype(np.float32)
    deltas = (0.1 * rng.normal(size=(num, 4))).astype(np.float32)
    proposals = {
        nms: select_proposals(
            objectness,
            deltas,
            anchors,
            [300, 200, 100],
            (100, 100),
            pre_nms_top_n=150,
            post_nms_top_n=80,
            nms=nms,
        )
        for nms in ("greedy", "tiled", "auto")
    }
    # Detections: 60 RoIs x 5 classes.
    logits = rng.normal(size=(60, 6)).astype(np.float32)
    regression = (0.2 * rng.normal(size=(60, 6, 4))).astype(np.float32)
    rois = anchors[:60]
    detections = {
        nms: detect_boxes(logits, regression, rois, np.ones(60, bool), (100, 100), nms=nms)
        for nms in ("greedy", "tiled", "auto")
    }
    for results in (proposals, detections):
        assert int(results["greedy"][-1].sum()) > 10
        for nms in ("tiled", "auto"):
            for x, y in zip(results["greedy"], results[nms], strict=True):
                np.testing.assert_array_equal(x, y)


def test_bad_nms_setting():
    images = jnp.zeros((1, 64, 64, 3))
    with pytest.raises(ValueError, match=r"MaskRCNN: nms must be one of .* got 'fast'"):
        MaskRCNN(**TINY, nms="fast").init(jax.random.key(0), images, train=False)
    features = [jnp.zeros((1, 64 // 2**k, 64 // 2**k, 8)) for k in range(2, 7)]
    with pytest.raises(ValueError, match="RPN: nms must be one of"):
        RPN(nms="Greedy").init(jax.random.key(0), features, (64, 64), train=False)
