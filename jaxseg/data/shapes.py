"""Deterministic synthetic scenes of coloured shapes on a textured background.

Each scene is a pure function of `(seed, split, index)`, so examples can be generated in any
order or in parallel and always come out the same. The shapes are chosen to reward fine
predictions: `bar` objects are 1-3 px wide lines and every class appears at sizes down to a
few pixels, which a stride-32 prediction cannot resolve; objects overlap and occlude one
another, and the background is textured so that colour alone does not give the answer.

With `class_colours`, each class has its own band of hues (`CLASS_HUES`) on a background of
greys, so that a pixel's colour tells its class and the task becomes one of outlining:
what FCN's skip connections improve, learnable by a small network in minutes on a CPU.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CLASS_NAMES = ("background", "circle", "square", "triangle", "bar")
"""Semantic class names, index = label id (0 is background)."""

CLASS_HUES = (None, 0.0, 120.0, 240.0, 60.0)
"""Centre hue (degrees) of each class's colours under `class_colours`: red circles, green
squares, blue triangles, yellow bars; each object's hue is within 15 degrees of it."""

_HUE_JITTER = 15.0
_MIN_VISIBLE_PIXELS = 6
_MIN_VISIBLE_FRACTION = 0.35
_PLACEMENT_TRIES = 30


@dataclasses.dataclass(frozen=True)
class Scene:
    """One generated example.

    Attributes:
      image: uint8 [H, W, 3] RGB.
      label: uint8 [H, W] semantic class ids (0 background, 1..K-1 shapes; no ignore).
      boxes: float32 [N, 4] xyxy pixel-edge boxes of the visible part of each object
        (a box covers pixels x1 <= x < x2).
      classes: int32 [N] instance classes 1..K-1 (same ids as the label map).
      masks: uint8 [N, H, W] visible-part masks, 0/1; they do not overlap.
    """

    image: np.ndarray
    label: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    masks: np.ndarray


def generate_scene(
    seed: int,
    split_index: int,
    index: int,
    *,
    image_size: int,
    max_objects: int,
    min_extent: float = 2.5,
    max_extent: float = 0.2,
    bar_width: tuple[float, float] = (1.0, 3.0),
    class_colours: bool = False,
) -> Scene:
    """Returns the scene numbered `index` of split `split_index` for `seed`.

    Args:
      seed: dataset seed.
      split_index: 0 train, 1 validation, 2 test (separate random streams).
      index: example number within the split.
      image_size: side S of the square image, at least 32.
      max_objects: most objects placed; at least 1 is always placed.
      min_extent: smallest object radius (circumradius; half side / 0.85 for squares), px.
      max_extent: largest object radius, as a fraction of `image_size`.
      bar_width: range (low, high) of the bars' widths, px.
      class_colours: colour objects by class (saturated hues around `CLASS_HUES`) on a
        low-saturation background, instead of random colours that avoid the background's.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    if not 0 < min_extent <= max_extent * image_size:
        raise ValueError(
            f"need 0 < min_extent <= max_extent * image_size, got min_extent={min_extent}, "
            f"max_extent={max_extent}, image_size={image_size}"
        )
    if not 0 < bar_width[0] <= bar_width[1]:
        raise ValueError(f"bar_width must be 0 < low <= high, got {bar_width}")
    extents = (min_extent, max_extent * image_size)
    rng = np.random.default_rng([seed, split_index, index])
    size = image_size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    background, bg_colours = _background(rng, xx, yy, grey=class_colours)
    image = background.copy()

    owner = np.full((size, size), -1, np.int32)  # index of the top object at each pixel
    full_areas: list[int] = []
    classes: list[int] = []
    num_objects = int(rng.integers(1, max_objects + 1))
    for _ in range(num_objects):
        for _try in range(_PLACEMENT_TRIES):
            cls = int(rng.integers(1, len(CLASS_NAMES)))
            mask = _shape_mask(rng, cls, xx, yy, size, extents=extents, bar_width=bar_width)
            area = int(mask.sum())
            if area < _MIN_VISIBLE_PIXELS:
                continue
            new_owner = np.where(mask, len(classes), owner)
            if all(
                (new_owner == k).sum() >= max(_MIN_VISIBLE_PIXELS, _MIN_VISIBLE_FRACTION * a)
                for k, a in enumerate(full_areas)
            ):
                break
        else:
            continue  # No acceptable placement for this object: leave it out.
        if class_colours:
            colour = _class_colour(rng, cls)
        else:
            colour = _object_colour(rng, bg_colours)
        shade = _shading(rng, xx, yy, size)
        image = np.where(mask[..., None], colour * shade[..., None], image)
        owner = new_owner
        full_areas.append(area)
        classes.append(cls)

    noise = rng.normal(0.0, 6.0, image.shape)
    image = np.clip(np.round(image + noise), 0, 255).astype(np.uint8)
    masks = np.stack([owner == k for k in range(len(classes))]).astype(np.uint8)
    masks = masks.reshape(len(classes), size, size)
    label = np.zeros((size, size), np.uint8)
    for k, cls in enumerate(classes):
        label[owner == k] = cls
    return Scene(
        image=image,
        label=label,
        boxes=np.stack([_mask_box(m) for m in masks]).reshape(-1, 4).astype(np.float32),
        classes=np.asarray(classes, np.int32),
        masks=masks,
    )


def _background(
    rng: np.random.Generator, xx, yy, *, grey: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (float [H, W, 3] textured background, [2, 3] its two base colours).

    `grey` draws the base colours with saturation at most 0.15.
    """
    if grey:
        hues = rng.uniform(0, 360, size=2)
        colours = np.stack(
            [_hsv_to_rgb(h, rng.uniform(0, 0.15), rng.uniform(0.15, 0.9)) for h in hues]
        )
    else:
        colours = rng.uniform(40, 215, size=(2, 3))
    size = xx.shape[0]
    texture = np.zeros_like(xx)
    for _ in range(3):  # a few oriented stripe patterns of random period
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(0.15, 0.6) * size
        phase = rng.uniform(0, 2 * np.pi)
        texture += np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * (2 * np.pi / period) + phase)
    texture = (texture - texture.min()) / max(np.ptp(texture), 1e-6)
    blend = texture[..., None]
    return colours[0] * (1 - blend) + colours[1] * blend, colours


