"""FCN-ResNet: shapes, train mode, and parity with torchvision's fcn_resnet50."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import FCNResNet, build_model


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


def test_parity_with_torchvision_fcn_resnet50(torchvision_variables):
    import torch
    from torchvision.models import segmentation

    torch.manual_seed(0)
    num_classes = 5
    net = segmentation.fcn_resnet50(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=True
    )
    # Realistic BatchNorm statistics and affine parameters, so that the mapping of all four
    # BN tensors is exercised: random affine, then running statistics of one batch.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.2, 0.6)
            torch.nn.init.normal_(module.bias, 0.0, 0.2)
            module.momentum = None  # cumulative average: one batch sets the statistics
    images = torch.randn(2, 3, 65, 47)  # odd, non-square: the final resize is 9x6 -> 65x47
    net.train()
    with torch.no_grad():
        net(images)
    net.eval()
    # The reference is torch in float64: a deep random network amplifies float32 rounding,
    # so torch's own float32 logits already differ from it by a few 1e-5.
    with torch.no_grad():
        expected = {
            k: v.permute(0, 2, 3, 1).numpy() for k, v in net.double()(images.double()).items()
        }
    net.float()

    model = build_model("fcn_resnet50", num_classes=num_classes, aux_loss=True)
    variables = torchvision_variables(net.state_dict())
    reference = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 65, 47, 3)))
    assert jax.tree.structure(variables) == jax.tree.structure(flax.core.unfreeze(reference))
    shapes = jax.tree.map(lambda a: a.shape, variables)
    assert shapes == jax.tree.map(lambda a: a.shape, flax.core.unfreeze(reference))

    got = jax.jit(model.apply)(variables, jnp.asarray(images.permute(0, 2, 3, 1).numpy()))
    for key in ("out", "aux"):
        scale = np.abs(expected[key]).max()
        error = np.abs(np.asarray(got[key]) - expected[key]).max() / scale
        assert scale > 1e-2, f"{key}: degenerate reference logits"
        print(f"PARITY fcn_resnet50 {key}: {error:.2e}")  # -s: README.md's table
        assert error < 1e-4, f"{key}: relative error {error:.2e}"


@pytest.mark.parametrize(
    ("name", "documented"), [("fcn_resnet50", 35_322_218), ("fcn_resnet101", 54_314_346)]
)
def test_parameter_counts_match_torchvision(name, documented):
    import torch
    from torchvision.models import segmentation

    for aux in (False, True):
        model = build_model(name, num_classes=21, aux_loss=aux)
        variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
        with torch.device("meta"):  # shapes only
            net = getattr(segmentation, name)(
                weights=None, weights_backbone=None, num_classes=21, aux_loss=aux
            )
        buffers = [b for k, b in net.named_buffers() if not k.endswith("num_batches_tracked")]
        assert _count(variables["params"]) == sum(p.numel() for p in net.parameters())
        assert _count(variables["batch_stats"]) == sum(b.numel() for b in buffers)
    assert _count(variables["params"]) == documented  # torchvision's weights table, with aux


def _count(tree):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))
