"""Inside the compiled predictor: network outputs back to content pixels.

Class maps are resampled nearest-neighbour from the network input to the content; boxes
are divided by the resize factors, masks pasted at content resolution and thresholded, and
the score threshold applied (`keep`). What is left for the host is cutting and repeating
(`jaxseg.serving.results`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxseg.detection.postprocess import paste_detection_masks
from jaxseg.detection.structures import Detections

__all__ = ["content_classes", "content_detections"]


def _factors(sizes: jax.Array, input_sizes: jax.Array) -> jax.Array:
    """Returns float32 [B, 2]: network pixels per content pixel (1 on empty slots)."""
    sizes = sizes.astype(jnp.float32)
    return jnp.where(sizes > 0, input_sizes.astype(jnp.float32) / jnp.maximum(sizes, 1.0), 1.0)


def _nearest(out_size: int, in_length: jax.Array, out_length: jax.Array) -> jax.Array:
    """Returns int32 [out_size]: the source index of each output pixel (PIL's NEAREST)."""
    ratio = in_length.astype(jnp.float32) / jnp.maximum(out_length.astype(jnp.float32), 1.0)
    index = jnp.floor((jnp.arange(out_size, dtype=jnp.float32) + 0.5) * ratio).astype(jnp.int32)
    return jnp.clip(index, 0, jnp.maximum(in_length - 1, 0))


def content_classes(
    classes: ArrayLike,
    sizes: ArrayLike,
    input_sizes: ArrayLike,
    *,
    shape: tuple[int, int] | None = None,
) -> jax.Array:
    """Returns int32 [B, H, W]: class maps [B, H', W'] of the network input, in content pixels.

    `shape` is (H, W) of the contents' array (default the class maps'); each content's
    (h, w) top-left region holds its classes, the rest is 0.
    """
    classes = jnp.asarray(classes)
    height, width = shape or classes.shape[1:]

    def one(c, size, inside):
        rows = _nearest(height, inside[0], size[0])
        cols = _nearest(width, inside[1], size[1])
        out = c[rows][:, cols]
        valid = (jnp.arange(height) < size[0])[:, None] & (jnp.arange(width) < size[1])[None]
        return jnp.where(valid, out, 0).astype(jnp.int32)

    return jax.vmap(one)(classes, jnp.asarray(sizes), jnp.asarray(input_sizes))


def content_detections(
    detections: Detections,
    sizes: ArrayLike,
    input_sizes: ArrayLike,
    score_threshold: ArrayLike,
    *,
    canvas: tuple[int, int],
    mask_threshold: float = 0.5,
) -> dict[str, jax.Array]:
    """Returns the detections in content pixels, masks pasted.

    Args:
      detections: `Detections` [B, D] in network-input pixels.
      sizes, input_sizes: int32 [B, 2] (see `to_network_input`).
      score_threshold: float32 scalar; detections below it are not kept.
      canvas: (H, W) of the masks.
      mask_threshold: of the pasted probabilities (torchvision's 0.5).

    Returns:
      `boxes` float32 [B, D, 4] xyxy clipped to the content, `scores` [B, D], `classes`
      int32 [B, D], `keep` bool [B, D] (valid, score >= threshold, not an empty slot) and
      `masks` bool [B, D, H, W] (all False where not kept).

    Masks are pasted one kept detection at a time (a scan with a conditional), so memory
    and time grow with the kept detections, not with the D slots.
    """
    sizes = jnp.asarray(sizes, jnp.int32)
    factors = _factors(sizes, jnp.asarray(input_sizes, jnp.int32))  # [B, 2] (y, x)
    per_box = jnp.concatenate([factors[:, ::-1], factors[:, ::-1]], axis=1)[:, None, :]
    boxes = detections.boxes / per_box  # [B, D, 4] content pixels
    keep = (
        detections.valid
        & (detections.scores >= jnp.asarray(score_threshold, jnp.float32))
        & (sizes[:, :1] > 0)
    )
    batch, slots = keep.shape
    height, width = canvas

    def paste(args):
        box, mask, kept = args

        def pasted(_):
            one = Detections(
                boxes=box[None, None],
                scores=jnp.ones((1, 1), jnp.float32),
                classes=jnp.ones((1, 1), jnp.int32),
                masks=mask[None, None],
                valid=jnp.ones((1, 1), bool),
            )
            return paste_detection_masks(one, canvas, threshold=mask_threshold)[0, 0]

        return jax.lax.cond(kept, pasted, lambda _: jnp.zeros(canvas, bool), None)

    masks = jax.lax.map(
        paste,
        (
            boxes.reshape(batch * slots, 4),
            detections.masks.reshape(batch * slots, *detections.masks.shape[2:]),
            keep.reshape(batch * slots),
        ),
    ).reshape(batch, slots, height, width)
    limits = jnp.concatenate([sizes[:, ::-1], sizes[:, ::-1]], axis=1).astype(jnp.float32)
    return {
        "boxes": jnp.clip(boxes, 0.0, limits[:, None, :]),
        "scores": jnp.where(keep, detections.scores, 0.0),
        "classes": jnp.where(keep, detections.classes, 0),
        "keep": keep,
        "masks": masks,
    }