def _object_colour(rng: np.random.Generator, bg_colours: np.ndarray) -> np.ndarray:
    """Returns a colour [3] that stands apart from both background colours."""
    best, best_distance = None, -1.0
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3)
        distance = float(np.abs(bg_colours - colour).sum(axis=-1).min())
        if distance >= 150:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def _class_colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    """Returns a saturated colour [3] whose hue is within `_HUE_JITTER` of class `cls`'s."""
    hue = CLASS_HUES[cls] + rng.uniform(-_HUE_JITTER, _HUE_JITTER)
    return _hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    """Returns float [3] RGB in 0..255 of a hue in degrees, saturation and value in 0..1."""
    k = (np.array([5.0, 3.0, 1.0]) + hue / 60.0) % 6.0
    return 255.0 * value * (1.0 - saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))


def _shading(rng: np.random.Generator, xx, yy, size: int) -> np.ndarray:
    """Returns a gentle linear brightness ramp [H, W] in about 0.8..1.2."""
    gx, gy = rng.uniform(-0.2, 0.2, size=2)
    return 1.0 + (gx * (xx / size - 0.5) + gy * (yy / size - 0.5)) * 2


def _shape_mask(
    rng: np.random.Generator,
    cls: int,
    xx,
    yy,
    size: int,
    *,
    extents: tuple[float, float],
    bar_width: tuple[float, float],
) -> np.ndarray:
    """Returns bool [H, W], the full (unoccluded) mask of a random shape of class `cls`.

    `extents` is the (low, high) range of the radius in pixels, `bar_width` of bar widths.
    """
    # Sizes are drawn log-uniformly so small objects are as common as large ones.
    extent = float(np.exp(rng.uniform(np.log(extents[0]), np.log(extents[1]))))
    cx, cy = rng.uniform(0.05 * size, 0.95 * size, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    u = c * (xx - cx) + s * (yy - cy)  # rotated coordinates
    v = -s * (xx - cx) + c * (yy - cy)
    name = CLASS_NAMES[cls]
    if name == "circle":
        return u**2 + v**2 <= extent**2
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= extent * 0.85
    if name == "triangle":
        # Equilateral triangle with circumradius `extent`: three half-planes.
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            theta = 2 * np.pi * k / 3
            inside &= np.cos(theta) * u + np.sin(theta) * v <= extent * 0.5
        return inside
    if name == "bar":
        half_length = rng.uniform(0.15, 0.45) * size
        half_width = rng.uniform(bar_width[0] / 2, bar_width[1] / 2)
        return (np.abs(u) <= half_length) & (np.abs(v) <= half_width)
    raise ValueError(f"unknown shape class {cls}")


def _mask_box(mask: np.ndarray) -> np.ndarray:
    """Returns float [4] xyxy pixel-edge box of the nonzero pixels of mask [H, W]."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
