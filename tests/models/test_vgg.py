"""VGG16 backbone of the FCN reference: pooling, feature sizes, parameters vs torchvision."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import FCN, VGG16, build_model
from jaxseg.models.vgg import _max_pool_reshape, _max_pool_window, max_pool_ceil, scaled_channels

# torchvision vgg16: features index of each conv, in order.
_TORCHVISION_CONVS = {
    "conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12,
    "conv3_3": 14, "conv4_1": 17, "conv4_2": 19, "conv4_3": 21, "conv5_1": 24, "conv5_2": 26,
    "conv5_3": 28,
}  # fmt: skip


def _count(tree):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4), (7, 9)])
def test_max_pool_ceil_matches_torch_ceil_mode_values_and_gradients(size):
    import torch

    x = np.random.default_rng(0).normal(size=(2, 3, *size)).astype(np.float32)
    x_torch = torch.from_numpy(x).requires_grad_()
    expected = torch.nn.functional.max_pool2d(x_torch, 2, 2, ceil_mode=True)
    weights = np.random.default_rng(1).normal(size=expected.shape).astype(np.float32)
    (expected * torch.from_numpy(weights)).sum().backward()
    x_jax = jnp.asarray(x.transpose(0, 2, 3, 1))
    got, vjp = jax.vjp(max_pool_ceil, x_jax)
    np.testing.assert_array_equal(got, expected.detach().permute(0, 2, 3, 1).numpy())
    (grad,) = vjp(jnp.asarray(weights.transpose(0, 2, 3, 1)))
    np.testing.assert_array_equal(grad, x_torch.grad.permute(0, 2, 3, 1).numpy())


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


def test_batch_norm_matches_torchvision_vgg16_bn(random_variables):
    """With `batch_norm`, pool3 / pool4 equal torchvision's `vgg16_bn` features in eval mode
    (given the reference's conv1_1 padding of 100 and ceil-mode pooling)."""
    import torch
    import torchvision

    model = VGG16(width=1.0, batch_norm=True)
    x = np.random.default_rng(1).normal(size=(1, 11, 14, 3)).astype(np.float32)
    variables = random_variables(model, x)
    reference = torchvision.models.vgg16_bn(weights=None).eval()
    reference.features[0].padding = (100, 100)
    state = {}
    convs = [m for m in reference.features if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in reference.features if isinstance(m, torch.nn.BatchNorm2d)]
    for name, conv, norm in zip(_TORCHVISION_CONVS, convs, norms, strict=True):
        params = variables["params"][name]
        bn_name = name.replace("conv", "bn")
        bn, stats = variables["params"][bn_name], variables["batch_stats"][bn_name]
        state[conv] = {
            "weight": np.asarray(params["kernel"]).transpose(3, 2, 0, 1),
            "bias": np.asarray(params["bias"]),
        }
        state[norm] = {
            "weight": np.asarray(bn["scale"]),
            "bias": np.asarray(bn["bias"]),
            "running_mean": np.asarray(stats["mean"]),
            "running_var": np.asarray(stats["var"]),
        }
    with torch.no_grad():
        for module, tensors in state.items():
            for key, value in tensors.items():
                getattr(module, key).copy_(torch.from_numpy(value.copy()))
        h = torch.from_numpy(x.transpose(0, 3, 1, 2))
        pools = []
        for module in reference.features:
            if isinstance(module, torch.nn.MaxPool2d):
                module.ceil_mode = True
            h = module(h)
            if isinstance(module, torch.nn.MaxPool2d):
                pools.append(h.permute(0, 2, 3, 1).numpy())
    features = jax.jit(model.apply)(variables, x)
    for key, expected in [("pool3", pools[2]), ("pool4", pools[3])]:
        np.testing.assert_allclose(
            features[key], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
        )


def test_batch_norm_statistics_update_only_in_training(random_variables):
    model = VGG16(width=1 / 16, batch_norm=True, dropout_rate=0.0)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    variables = random_variables(model, x)
    assert set(variables) == {"params", "batch_stats"}
    assert "bn5_3" in variables["params"] and "bn1_1" in variables["batch_stats"]
    train, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    evaluation = model.apply(variables, x)
    assert not np.allclose(train["pool3"], evaluation["pool3"])  # batch vs running statistics
    old = variables["batch_stats"]["bn1_1"]["mean"]
    new = updates["batch_stats"]["bn1_1"]["mean"]
    assert not np.allclose(old, new)
    # torchvision's momentum 0.1: the new running mean is 0.9 old + 0.1 the batch's.
    batch_mean = (np.asarray(new) - 0.9 * np.asarray(old)) / 0.1
    assert np.isfinite(batch_mean).all() and np.abs(batch_mean).max() > 0


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 7, 9, 2)])
def test_the_accelerator_max_pool_equals_the_cpu_one(shape):
    # max_pool_ceil is a reshape on CPU and lax.reduce_window on GPU / TPU: the same values,
    # and without ties in a window the same gradient.
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.permutation(math.prod(shape)).reshape(shape).astype(np.float32))
    np.testing.assert_array_equal(_max_pool_reshape(x), _max_pool_window(x))
    weights = jnp.asarray(rng.normal(size=_max_pool_reshape(x).shape).astype(np.float32))
    grad = [
        jax.grad(lambda x, f=f: jnp.sum(f(x) * weights))(x)
        for f in (_max_pool_reshape, _max_pool_window)
    ]
    np.testing.assert_array_equal(grad[0], grad[1])
