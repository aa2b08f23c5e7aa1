"""Dilated 3x3 convolutions (FCN-ResNet50's layer3 and layer4) on XLA:CPU, five ways, and torch.

    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/dilated_conv.py [--repeats 5]

FCN-ResNet50 at 520 x 520 (output stride 8) runs its layer3 3x3 convs at 65 x 65 with 256
channels, dilation 2, and its layer4 ones at 65 x 65 with 512 channels, dilation 4 (batch 2,
as benchmarks/fcn.py). Each way is timed forward, and forward + backward (the gradients of
input and kernel), median of `--repeats` after a warm-up:

- `lax.conv`: `conv_general_dilated` with `rhs_dilation` (what `nn.Conv(kernel_dilation=)`
  and jaxseg's ResNet run);
- space-to-batch: pad, fold the d x d phases of the image into the batch, an undilated conv
  on maps d times smaller, unfold (the classic rewrite; TensorFlow's `atrous_conv2d`);
- shifted matmuls: nine matmuls of shifted views (as jaxseg's mask head);
- im2col matmul: the nine dilated taps concatenated along the channels, one matmul with
  the kernel reshaped to [9 C, O];
- torch: `torch.nn.functional.conv2d(dilation=d)`, the same shapes, same process.

All jaxseg ways are checked equal to `lax.conv` first.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

CASES = {"layer3 (256 ch, d=2)": (256, 2), "layer4 (512 ch, d=4)": (512, 4)}
BATCH, SIDE = 2, 65


def _median(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def jax_ways():
    import jax
    import jax.numpy as jnp

    def lax_conv(x, k, d):
        return jax.lax.conv_general_dilated(
            x,
            k,
            (1, 1),
            ((d, d), (d, d)),
            rhs_dilation=(d, d),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )

    def space_to_batch(x, k, d):
        b, h, w, c = x.shape
        hp, wp = -(-(h + 2 * d) // d) * d, -(-(w + 2 * d) // d) * d
        x = jnp.pad(x, ((0, 0), (d, hp - h - d), (d, wp - w - d), (0, 0)))
        x = x.reshape(b, hp // d, d, wp // d, d, c).transpose(2, 4, 0, 1, 3, 5)
        x = x.reshape(d * d * b, hp // d, wp // d, c)
        y = jax.lax.conv_general_dilated(
            x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        o = y.shape[-1]
        y = y.reshape(d, d, b, hp // d - 2, wp // d - 2, o).transpose(2, 3, 0, 4, 1, 5)
        return y.reshape(b, hp - 2 * d, wp - 2 * d, o)[:, :h, :w]

    def shifted_matmuls(x, k, d):
        _, h, w, _ = x.shape
        padded = jnp.pad(x, ((0, 0), (d, d), (d, d), (0, 0)))
        out = 0.0
        for dy in range(3):
            for dx in range(3):
                window = padded[:, dy * d : dy * d + h, dx * d : dx * d + w]
                out = out + jnp.einsum("bhwc,co->bhwo", window, k[dy, dx])
        return out

    def im2col(x, k, d):
        _, h, w, c = x.shape
        padded = jnp.pad(x, ((0, 0), (d, d), (d, d), (0, 0)))
        taps = [
            padded[:, dy * d : dy * d + h, dx * d : dx * d + w]
            for dy in range(3)
            for dx in range(3)
        ]
        return jnp.einsum("bhwk,ko->bhwo", jnp.concatenate(taps, -1), k.reshape(9 * c, -1))

    return {
        "lax.conv": lax_conv,
        "space-to-batch": space_to_batch,
        "shifted matmuls": shifted_matmuls,
        "im2col matmul": im2col,
    }


def _case(channels: int, d: int, repeats: int, rng: np.random.Generator) -> dict:
    """Returns {way: (forward s, forward + backward s)} for one layer's shapes."""
    import jax
    import jax.numpy as jnp
    import torch

    x = rng.normal(size=(BATCH, SIDE, SIDE, channels)).astype(np.float32)
    k = (rng.normal(size=(3, 3, channels, channels)) * 0.02).astype(np.float32)
    g = rng.normal(size=(BATCH, SIDE, SIDE, channels)).astype(np.float32)
    ways = jax_ways()
    reference = np.asarray(jax.jit(ways["lax.conv"], static_argnums=2)(x, k, d))
    rows = {}
    for name, way in ways.items():
        forward = jax.jit(lambda x, k, w=way: w(x, k, d))
        got = np.asarray(forward(x, k))
        assert np.abs(got - reference).max() <= 1e-3 * np.abs(reference).max(), name
        grads = jax.jit(jax.grad(lambda x, k, w=way: jnp.sum(w(x, k, d) * g), argnums=(0, 1)))
        rows[name] = (
            _median(lambda f=forward: f(x, k).block_until_ready(), repeats),
            _median(lambda f=grads: jax.block_until_ready(f(x, k)), repeats),
        )
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    kt = torch.from_numpy(k).permute(3, 2, 0, 1).contiguous().requires_grad_(True)
    gt = torch.from_numpy(g).permute(0, 3, 1, 2).contiguous()
    conv = torch.nn.functional.conv2d

    def torch_forward():
        with torch.no_grad():
            conv(xt, kt, padding=d, dilation=d)

    def torch_backward():
        (conv(xt, kt, padding=d, dilation=d) * gt).sum().backward()

    rows["torch"] = (_median(torch_forward, repeats), _median(torch_backward, repeats))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch

    load = os.getloadavg()[0]
    print(
        f"dilated 3x3 conv, batch {BATCH}, {SIDE}x{SIDE}, median of {args.repeats}; load "
        f"average {load:.2f} at the start; torch {torch.get_num_threads()} threads"
    )
    print(f"{'case':22s}{'way':18s}{'forward (s)':>13s}{'fwd+bwd (s)':>13s}{'vs lax.conv':>13s}")
    rng = np.random.default_rng(0)
    for case, (channels, d) in CASES.items():
        rows = _case(channels, d, args.repeats, rng)
        base = rows["lax.conv"][1]
        for name, (fwd, both) in rows.items():
            print(f"{case:22s}{name:18s}{fwd:13.3f}{both:13.3f}{both / base:13.2f}")


if __name__ == "__main__":
    main()
