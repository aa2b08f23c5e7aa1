"""Tiny predictors for the predict and export tests: narrow models, variables drawn with NumPy.

Drawing the variables with NumPy (`jax.eval_shape` for the shapes) costs no compile.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models import MaskRCNN, build_model
from jaxseg.predict import Predictor
from jaxseg.testing import tiny_mask_rcnn

FCN_CLASSES = ("background", "square", "circle", "triangle")
INSTANCE_CLASSES = ("background", "square", "circle", "triangle")


def drawn_variables(model, **kwargs):
    """Returns variables of `model` drawn with NumPy, BatchNorm statistics set to 1."""
    shapes = jax.eval_shape(
        lambda k: model.init(k, jnp.zeros((1, 64, 64, 3)), **kwargs), jax.random.key(0)
    )
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("var", "scale"):
            return np.ones(leaf.shape, leaf.dtype)
        fan_in = np.prod(leaf.shape[:-1]) if name == "kernel" else 100.0
        return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def fcn_model():
    """FCN-32s at 1/32 of VGG16's width, 4 classes."""
    return build_model("fcn32s", width=0.03125, num_classes=len(FCN_CLASSES))


def mask_rcnn_model():
    """The tiny R18-FPN Mask R-CNN of `jaxseg.testing`, every detection kept (threshold 0)."""
    return MaskRCNN(**tiny_mask_rcnn(roi_heads={"score_threshold": 0.0}))


def fcn_predictor(**kwargs):
    model = fcn_model()
    return Predictor(
        model,
        drawn_variables(model, train=False),
        kind="semantic",
        class_names=FCN_CLASSES,
        source={"model": "fcn32s"},
        **kwargs,
    )


def mask_rcnn_predictor(**kwargs):
    model = mask_rcnn_model()
    kwargs.setdefault("score_threshold", 0.0)
    return Predictor(
        model,
        drawn_variables(model, train=False),
        kind="instance",
        class_names=INSTANCE_CLASSES,
        min_size=32,
        source={"model": "mask_rcnn_resnet18_fpn"},
        **kwargs,
    )


def sample_images():
    """Returns RGB uint8 images of three sizes: landscape, portrait, and a tall strip."""
    rng = np.random.default_rng(1)
    return [
        rng.integers(0, 256, (40, 57, 3), dtype=np.uint8),
        rng.integers(0, 256, (70, 50, 3), dtype=np.uint8),
        rng.integers(0, 256, (300, 100, 3), dtype=np.uint8),
    ]
