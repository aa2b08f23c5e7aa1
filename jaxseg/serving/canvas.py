"""Where each image goes in a fixed network canvas: its resize, and the padded batch.

A prediction function compiled for a canvas `(H, W)` and a batch `B` takes
`images` uint8 [B, H, W, 3] (each image's *content* at the top-left), `sizes` int32 [B, 2]
(the content's height and width) and `input_sizes` int32 [B, 2] (the size the content is
resized to inside the network input, at most the canvas). The resize itself happens inside
the compiled function; here the host only decides the sizes.

The content is the image itself, unless the image is larger than the canvas: it is then
first shrunk here by an integer factor `shrink` (mean of `shrink` x `shrink` blocks), so that
it fits; results are mapped back to the image's own pixels by repeating them `shrink` times.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SIZE_DIVISIBLE",
    "Placement",
    "canvas_multiple",
    "check_canvas",
    "check_images",
    "input_scale",
    "pack",
    "parse_canvas",
    "place",
]

SIZE_DIVISIBLE = 32  # network inputs are padded to a multiple of this (the FPN's coarsest stride)


def input_scale(size: tuple[int, int], preprocessing: Mapping[str, Any] | None) -> float:
    """Returns the factor an image of `size` (h, w) is resized by before the network.

    `preprocessing` holds `jaxseg.convert.preprocessing(arch)`'s rule, a cap, or both:
    with `resize: 'shorter_side'` the shorter side goes to `resize_size`, unless the longer
    side would then exceed `max_size` (torchvision's detection rule; its segmentation rule
    has no `max_size`); then `max_side`, if set, caps the longer side (`eval.py
    --max_size`), never enlarging. None: 1 (no resize).
    """
    if not preprocessing:
        return 1.0
    scale = 1.0
    if preprocessing.get("resize") == "shorter_side":
        scale = preprocessing["resize_size"] / min(size)
        if preprocessing.get("max_size"):
            scale = min(scale, preprocessing["max_size"] / max(size))
    if preprocessing.get("max_side"):
        scale = min(scale, preprocessing["max_side"] / max(size))
    return float(scale)


def parse_canvas(text: str, *, what: str = "--canvas", multiple: int = 1) -> tuple[int, int]:
    """Returns (H, W) of 'HxW' (e.g. '800x1344'), checked by `check_canvas`.

    Raises:
      ValueError: naming `what` and the text, for anything else.
    """
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{what} = {text!r}: give HEIGHTxWIDTH in pixels, e.g. 800x1344")
    return check_canvas((int(parts[0]), int(parts[1])), what=what, multiple=multiple)


def canvas_multiple(kind: str) -> int:
    """Returns what each canvas side must be a multiple of for a model of `kind`.

    Mask R-CNN's FPN needs distinct strides down to 32 (`SIZE_DIVISIBLE`, as torchvision
    pads); an FCN takes any size, and padding it would change its outputs near the border
    (torchvision's FCN-ResNet runs at 520 x 520, unpadded).
    """
    return SIZE_DIVISIBLE if kind == "instance" else 1


def check_canvas(
    canvas: Sequence[int], *, what: str = "canvas", multiple: int = SIZE_DIVISIBLE
) -> tuple[int, int]:
    """Returns `canvas` as (H, W) ints after checking both are positive multiples of `multiple`.

    Raises:
      ValueError: naming `what`, the value and the nearest sizes that work.
    """
    if len(canvas) != 2:
        raise ValueError(f"{what} must be (height, width), got {canvas!r}")
    height, width = (int(side) for side in canvas)
    for side in (height, width):
        if side < 1:
            raise ValueError(f"{what} = {height}x{width}: each side must be at least 1 pixel")
        if side % multiple:
            below = max(multiple, side // multiple * multiple)
            above = -(-side // multiple) * multiple
            raise ValueError(
                f"{what} = {height}x{width}: each side must be a multiple of {multiple} for "
                f"this model ({side} is not; {below} or {above} is)"
            )
    return height, width


def check_images(images: Any) -> list[np.ndarray]:
    """Returns `images` as a list of uint8 [H, W, 3] arrays.

    Raises:
      ValueError: for a single image instead of a list, or an image that is not uint8
        [H, W, 3] with H, W >= 1, naming its index, shape and dtype.
    """
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise ValueError(
            f"images must be a list of uint8 [H, W, 3] images, got one array {images.shape}: "
            "pass [image]"
        )
    out = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
            raise ValueError(
                f"images[{i}] must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape} "
                "(convert grey or RGBA images to RGB first)"
            )
        out.append(image)
    return out


@dataclasses.dataclass(frozen=True)
class Placement:
    """How one image enters the network.

    Attributes:
      size: (h, w) of the image.
      shrink: the integer factor the image is shrunk by on the host (1: not at all).
      content_size: (h, w) of the content: `ceil(size / shrink)`.
      input_size: (h, w) the content is resized to inside the network input.
      canvas: (H, W) of the network input.
      input_canvas: (H, W) of the uint8 array the content is packed into: `canvas`, or
        for a free canvas one that holds a content larger than it.
    """

    size: tuple[int, int]
    shrink: int
    content_size: tuple[int, int]
    input_size: tuple[int, int]
    canvas: tuple[int, int]
    input_canvas: tuple[int, int]


def place(
    size: tuple[int, int],
    preprocessing: Mapping[str, Any] | None,
    *,
    canvas: tuple[int, int] | None = None,
    min_size: int = 1,
) -> Placement:
    """Returns where an image of `size` (h, w) goes.

    Args:
      size: the image's height and width.
      preprocessing: the resize rule (see `input_scale`).
      canvas: a fixed (H, W): an image the rule makes larger is shrunk to fit it (aspect
        kept, never cropped); an image larger than the canvas itself is first shrunk on the
        host by the smallest integer factor that fits it in. None: the smallest multiple of
        32 (at least `min_size`) that holds the resized image; an image larger than that
        is shrunk on the host by the largest integer factor that keeps it at least as large
        as the resized image (so the resize inside the network function still shrinks it,
        antialiased), into an input array of its own size.
      min_size: the smallest canvas side when `canvas` is None.
    """
    height, width = int(size[0]), int(size[1])
    scale = input_scale((height, width), preprocessing)
    inside = (max(1, round(height * scale)), max(1, round(width * scale)))
    if canvas is None:
        canvas = _ceil32(inside, min_size)
        shrink = max(1, min(height // inside[0], width // inside[1]))
        content = (-(-height // shrink), -(-width // shrink))
        input_canvas = tuple(max(c, s) for c, s in zip(canvas, _ceil32(content), strict=True))
    else:
        canvas = tuple(canvas)
        if inside[0] > canvas[0] or inside[1] > canvas[1]:
            scale = min(canvas[0] / height, canvas[1] / width)
            inside = (
                min(canvas[0], max(1, round(height * scale))),
                min(canvas[1], max(1, round(width * scale))),
            )
        shrink = max(1, math.ceil(max(height / canvas[0], width / canvas[1])))
        content = (-(-height // shrink), -(-width // shrink))
        input_canvas = canvas
    return Placement((height, width), shrink, content, inside, canvas, input_canvas)


def _ceil32(size: Sequence[int], min_size: int = 1) -> tuple[int, int]:
    """Returns `size` rounded up to multiples of 32, each at least `min_size`."""
    return tuple(max(min_size, -(-side // SIZE_DIVISIBLE) * SIZE_DIVISIBLE) for side in size)


def _shrunk(image: np.ndarray, factor: int) -> np.ndarray:
    """Returns uint8 [ceil(h / f), ceil(w / f), 3]: the means of f x f blocks (edges repeated)."""
    if factor == 1:
        return image
    height, width = image.shape[:2]
    rows, cols = -(-height // factor), -(-width // factor)
    padded = np.pad(
        image, ((0, rows * factor - height), (0, cols * factor - width), (0, 0)), "edge"
    )
    blocks = padded.reshape(rows, factor, cols, factor, 3).astype(np.float32)
    return np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)


def pack(
    images: Sequence[np.ndarray],
    placements: Sequence[Placement],
    *,
    canvas: tuple[int, int],
    batch_size: int,
) -> dict[str, np.ndarray]:
    """Returns the compiled function's inputs for up to `batch_size` images of one canvas.

    `canvas` is the images' `input_canvas` (the array's height and width).

    Returns:
      `images` uint8 [B, H, W, 3] (content at the top-left, zeros elsewhere), `sizes` int32
      [B, 2] and `input_sizes` int32 [B, 2]; B = `batch_size`, the slots after the images
      left empty (sizes 0: the function predicts nothing there).
    """
    if len(images) > batch_size:
        raise ValueError(f"{len(images)} images for a batch of {batch_size}")
    batch = np.zeros((batch_size, *canvas, 3), np.uint8)
    sizes = np.zeros((batch_size, 2), np.int32)
    input_sizes = np.zeros((batch_size, 2), np.int32)
    for i, (image, placement) in enumerate(zip(images, placements, strict=True)):
        if placement.input_canvas != tuple(canvas):
            raise ValueError(f"image {i} is packed into {placement.input_canvas}, not {canvas}")
        content = _shrunk(image, placement.shrink)
        batch[i, : content.shape[0], : content.shape[1]] = content
        sizes[i] = content.shape[:2]
        input_sizes[i] = placement.input_size
    return {"images": batch, "sizes": sizes, "input_sizes": input_sizes}
