"""FCN-ResNet: shapes, train mode, and parity with torchvision's fcn_resnet50."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import FCNResNet, build_model


def _torch_state_to_variables(state_dict):
    """Maps a torchvision FCN state dict onto FCNResNet's variables (test-local converter)."""
    head_names = {"0": "conv", "1": "bn", "4": "score"}
    params, stats = {}, {}
    for key, tensor in state_dict.items():
        *path, leaf = key.split(".")
        if leaf == "num_batches_tracked":
            continue
        names = []
        i = 0
        while i < len(path):
            part = path[i]
            if part.startswith("layer"):  # layer1.0 -> layer1_0
                names.append(f"{part}_{path[i + 1]}")
                i += 2
            elif part == "downsample":  # downsample.0 / .1 -> downsample_conv / _bn
                names.append("downsample_conv" if path[i + 1] == "0" else "downsample_bn")
                i += 2
            elif part in ("classifier", "aux_classifier"):
                names += [part, head_names[path[i + 1]]]
                i += 2
            else:
                names.append(part)
                i += 1
        value = tensor.detach().numpy()
        if leaf == "weight" and value.ndim == 4:
            target, leaf_name, value = params, "kernel", value.transpose(2, 3, 1, 0)
        elif leaf == "weight":
            target, leaf_name = params, "scale"
        elif leaf == "bias":
            target, leaf_name = params, "bias"
        else:
            target, leaf_name = stats, {"running_mean": "mean", "running_var": "var"}[leaf]
        node = target
        for name in names:
            node = node.setdefault(name, {})
        node[leaf_name] = jnp.asarray(value)
    return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("aux", [False, True])
@pytest.mark.parametrize("size", [(1, 1), (7, 3), (33, 64), (65, 47)])
def test_output_shapes(aux, size):
    model = FCNResNet(num_classes=4, depth=50, aux_loss=aux, width=1 / 16)
    x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    out = jax.eval_shape(model.apply, variables, x)
    assert set(out) == ({"out", "aux"} if aux else {"out"})
    for logits in out.values():
        assert logits.shape == (2, *size, 4)
        assert logits.dtype == jnp.float32


def test_rejects_bad_images():
    model = FCNResNet(num_classes=3, depth=18, width=1 / 16)
    with pytest.raises(ValueError, match=r"\(4, 4, 3\)"):
        model.init(jax.random.key(0), jnp.zeros((4, 4, 3)))


def test_parity_with_torchvision_fcn_resnet50():
    torch = pytest.importorskip("torch")
    segmentation = pytest.importorskip("torchvision.models.segmentation")
    torch.manual_seed(0)
    num_classes = 5
    net = segmentation.fcn_resnet50(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=True
    )
    # Realistic BatchNorm statistics and affine parameters, so that the mapping of all four
    # BN tensors is exercised: random affine, then running statistics of one batch.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.normal_(module.bias, 0.0, 0.2)
            module.momentum = None  # cumulative average: one batch sets the statistics
    images = torch.randn(2, 3, 65, 47)
    net.train()
    with torch.no_grad():
        net(images)
    net.eval()
    with torch.no_grad():
        expected = {k: v.permute(0, 2, 3, 1).numpy() for k, v in net(images).items()}

    model = build_model("fcn_resnet50", num_classes=num_classes, aux_loss=True)
    variables = _torch_state_to_variables(net.state_dict())
    reference = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 65, 47, 3)))
    assert jax.tree.structure(variables) == jax.tree.structure(flax.core.unfreeze(reference))
    shapes = jax.tree.map(lambda a: a.shape, variables)
    assert shapes == jax.tree.map(lambda a: a.shape, flax.core.unfreeze(reference))

    got = jax.jit(model.apply)(variables, jnp.asarray(images.permute(0, 2, 3, 1).numpy()))
    for key in ("out", "aux"):
        scale = np.abs(expected[key]).max()
        error = np.abs(np.asarray(got[key]) - expected[key]).max() / scale
        assert scale > 1e-2, f"{key}: degenerate reference logits"
        assert error < 1e-4, f"{key}: relative error {error:.2e}"
