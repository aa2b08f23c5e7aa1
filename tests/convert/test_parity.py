"""Converted torchvision models compute torchvision's outputs (random weights, eval mode).

References are torch in float64. Deep random networks amplify float32 rounding: torch's own
float32 outputs differ from the float64 ones by up to 1.1e-4 relative (ResNet-101's c5), so
an output passes when within 1e-4, or within 1.5 times torch's own float32 error where that
is larger (printed; docs/convert.md records them).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from jaxseg.convert import from_torchvision

PARITY_FORMAT = "PARITY {}: {:.2e}"  # run with -s to read them (docs/convert.md)
TOLERANCE = 1e-4  # relative to the largest magnitude of each output


def _check(name, got, torch32, want, relative_error):
    """Asserts jaxseg's float32 `got` is as close to `want` (float64) as torch's `torch32`."""
    error, torch_error = relative_error(got, want), relative_error(torch32, want)
    print(PARITY_FORMAT.format(name, error) + f" (torch float32: {torch_error:.2e})")
    assert error < max(TOLERANCE, 1.5 * torch_error), (name, error, torch_error)


def _nhwc(x):
    return np.asarray(x.permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize(
    ("arch", "settings"),
    [
        ("resnet18", {}),
        ("resnet34", {"norm": "frozen"}),
        ("resnet50", {}),
        ("resnet101", {"replace_stride_with_dilation": (False, True, True)}),
    ],
)
def test_resnet_backbone_stages(arch, settings, settle_batch_norm, relative_error):
    torch.manual_seed(0)
    dilation = settings.get("replace_stride_with_dilation", (False, False, False))
    net = getattr(torchvision.models, arch)(weights=None, replace_stride_with_dilation=dilation)
    images = torch.randn(2, 3, 61, 70)
    settle_batch_norm(net, images)
    model, variables = from_torchvision(net.state_dict(), arch, **settings)
    got = jax.jit(model.apply)(variables, jnp.asarray(_nhwc(images)))
    torch32 = _resnet_stages(net, images)
    expected = _resnet_stages(net.double(), images.double())
    for level, want in expected.items():
        _check(f"{arch} {settings} {level}", got[level], torch32[level], want, relative_error)


def _resnet_stages(net, images):
    """Returns torchvision ResNet's layer1..layer4 outputs as {'c2'..'c5': [B, H, W, C]}."""
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        stages = {}
        for i in range(1, 5):
            h = getattr(net, f"layer{i}")(h)
            stages[f"c{i + 1}"] = _nhwc(h)
    return stages


def test_vgg16_pool3_pool4_and_fc7(relative_error):
    # torchvision's VGG16 with the FCN reference's changes (conv1_1 padded by 100, ceil-mode
    # pools); a 20 x 26 image then leaves pool5 at exactly 7 x 7, so torchvision's own
    # classifier (flatten in C, H, W order, Linear fc6 and fc7) gives fc7, against the
    # converted 7x7 conv. VGG16 is shallow and has no BatchNorm: float32 torch is the
    # reference here (it is within 2e-6 of float64; float64 convs at 220 x 224 are slow).
    torch.manual_seed(0)
    net = torchvision.models.vgg16(weights=None).eval()
    net.features[0].padding = (100, 100)
    for layer in net.features:
        if isinstance(layer, torch.nn.MaxPool2d):
            layer.ceil_mode = True
    images = torch.randn(1, 3, 20, 26)
    model, variables = from_torchvision(net.state_dict(), "vgg16")
    got = jax.jit(model.apply)(variables, jnp.asarray(_nhwc(images)))
    with torch.no_grad():
        pool3 = net.features[:17](images)
        pool4 = net.features[17:24](pool3)
        pool5 = net.features[24:](pool4)
        assert pool5.shape[2:] == (7, 7)
        fc7 = net.classifier[:5](pool5.flatten(1))  # fc6, ReLU, dropout, fc7, ReLU
    expected = {"pool3": _nhwc(pool3), "pool4": _nhwc(pool4), "fc7": fc7.numpy()[:, None, None]}
    assert got["fc7"].shape == (1, 1, 1, 4096)
    for name, want in expected.items():
        error = relative_error(got[name], want)
        print(PARITY_FORMAT.format(f"vgg16 {name}", error) + " (against torch float32)")
        assert error < TOLERANCE, (name, error)
