"""VGG16 backbone of the FCN reference: pooling, feature sizes, parameters vs torchvision."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import FCN, VGG16, build_model
from jaxseg.models.vgg import max_pool_ceil, scaled_channels

# torchvision vgg16: features index of each conv, in order.
_TORCHVISION_CONVS = {
    "conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12,
    "conv3_3": 14, "conv4_1": 17, "conv4_2": 19, "conv4_3": 21, "conv5_1": 24, "conv5_2": 26,
    "conv5_3": 28,
}  # fmt: skip


def _count(tree):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4), (7, 9)])
def test_max_pool_ceil_matches_torch_ceil_mode(size):
    import torch

    x = np.random.default_rng(0).normal(size=(2, 3, *size)).astype(np.float32)
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, 2, ceil_mode=True)
    got = max_pool_ceil(jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_array_equal(got, expected.permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("size", [(1, 1), (17, 64), (500, 375), (224, 33)])
def test_feature_sizes(size):
    model = VGG16(width=1 / 16)
    x = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    features = jax.eval_shape(model.apply, variables, x)
    h, w = (s + 198 for s in size)
    assert features["pool3"].shape == (1, -(-h // 8), -(-w // 8), 16)
    assert features["pool4"].shape == (1, -(-h // 16), -(-w // 16), 32)
    assert features["fc7"].shape == (1, -(-h // 32) - 6, -(-w // 32) - 6, 256)


def test_parameters_match_torchvision_vgg16():
    import torch
    import torchvision

    with torch.device("meta"):  # shapes only, no 138M-parameter allocation
        reference = torchvision.models.vgg16(weights=None)
    variables = jax.eval_shape(VGG16().init, jax.random.key(0), jnp.zeros((1, 1, 1, 3)))
    params = variables["params"]
    assert set(params) == {*_TORCHVISION_CONVS, "fc6", "fc7"}
    for name, index in _TORCHVISION_CONVS.items():
        conv = reference.features[index]
        assert params[name]["kernel"].shape == tuple(conv.weight.permute(2, 3, 1, 0).shape)
        assert params[name]["bias"].shape == tuple(conv.bias.shape)
    fc6, fc7 = reference.classifier[0], reference.classifier[3]
    assert params["fc6"]["kernel"].shape == (7, 7, 512, 4096)
    assert math.prod(params["fc6"]["kernel"].shape) == fc6.weight.numel()
    assert params["fc7"]["kernel"].shape == (1, 1, *fc7.weight.T.shape)
    fc8 = sum(p.numel() for p in reference.classifier[6].parameters())
    torchvision_total = sum(p.numel() for p in reference.parameters())
    assert _count(params) == torchvision_total - fc8 == 134_260_544


def test_fcn_parameter_counts_at_full_width():
    model = FCN(num_classes=21, stride=32)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1, 1, 3)))
    # VGG16 without fc8 (134,260,544) + score_fr (4096 * 21 + 21).
    assert _count(variables["params"]) == 134_260_544 + 86_037 == 134_346_581
    learnable = FCN(num_classes=21, stride=32, learnable_upsampling=True)
    variables = jax.eval_shape(learnable.init, jax.random.key(0), jnp.zeros((1, 1, 1, 3)))
    # + the reference's upscore blob, 64 x 64 x 21 x 21.
    assert _count(variables["params"]) == 134_346_581 + 1_806_336
    # 16s adds score_pool4 (512 * 21 + 21), 8s also score_pool3 (256 * 21 + 21).
    for name, count in [("fcn16s", 134_357_354), ("fcn8s", 134_362_751)]:
        model = build_model(name, num_classes=21)
        variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1, 1, 3)))
        assert (
            _count(variables["params"]) == count == 134_346_581 + 10_773 + (name == "fcn8s") * 5_397
        )


def test_dropout_only_in_training(random_variables):
    model = VGG16(width=1 / 16)
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype(np.float32)
    variables = random_variables(model, x)
    apply = jax.jit(
        lambda seed, train: model.apply(
            variables, x, train=train, rngs={"dropout": jax.random.key(seed)}
        )["fc7"],
        static_argnums=1,
    )
    np.testing.assert_array_equal(apply(2, False), apply(3, False))
    train_a, train_b = apply(2, True), apply(3, True)
    assert not np.array_equal(train_a, train_b)


def test_scaled_channels():
    assert [scaled_channels(c, 1 / 16) for c in (64, 512, 4096)] == [4, 32, 256]
    assert scaled_channels(64, 0.001) == 1
    with pytest.raises(ValueError, match="width"):
        scaled_channels(64, 0.0)
