"""Per-pixel softmax cross-entropy with ignore label."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import softmax_cross_entropy


def _numpy_loss(logits, labels, ignore=255):
    logits = logits.astype(np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    valid = labels != ignore
    picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    return -(picked * valid).sum(), valid.sum()


def _example(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(2, 5, 7, 4)).astype(np.float32) * 3
    labels = rng.integers(0, 4, size=(2, 5, 7))
    labels[0, :2] = 255
    labels[1, 3, 3] = 255
    return logits, labels


def test_mean_and_sum_match_numpy():
    logits, labels = _example()
    total, count = _numpy_loss(logits, labels)
    assert count == 70 - 14 - 1
    loss = jax.jit(softmax_cross_entropy, static_argnames="reduction")
    np.testing.assert_allclose(loss(logits, labels), total / count, rtol=1e-5)
    np.testing.assert_allclose(loss(logits, labels, reduction="sum"), total, rtol=1e-5)


def test_matches_torch_cross_entropy():
    import torch

    logits, labels = _example(1)
    t_logits = torch.from_numpy(logits).permute(0, 3, 1, 2)
    t_labels = torch.from_numpy(labels)
    for reduction in ("mean", "sum"):
        want = torch.nn.functional.cross_entropy(
            t_logits, t_labels, ignore_index=255, reduction=reduction
        )
        got = softmax_cross_entropy(logits, labels, reduction=reduction)
        np.testing.assert_allclose(got, want.item(), rtol=1e-5)


def test_ignored_pixels_get_no_gradient_and_all_ignored_is_finite():
    logits, labels = _example(2)
    grads = jax.grad(softmax_cross_entropy)(jnp.asarray(logits), labels)
    np.testing.assert_array_equal(grads[0, :2], 0.0)
    assert float(jnp.abs(grads[0, 2:]).min()) > 0
    all_ignored = np.full_like(labels, 255)
    for reduction in ("mean", "sum"):
        loss, grads = jax.value_and_grad(softmax_cross_entropy)(
            jnp.asarray(logits), all_ignored, reduction=reduction
        )
        assert float(loss) == 0.0
        assert bool(jnp.all(grads == 0.0))


def test_out_of_range_labels_are_ignored_and_bf16_logits_give_float32():
    logits, labels = _example(3)
    other = labels.copy()
    other[0, :2] = 7  # not a class, not 255: also left out
    np.testing.assert_allclose(
        softmax_cross_entropy(logits, other), softmax_cross_entropy(logits, labels), rtol=1e-6
    )
    other = labels.copy()
    other[0, :2] = 0  # a real class counts
    assert float(softmax_cross_entropy(logits, other)) != float(
        softmax_cross_entropy(logits, labels)
    )
    assert softmax_cross_entropy(logits.astype(jnp.bfloat16), labels).dtype == jnp.float32


def test_rejects_bad_input():
    logits, labels = _example()
    with pytest.raises(ValueError, match=r"\(2, 5, 7, 4\) and \(2, 5\)"):
        softmax_cross_entropy(logits, labels[:, :, 0])
    with pytest.raises(ValueError, match="reduction"):
        softmax_cross_entropy(logits, labels, reduction="none")
