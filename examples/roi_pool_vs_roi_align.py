"""Why Mask R-CNN replaced RoIPool by RoIAlign, on the 4x4 feature map of the project notes.

    python examples/roi_pool_vs_roi_align.py

Pools a RoI with fractional borders from a 4x4 map with both ops, then slides the RoI by
fractions of a pixel over a ramp map: RoIPool's output jumps in steps (its borders snap to
the grid), RoIAlign's follows the RoI exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import ops

FEATURES = np.array(
    [
        [0.3, 0.4, 0.2, 0.1],
        [0.5, 0.1, 0.9, 0.7],
        [0.3, 0.6, 0.2, 0.2],
        [0.1, 0.7, 0.9, 0.1],
    ],
    np.float32,
)[..., None]  # [H, W, C=1]


def show(title, grid):
    print(title)
    for row in np.asarray(grid)[..., 0]:
        print("   " + "  ".join(f"{v:5.3f}" for v in row))


def main():
    box = jnp.array([[0.6, 0.4, 2.4, 2.6]])  # x1, y1, x2, y2 in feature pixels
    show("feature map", FEATURES)
    print("RoI (x1, y1, x2, y2) = (0.6, 0.4, 2.4, 2.6)")
    show(
        "RoIPool 2x2 (corners rounded to (1, 0, 2, 3), bins rounded again)",
        ops.roi_pool(FEATURES, box, 2)[0],
    )
    show(
        "RoIAlign 2x2 (2x2 bilinear samples per bin at exact positions, aligned=False)",
        ops.roi_align(FEATURES, box, 2, sampling_ratio=2, aligned=False)[0],
    )

    y, x = np.mgrid[:8, :8].astype(np.float32)
    ramp = jnp.asarray((10 * y + x)[..., None])  # value 10y + x at pixel (y, x)
    print("\nslide a 4x4 RoI right over a ramp (value = 10 y + x): 1x1 output")
    print("RoIAlign returns the value at the RoI centre; RoIPool the max of the rounded window,")
    print("which moves only in whole pixels.")
    print("   shift   exact centre   RoIAlign   RoIPool")
    pool_1x1 = jax.jit(lambda b: ops.roi_pool(ramp, b, 1)[0, 0, 0, 0])
    align_1x1 = jax.jit(
        lambda b: ops.roi_align(ramp, b, 1, sampling_ratio=2, aligned=True)[0, 0, 0, 0]
    )
    for shift in np.linspace(0, 1, 6):
        b = jnp.array([[1.0 + shift, 1.0, 5.0 + shift, 5.0]])
        centre = 10 * (3.0 - 0.5) + (3.0 + shift - 0.5)  # pixel centres sit at +0.5
        print(
            f"   {shift:5.2f}   {centre:12.2f}   {float(align_1x1(b)):8.2f}   "
            f"{float(pool_1x1(b)):7.2f}"
        )


if __name__ == "__main__":
    main()
