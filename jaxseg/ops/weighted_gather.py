"""The weighted gather behind RoIAlign: sums of weighted rows of a flat buffer, fused.

`weighted_gather(flat, index, weight)` is every bilinear pooler's inner loop (see
`roi_align`): T weighted rows summed per output, accumulated in float32, with a custom
backward made of float32 scatter-adds.
"""

import jax
import jax.numpy as jnp


def accumulation_dtype(dtype) -> jnp.dtype:
    """Returns the dtype sums are accumulated in: float32 for narrower floats, else `dtype`."""
    return jnp.result_type(dtype, jnp.float32)


# Terms gathered per fused step. Up to UNROLLED_TERMS terms (sampling ratios up to 4) are
# unrolled into one loop; more (large adaptive caps) go through a fori_loop of chunks, so
# compile time and the backward's update buffer stay bounded.
TERMS_PER_CHUNK = 16
UNROLLED_TERMS = 64


def _chunked(index: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns index, weight [K, ..., TERMS_PER_CHUNK]: the T terms in K chunks, zero-padded."""
    terms = index.shape[-1]
    chunks = -(-terms // TERMS_PER_CHUNK)
    pad = [(0, 0)] * (index.ndim - 1) + [(0, chunks * TERMS_PER_CHUNK - terms)]
    index, weight = jnp.pad(index, pad), jnp.pad(weight, pad)  # row 0 with weight 0

    def split(a):  # [..., K * TERMS_PER_CHUNK] -> [K, ..., TERMS_PER_CHUNK]
        a = a.reshape(*a.shape[:-1], chunks, TERMS_PER_CHUNK)
        return jnp.moveaxis(a, -2, 0)

    return split(index), split(weight)


def _gather_sum(flat, index, weight, acc):
    """Returns [..., C] in `acc`: the sum of T unrolled, fused gathers."""
    out = jnp.zeros((*index.shape[:-1], flat.shape[-1]), acc)
    for t in range(index.shape[-1]):
        rows = flat.at[index[..., t]].get(mode="promise_in_bounds").astype(acc)
        out = out + rows * weight[..., t, None].astype(acc)
    return out


@jax.custom_vjp
def weighted_gather(flat: jax.Array, index: jax.Array, weight: jax.Array) -> jax.Array:
    """Returns [..., C] in `flat.dtype`: `sum_t weight[..., t] * flat[index[..., t]]`.

    Args:
      flat: [P, C] rows to read.
      index: [..., T] int32 rows of `flat`, all in range.
      weight: [..., T] their weights (float32).

    The sum is written as T separate gathers so that XLA fuses them with the multiply-adds
    into one loop: a single [..., T, C] gather followed by a reduction would be written to
    memory first, which is several times slower on CPU. The terms are accumulated in float32
    (or wider) and rounded to `flat.dtype` once (torchvision's autocast: float32 compute,
    one rounding). The backward is a scatter-add of the terms in float32 (XLA would emit
    one scatter per term, and bf16 scatter-adds are slow), cast back to `flat.dtype`: one
    scatter for up to 16 terms (sampling ratio 2), else one per chunk of 16.
    """
    acc = accumulation_dtype(flat.dtype)
    if index.shape[-1] <= UNROLLED_TERMS:
        return _gather_sum(flat, index, weight, acc).astype(flat.dtype)
    index, weight = _chunked(index, weight)

    def step(k, out):
        return out + _gather_sum(flat, index[k], weight[k], acc)

    out = jnp.zeros((*index.shape[1:-1], flat.shape[-1]), acc)
    return jax.lax.fori_loop(0, index.shape[0], step, out).astype(flat.dtype)


def _weighted_gather_fwd(flat, index, weight):
    return weighted_gather(flat, index, weight), (flat, index, weight)


def _scatter_chunk(d_flat, flat, index, weight, cotangent):
    """Returns (d_flat plus the chunk's terms, d_weight [..., T]) for one chunk of terms."""
    channels = flat.shape[-1]
    updates = weight[..., None].astype(d_flat.dtype) * cotangent[..., None, :]  # [..., T, C]
    d_flat = d_flat.at[index.reshape(-1)].add(
        updates.reshape(-1, channels), mode="promise_in_bounds"
    )
    rows = flat.at[index].get(mode="promise_in_bounds").astype(d_flat.dtype)  # [..., T, C]
    return d_flat, jnp.einsum("...tc,...c->...t", rows, cotangent)


def _weighted_gather_bwd(residuals, cotangent):
    flat, index, weight = residuals
    acc = accumulation_dtype(flat.dtype)
    cotangent = cotangent.astype(acc)
    d_flat = jnp.zeros(flat.shape, acc)
    terms = index.shape[-1]
    if terms <= TERMS_PER_CHUNK:
        d_flat, d_weight = _scatter_chunk(d_flat, flat, index, weight, cotangent)
    else:
        chunked_index, chunked_weight = _chunked(index, weight)

        def step(d_flat, chunk):
            return _scatter_chunk(d_flat, flat, chunk[0], chunk[1], cotangent)

        d_flat, d_weight = jax.lax.scan(step, d_flat, (chunked_index, chunked_weight))
        d_weight = jnp.moveaxis(d_weight, 0, -2).reshape(*index.shape[:-1], -1)[..., :terms]
    return d_flat.astype(flat.dtype), None, d_weight.astype(weight.dtype)


weighted_gather.defvjp(_weighted_gather_fwd, _weighted_gather_bwd)
