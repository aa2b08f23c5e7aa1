"""torch tensor layouts to jaxseg's: the one place where weights change shape or order.

torch stores convolutions `[O, I, kh, kw]` (OIHW), transposed convolutions `[I, O, kh, kw]`
and linear layers `[O, I]`; Flax wants `[kh, kw, I, O]` (HWIO) and `[I, O]`. Everything
else (biases, BatchNorm vectors) keeps its layout.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "conv_kernel",
    "convert_tensor",
    "linear_as_conv_kernel",
    "linear_kernel",
    "linear_on_hwc_kernel",
    "patch_kernel",
    "transposed_conv_kernel",
]


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """Returns `[kh, kw, I, O]` from a torch `Conv2d` weight `[O, I, kh, kw]`."""
    return np.transpose(weight, (2, 3, 1, 0))


def linear_kernel(weight: np.ndarray) -> np.ndarray:
    """Returns `[I, O]` from a torch `Linear` weight `[O, I]`."""
    return np.transpose(weight)


def linear_as_conv_kernel(weight: np.ndarray, height: int, width: int) -> np.ndarray:
    """Returns `[height, width, C, O]`: a `Linear` on a flattened map as a VALID conv kernel.

    torch flattens a `[C, height, width]` map in C, H, W order, so `weight [O, C * height *
    width]` reshapes to `[O, C, height, width]` (VGG's fc6 on pool5: 25088 = 512 * 7 * 7)
    before the usual OIHW -> HWIO permutation.
    """
    out_features, in_features = weight.shape
    if in_features % (height * width):
        raise ValueError(
            f"a Linear weight {weight.shape} does not flatten a map of {height}x{width} pixels"
        )
    return conv_kernel(weight.reshape(out_features, -1, height, width))


def linear_on_hwc_kernel(weight: np.ndarray, height: int, width: int) -> np.ndarray:
    """Returns `[height * width * C, O]`: a `Linear` on a `[C, height, width]` map, for jaxseg's
    Dense on the same map flattened channels last (`[height, width, C]`).

    torch flattens C, H, W (Mask R-CNN's box head fc6 on 256 x 7 x 7 RoI features); the
    input rows are permuted to H, W, C.
    """
    out_features = weight.shape[0]
    return linear_as_conv_kernel(weight, height, width).reshape(-1, out_features)


def transposed_conv_kernel(weight: np.ndarray) -> np.ndarray:
    """Returns `[kh, kw, I, O]` for `flax.linen.ConvTranspose` from a torch `ConvTranspose2d`.

    torch's weight is `[I, O, kh, kw]` and its transposed conv is the gradient of a conv, which
    flips the kernel in space; Flax's `ConvTranspose` (`transpose_kernel=False`) does not, so
    the kernel is flipped here.
    """
    return np.transpose(weight, (2, 3, 0, 1))[::-1, ::-1]


def patch_kernel(weight: np.ndarray) -> np.ndarray:
    """Returns `[kh, kw, I, O]` with `kernel[a, b] = weight[:, :, a, b]` from a torch
    `ConvTranspose2d` weight `[I, O, kh, kw]` whose stride equals its kernel size.

    Such a transposed conv writes each input pixel's `kh x kw` patch of outputs without
    overlap: output `(s i + a, s j + b)` is `x[i, j] @ weight[:, :, a, b]`. jaxseg's
    `ConvTranspose2x2` (Mask R-CNN's `conv5_mask`) computes exactly that as one matmul, so
    the kernel is permuted, not flipped (unlike `transposed_conv_kernel`).
    """
    return np.transpose(weight, (2, 3, 0, 1))


def convert_tensor(value: np.ndarray, target_shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Returns `value` (a torch tensor as NumPy) in jaxseg's layout for a leaf of `target_shape`.

    Args:
      value: the torch tensor's values, in torch's layout.
      target_shape: the jaxseg variable's shape.
      kind: 'kernel' (a conv `[kh, kw, I, O]`, a dense `[I, O]`, or a dense layer that jaxseg
        runs as a conv: told apart by the ranks), 'transposed_kernel' (for Flax's
        `ConvTranspose`), 'patch_kernel' (a transposed conv with stride = kernel, written
        as a matmul), 'hwc_kernel:HxW' (a dense layer on an H x W map flattened channels
        last), or 'vector' (kept as is).

    Raises:
      ValueError: for an unknown kind or ranks that no layout maps onto each other.
    """
    if kind == "vector":
        return value
    if kind == "transposed_kernel" and value.ndim == 4:
        return np.ascontiguousarray(transposed_conv_kernel(value))
    if kind == "patch_kernel" and value.ndim == 4:
        return np.ascontiguousarray(patch_kernel(value))
    if kind == "kernel" and value.ndim == 4 and len(target_shape) == 4:
        return np.ascontiguousarray(conv_kernel(value))
    if kind == "kernel" and value.ndim == 2 and len(target_shape) == 2:
        return np.ascontiguousarray(linear_kernel(value))
    if kind.startswith("hwc_kernel:") and value.ndim == 2 and len(target_shape) == 2:
        height, width = (int(n) for n in kind.split(":")[1].split("x"))
        return np.ascontiguousarray(linear_on_hwc_kernel(value, height, width))
    if kind == "kernel" and value.ndim == 2 and len(target_shape) == 4:
        return np.ascontiguousarray(linear_as_conv_kernel(value, *target_shape[:2]))
    raise ValueError(
        f"no layout maps a torch tensor of shape {value.shape} onto a {kind} of shape "
        f"{tuple(target_shape)}"
    )
