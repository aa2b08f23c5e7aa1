"""`prediction_function`: the whole prediction of a batch as one pure, exportable function."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from jaxseg.predict.postprocess import content_classes, content_detections
from jaxseg.predict.preprocess import to_network_input

__all__ = ["KINDS", "input_specs", "prediction_function"]

KINDS = ("semantic", "instance")
MASK_THRESHOLD = 0.5  # torchvision's threshold of pasted mask probabilities


def prediction_function(
    model: Any,
    kind: str,
    *,
    preprocessing: Mapping[str, Any] | None = None,
    mask_threshold: float = MASK_THRESHOLD,
) -> Callable[..., dict[str, jax.Array]]:
    """Returns `predict(variables, images, sizes, input_sizes, score_threshold) -> outputs`.

    Args:
      model: a Flax module of the kind: semantic (logits [B, H, W, K], or a dict with
        'out') or instance (`Detections`), applied with `train=False`.
      kind: 'semantic' or 'instance' (`jaxseg.models.MODELS[name].task`).
      preprocessing: `mean`, `std`, `pixel_scale`, `antialias` of the input (a converted
        model's `jaxseg.convert.preprocessing`); default ImageNet's, antialiased as PIL.
      mask_threshold: of the pasted instance masks.

    The function's inputs are `jaxseg.serving.pack`'s (`images` uint8 [B, H, W, 3], `sizes`,
    `input_sizes` int32 [B, 2]), a float32 scalar `score_threshold` and, static, the network
    input's `canvas` (default the images' H, W; a free canvas may be smaller); it resizes,
    normalises and pads (`to_network_input`), runs the model and maps the outputs to content
    pixels, those of the `images` array (`content_classes`: `{'classes': int32 [B, H, W]}`;
    `content_detections`: boxes, scores, classes, keep, masks [B, D, H, W]). Pure and
    shape-static: jit it once per canvas and batch, or `jax.export` it.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    preprocessing = dict(preprocessing or {})
    mean = tuple(preprocessing.get("mean") or IMAGENET_MEAN.tolist())
    std = tuple(preprocessing.get("std") or IMAGENET_STD.tolist())
    pixel_scale = float(preprocessing.get("pixel_scale") or 1 / 255)
    antialias = bool(preprocessing.get("antialias", True))

    def predict(variables, images, sizes, input_sizes, score_threshold, canvas=None):
        x = to_network_input(
            images,
            sizes,
            input_sizes,
            mean=mean,
            std=std,
            pixel_scale=pixel_scale,
            antialias=antialias,
            canvas=canvas,
        )
        outputs = model.apply(variables, x, train=False)
        if kind == "semantic":
            logits = outputs["out"] if isinstance(outputs, Mapping) else outputs
            classes = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            shape = tuple(images.shape[1:3])
            return {"classes": content_classes(classes, sizes, input_sizes, shape=shape)}
        return content_detections(
            outputs,
            sizes,
            input_sizes,
            score_threshold,
            canvas=tuple(images.shape[1:3]),
            mask_threshold=mask_threshold,
        )

    return predict


def input_specs(variables: Any, *, canvas: tuple[int, int], batch_size: int) -> tuple[Any, ...]:
    """Returns the `jax.ShapeDtypeStruct`s of the function's five inputs for a canvas, batch."""
    return (
        jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), variables),
        jax.ShapeDtypeStruct((batch_size, *canvas, 3), jnp.uint8),
        jax.ShapeDtypeStruct((batch_size, 2), jnp.int32),
        jax.ShapeDtypeStruct((batch_size, 2), jnp.int32),
        jax.ShapeDtypeStruct((), jnp.float32),
    )
