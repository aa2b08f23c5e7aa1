"""Staged initialisation: FCN-16s from FCN-32s, FCN-8s from FCN-16s."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import build_model, transplant


def _init(name, **kwargs):
    model = build_model(name, num_classes=3, width=1 / 16, **kwargs)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1, 1, 3)))
    rng = np.random.default_rng(len(name))
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)


def test_16s_from_32s_and_8s_from_16s():
    fcn32s = _init("fcn32s")
    fcn16s = _init("fcn16s")
    merged, copied = transplant(fcn32s, fcn16s)
    assert jax.tree.structure(merged) == jax.tree.structure(fcn16s)
    assert "params/score_fr/kernel" in copied and "params/backbone/fc6/kernel" in copied
    assert not any("score_pool4" in path for path in copied)
    np.testing.assert_array_equal(
        merged["params"]["score_fr"]["bias"], fcn32s["params"]["score_fr"]["bias"]
    )
    np.testing.assert_array_equal(
        merged["params"]["score_pool4"]["kernel"], fcn16s["params"]["score_pool4"]["kernel"]
    )
    learnable16 = _init("fcn16s", learnable_upsampling=True)
    learnable8 = _init("fcn8s", learnable_upsampling=True)
    merged, copied = transplant(learnable16, learnable8)
    assert "params/upscore2/kernel" in copied  # shared name and shape: copied as in the reference
    assert not any(
        p.startswith(("params/upscore16", "params/upscore8", "params/score_pool3")) for p in copied
    )


def test_a_different_class_count_is_an_error():
    source = _init("fcn32s")
    target = jax.eval_shape(
        build_model("fcn16s", num_classes=5, width=1 / 16).init,
        jax.random.key(0),
        jnp.zeros((1, 1, 1, 3)),
    )
    with pytest.raises(
        ValueError, match=r"params/score_fr/bias has shape \(3,\) in the source but \(5,\)"
    ):
        transplant(source, target)
