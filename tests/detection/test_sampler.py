"""Balanced sampler: fixed counts, positives first, uniform choice, nothing ignored."""

import jax
import numpy as np
import pytest

from jaxseg.detection import sample_balanced


def _run(labels, num_samples, fraction, seed=0):
    fn = jax.jit(
        lambda k, x: sample_balanced(k, x, num_samples=num_samples, positive_fraction=fraction)
    )
    return [np.asarray(a) for a in fn(jax.random.key(seed), np.asarray(labels))]


def test_counts_and_order():
    labels = np.array([1, 0, -1, 2, 0, 0, 1, 0, -1, 0, 0, 3, 0])  # 4 pos, 7 neg, 2 ignored
    index, valid, positive = _run(labels, 8, 0.25)
    assert valid.all() and positive.sum() == 2 and positive[:2].all()
    assert (labels[index[:2]] > 0).all() and (labels[index[2:]] == 0).all()
    assert len(set(index.tolist())) == 8


def test_few_positives_are_filled_with_negatives_then_padding():
    labels = np.array([0, 1, 0, -1, 0])  # 1 pos, 3 neg
    index, valid, positive = _run(labels, 6, 0.5)
    np.testing.assert_array_equal(valid, [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(positive, [1, 0, 0, 0, 0, 0])
    assert index[0] == 1 and sorted(index[1:4].tolist()) == [0, 2, 4]
    assert (index[4:] == 0).all()


def test_no_ground_truth_gives_only_negatives():
    index, valid, positive = _run(np.zeros(50, np.int32), 16, 0.5)
    assert valid.all() and not positive.any() and len(set(index.tolist())) == 16


def test_choice_is_uniform():
    labels = np.zeros(10, np.int32)
    counts = np.zeros(10)
    fn = jax.jit(
        jax.vmap(lambda k: sample_balanced(k, labels, num_samples=3, positive_fraction=0.5)[0])
    )
    picks = np.asarray(fn(jax.random.split(jax.random.key(1), 2000)))
    np.add.at(counts, picks.reshape(-1), 1)
    np.testing.assert_allclose(counts / 2000, 0.3, atol=0.04)


def test_bad_input():
    with pytest.raises(ValueError, match="labels"):
        sample_balanced(jax.random.key(0), np.zeros((2, 2)), num_samples=2, positive_fraction=0.5)
    with pytest.raises(ValueError, match="num_samples"):
        sample_balanced(jax.random.key(0), np.zeros(4), num_samples=0, positive_fraction=0.5)
