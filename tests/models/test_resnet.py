"""ResNet backbones: feature shapes, dilation, torchvision parity, BatchNorm modes, freezing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.models import FCNResNet, FrozenBatchNorm, ResNet, trainable_mask

TINY = 1 / 16


def _down(n, times):
    for _ in range(times):
        n = (n - 1) // 2 + 1
    return n


@pytest.mark.parametrize("depth", [18, 34, 50])
@pytest.mark.parametrize("dilation", [(False, False, False), (False, True, True)])
def test_feature_shapes(depth, dilation):
    model = ResNet(depth=depth, width=TINY, replace_stride_with_dilation=dilation)
    expansion = 4 if depth >= 50 else 1
    for size in [(1, 1), (33, 64), (65, 47)]:
        x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
        variables = jax.eval_shape(model.init, jax.random.key(0), x)
        features = jax.eval_shape(model.apply, variables, x)
        downs = {"c2": 2, "c3": 3, "c4": 4, "c5": 5}
        if dilation[1]:
            downs.update(c4=3, c5=3)
        for level, times in downs.items():
            planes = 4 * 2 ** (int(level[1]) - 2)
            want = (2, _down(size[0], times), _down(size[1], times), planes * expansion)
            assert features[level].shape == want, (level, size)


def test_block_names_and_counts():
    variables = jax.eval_shape(
        ResNet(depth=101, width=TINY).init, jax.random.key(0), jnp.zeros((1, 8, 8, 3))
    )
    params = variables["params"]
    blocks = {name for name in params if name.startswith("layer")}
    assert len(blocks) == 3 + 4 + 23 + 3
    assert {"conv1", "bn1", "layer3_22", "layer4_2"} <= set(params)
    assert set(params["layer1_0"]) == {
        "conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample_conv", "downsample_bn",
    }  # fmt: skip
    assert "downsample_conv" not in params["layer1_1"]
    assert set(variables["batch_stats"]["layer2_0"]["bn2"]) == {"mean", "var"}


def test_resnet18_matches_torchvision(torchvision_variables, torchvision_resnet18):
    import torch

    net = torchvision_resnet18
    images = torch.randn(2, 3, 45, 38, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        expected = {}
        for i in range(1, 5):
            h = getattr(net, f"layer{i}")(h)
            expected[f"c{i + 1}"] = h.permute(0, 2, 3, 1).numpy()
    variables = torchvision_variables(net.state_dict())
    got = jax.jit(ResNet(depth=18).apply)(variables, images.permute(0, 2, 3, 1).numpy())
    for level, want in expected.items():
        assert got[level].shape == want.shape
        np.testing.assert_allclose(got[level], want, rtol=0, atol=1e-4 * np.abs(want).max())


def test_batch_norm_modes(random_variables):
    x = np.random.default_rng(0).normal(size=(2, 24, 24, 3)).astype(np.float32)
    batch = ResNet(depth=18, width=TINY)
    variables = random_variables(batch, x)
    train_out, updates = jax.jit(lambda v: batch.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables
    )
    changed = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), updates["batch_stats"], variables["batch_stats"]
    )
    assert all(jax.tree.leaves(changed))
    eval_out = jax.jit(batch.apply)(variables, x)
    assert not np.allclose(train_out["c5"], eval_out["c5"])
    # Frozen BatchNorm is eval-mode BatchNorm, whatever `train` says.
    frozen = ResNet(depth=18, width=TINY, norm="frozen")
    for train in (False, True):
        got = jax.jit(lambda v, train=train: frozen.apply(v, x, train=train))(variables)
        np.testing.assert_allclose(got["c5"], eval_out["c5"], rtol=1e-5, atol=1e-5)


def test_frozen_batch_norm_formula():
    x = jnp.arange(12.0).reshape(1, 2, 2, 3)
    variables = {
        "params": {"scale": jnp.array([1.0, 2.0, 0.5]), "bias": jnp.array([0.0, 1.0, -1.0])},
        "batch_stats": {"mean": jnp.array([1.0, 0.0, 2.0]), "var": jnp.array([4.0, 1.0, 0.25])},
    }
    got = FrozenBatchNorm(epsilon=0.0).apply(variables, x)
    want = (x - variables["batch_stats"]["mean"]) / jnp.sqrt(variables["batch_stats"]["var"])
    want = want * variables["params"]["scale"] + variables["params"]["bias"]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_frozen_stages_and_trainable_mask(random_variables):
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype(np.float32)
    model = ResNet(depth=18, width=TINY, norm="frozen", frozen_stages=2)
    variables = random_variables(model, x)

    def loss(params):
        features = model.apply({**variables, "params": params}, x)
        return sum(jnp.sum(f**2) for f in features.values())

    grads = jax.jit(jax.grad(loss))(variables["params"])
    mask = trainable_mask(variables["params"], norm="frozen", frozen_stages=2)
    for (path, grad), trainable in zip(
        jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(mask), strict=True
    ):
        name = jax.tree_util.keystr(path)
        frozen_here = name.startswith(("['conv1']", "['bn1']", "['layer1_")) or "bn" in name
        assert trainable == (not frozen_here), name
        assert (float(jnp.abs(grad).max()) > 0) == trainable, name
    # With ordinary BatchNorm and nothing frozen everything trains.
    assert all(jax.tree.leaves(trainable_mask(variables["params"])))


def test_rejects_bad_settings():
    x = jnp.zeros((1, 8, 8, 3))
    for kwargs, match in [
        (dict(depth=42), "depth"),
        (dict(norm="layer"), "norm"),
        (dict(frozen_stages=6), "frozen_stages"),
        (dict(replace_stride_with_dilation=(True,)), "3 entries"),
    ]:
        with pytest.raises(ValueError, match=match):
            jax.eval_shape(ResNet(width=TINY, **kwargs).init, jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"\(8, 8, 3\)"):
        jax.eval_shape(ResNet(width=TINY).init, jax.random.key(0), x[0])


def test_fcn_resnet_training_steps_reduce_the_loss(random_variables):
    from jaxseg.models import softmax_cross_entropy

    model = FCNResNet(num_classes=3, depth=18, aux_loss=True, width=TINY, dropout_rate=0.0)
    yy, xx = jnp.meshgrid(jnp.arange(32), jnp.arange(32), indexing="ij")
    labels = jnp.stack([(yy > 15).astype(jnp.int32), 2 * (xx > 10)])  # [2, 32, 32]
    noise = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    images = jax.nn.one_hot(labels, 3) + 0.1 * noise
    variables = random_variables(model, images)
    optimizer = optax.sgd(0.05, momentum=0.9)
    state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))

    @jax.jit
    def step(state):
        params, batch_stats, opt_state = state

        def loss_fn(params):
            outputs, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                images,
                train=True,
                mutable=["batch_stats"],
            )
            loss = softmax_cross_entropy(outputs["out"], labels)
            loss += 0.5 * softmax_cross_entropy(outputs["aux"], labels)
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

    losses = []
    for _ in range(6):
        state, loss = step(state)
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0], losses


def test_group_norm_option():
    from jaxseg.models.resnet import GroupNorm

    x = np.random.default_rng(0).normal(2.0, 3.0, (2, 5, 6, 64)).astype(np.float32)
    out = np.asarray(GroupNorm().apply({"params": {"scale": np.ones(64), "bias": np.zeros(64)}}, x))
    groups = x.reshape(2, 5, 6, 32, 2)
    mean = groups.mean(axis=(1, 2, 4), keepdims=True)
    std = np.sqrt(groups.var(axis=(1, 2, 4), keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, ((groups - mean) / std).reshape(x.shape), atol=1e-4)
    model = ResNet(depth=18, width=TINY, norm="group")
    variables = model.init(jax.random.key(1), jnp.asarray(x[..., :3]))
    assert "batch_stats" not in variables  # no running statistics
    assert set(variables["params"]["bn1"]) == {"scale", "bias"}
