"""FCN-32s/16s/8s on VGG16: shapes, initialisation, the reference net in torch, training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.models import FCN, MIN_SIZE, bilinear_kernel, build_model, softmax_cross_entropy

VARIANTS = {
    "fcn32s": dict(stride=32),
    "fcn16s": dict(stride=16),
    "fcn8s": dict(stride=8),
    "fcn8s_atonce": dict(stride=8, skip_scaling=True),
}
TINY = 1 / 16  # conv widths 4..32, fc 256
SIZES = [
    (1, 1), (1, 2), (2, 1), (3, 5), (7, 7), (16, 16), (31, 33), (32, 32), (63, 17),
    (64, 64), (65, 128), (100, 37), (224, 224), (375, 500), (513, 511),
]  # fmt: skip


@pytest.mark.parametrize("name", VARIANTS)
def test_logits_have_the_input_size(name):
    model = build_model(name, num_classes=3, width=TINY)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1, 1, 3)))
    for size in SIZES:
        x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
        logits = jax.eval_shape(model.apply, variables, x)
        assert logits.shape == (2, *size, 3), size
        assert logits.dtype == jnp.float32


@pytest.mark.parametrize(
    ("name", "layers"),
    [
        ("fcn32s", {"score_fr": None, "upscore": 64}),
        ("fcn16s", {"score_fr": None, "score_pool4": None, "upscore2": 4, "upscore16": 32}),
        (
            "fcn8s",
            {
                "score_fr": None,
                "score_pool4": None,
                "score_pool3": None,
                "upscore2": 4,
                "upscore_pool4": 4,
                "upscore8": 16,
            },
        ),
    ],
)
def test_parameter_names(name, layers):
    x = jnp.zeros((1, 1, 1, 3))
    fixed = jax.eval_shape(build_model(name, num_classes=5, width=TINY).init, jax.random.key(0), x)
    heads = {k for k, v in layers.items() if v is None}
    assert set(fixed["params"]) == {"backbone", *heads}
    model = build_model(name, num_classes=5, width=TINY, learnable_upsampling=True)
    learnable = jax.eval_shape(model.init, jax.random.key(0), x)
    assert set(learnable["params"]) == {"backbone", *layers}
    for layer, k in layers.items():
        if k is not None:
            assert learnable["params"][layer]["kernel"].shape == (k, k, 5, 5)


def test_rejects_bad_input():
    model = FCN(num_classes=3, width=TINY)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1, 1, 3)))
    assert MIN_SIZE == 1
    with pytest.raises(ValueError, match=r"at least 1x1 .*\(1, 0, 5, 3\)"):
        model.apply(variables, jnp.zeros((1, 0, 5, 3)))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\].*\(8, 8, 3\)"):
        model.apply(variables, jnp.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="stride"):
        FCN(num_classes=3, stride=4, width=TINY).init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="skip_scaling"):
        FCN(num_classes=3, stride=32, skip_scaling=True).init(
            jax.random.key(0), jnp.zeros((1, 4, 4, 3))
        )


def _torch_reference(torch, stride, skip_scaling, params):
    """The reference Caffe net (voc-fcn*s/net.py) in torch, loaded from FCN params."""
    nn = torch.nn

    def conv(p):
        kernel = np.asarray(p["kernel"])  # [kh, kw, in, out]
        layer = nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[0])
        layer.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        layer.bias.data = torch.from_numpy(np.asarray(p["bias"]).copy())
        return layer

    def deconv(p, factor):
        kernel = np.asarray(p["kernel"])  # [k, k, in, out]
        layer = nn.ConvTranspose2d(kernel.shape[2], kernel.shape[3], 2 * factor, factor, bias=False)
        layer.weight.data = torch.from_numpy(kernel.transpose(2, 3, 0, 1).copy())
        return layer

    backbone = params["backbone"]
    pool = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(x):
        h = x
        feats = {}
        for stage, n in enumerate((2, 2, 3, 3, 3), 1):
            for i in range(1, n + 1):
                layer = conv(backbone[f"conv{stage}_{i}"])
                layer.padding = (100, 100) if (stage, i) == (1, 1) else (1, 1)
                h = torch.relu(layer(h))
            h = pool(h)
            feats[stage] = h
        h = torch.relu(conv(backbone["fc6"])(h))  # dropout is the identity in eval
        h = torch.relu(conv(backbone["fc7"])(h))
        h = conv(params["score_fr"])(h)
        H, W = x.shape[2:]
        if stride == 32:
            return deconv(params["upscore"], 32)(h)[:, :, 19 : 19 + H, 19 : 19 + W]
        upscore2 = deconv(params["upscore2"], 2)(h)
        p4 = conv(params["score_pool4"])(feats[4] * (0.01 if skip_scaling else 1.0))
        h = upscore2 + p4[:, :, 5 : 5 + upscore2.shape[2], 5 : 5 + upscore2.shape[3]]
        if stride == 16:
            return deconv(params["upscore16"], 16)(h)[:, :, 27 : 27 + H, 27 : 27 + W]
        upscore_pool4 = deconv(params["upscore_pool4"], 2)(h)
        p3 = conv(params["score_pool3"])(feats[3] * (0.0001 if skip_scaling else 1.0))
        h = upscore_pool4 + p3[:, :, 9 : 9 + upscore_pool4.shape[2], 9 : 9 + upscore_pool4.shape[3]]
        return deconv(params["upscore8"], 8)(h)[:, :, 31 : 31 + H, 31 : 31 + W]

    return forward


@pytest.mark.parametrize("name", VARIANTS)
def test_matches_the_reference_net_in_torch(name, make_key):
    """Random weights everywhere, random (not bilinear) upsampling kernels: every crop offset,
    every pooled size and the transposed-convolution convention must agree."""
    import torch

    model = build_model(name, num_classes=3, width=TINY, learnable_upsampling=True)
    shapes = jax.eval_shape(model.init, make_key(0), jnp.zeros((1, 1, 1, 3)))["params"]
    rng = np.random.default_rng(1)
    fan_in = lambda leaf: np.prod(leaf.shape[:-1]) if leaf.ndim > 1 else 100.0  # noqa: E731
    params = jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=p.shape) / np.sqrt(fan_in(p)), jnp.float32), shapes
    )
    if VARIANTS[name].get("skip_scaling"):  # make the scaled skips matter at this tolerance
        params["score_pool4"]["kernel"] *= 100.0
        params["score_pool3"]["kernel"] *= 10_000.0
    reference = _torch_reference(torch, **{"skip_scaling": False, **VARIANTS[name]}, params=params)
    apply = jax.jit(model.apply)
    for size in [(1, 1), (5, 12), (37, 50)]:
        x = np.random.default_rng(sum(size)).normal(size=(1, *size, 3)).astype(np.float32)
        with torch.no_grad():
            expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).permute(0, 2, 3, 1)
        got = np.asarray(apply({"params": params}, x))
        assert got.shape == expected.shape == (1, *size, 3)
        expected = expected.numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
def test_fixed_upsampling_equals_learnable_at_initialisation(name, random_variables):
    x = np.random.default_rng(0).normal(size=(1, 21, 30, 3)).astype(np.float32)
    learnable = build_model(name, num_classes=2, width=TINY, learnable_upsampling=True)
    fixed = build_model(name, num_classes=2, width=TINY)
    params = random_variables(fixed, x)["params"]
    # The learnable kernels as initialised: bilinear on the diagonal.
    upscores = jax.eval_shape(learnable.init, jax.random.key(0), x)["params"]
    for layer, shape in upscores.items():
        if layer.startswith("upscore"):
            kernel = np.zeros(shape["kernel"].shape, np.float32)
            k, classes = kernel.shape[0], kernel.shape[2]
            kernel[:, :, range(classes), range(classes)] = bilinear_kernel(k)[..., None]
            params = {**params, layer: {"kernel": kernel}}
    want = jax.jit(learnable.apply)({"params": params}, x)
    fixed_params = {k: v for k, v in params.items() if not k.startswith("upscore")}
    got = jax.jit(fixed.apply)({"params": fixed_params}, x)
    assert got.shape == (1, 21, 30, 2)
    assert float(jnp.abs(want).max()) > 0.01
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


def test_sgd_steps_reduce_the_loss(make_key):
    model = build_model("fcn8s", num_classes=3, width=TINY, dropout_rate=0.0)
    # Two images of coloured rectangles: class c is colour channel c, plus noise.
    yy, xx = jnp.meshgrid(jnp.arange(48), jnp.arange(40), indexing="ij")
    labels = jnp.stack([(yy > 24).astype(jnp.int32), 2 * (xx > 20)])  # [2, 48, 40]
    noise = 0.1 * jax.random.normal(make_key(0), (2, 48, 40, 3))
    images = jax.nn.one_hot(labels, 3) + noise
    labels = labels.at[:, :4].set(255)  # an ignored band
    params = jax.jit(model.init)(make_key(1), images)["params"]
    optimizer = optax.sgd(0.05, momentum=0.9)
    opt_state = optimizer.init(params)

    def loss_fn(params):
        return softmax_cross_entropy(model.apply({"params": params}, images), labels)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    losses = []
    for _ in range(8):
        params, opt_state, loss, grads = step(params, opt_state)
        losses.append(float(loss))
    # Zero-initialised score layers: all-zero logits, uniform softmax.
    assert losses[0] == pytest.approx(np.log(3), rel=1e-5)
    assert losses[-1] < 0.9 * losses[0], losses
    assert float(jnp.abs(grads["backbone"]["conv1_1"]["kernel"]).max()) > 0


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = build_model("fcn16s", num_classes=3, width=TINY, dtype=jnp.bfloat16)
    x = jnp.ones((1, 20, 20, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert jax.eval_shape(model.apply, variables, x).dtype == jnp.float32
