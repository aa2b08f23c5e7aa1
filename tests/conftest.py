"""Test-wide settings: CPU only, and deterministic seeds."""

import os

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def torchvision_resnet18():
    """A random torchvision ResNet-18 in eval mode whose BatchNorm layers are not identities.

    Seeded, with BatchNorm scales, shifts and running statistics drawn away from their
    defaults so that a wrong statistics mapping shows in the outputs. Treat it as read-only.
    """
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.2, 0.6)
            torch.nn.init.normal_(module.bias, 0.0, 0.2)
            torch.nn.init.normal_(module.running_mean, 0.0, 0.2)
            torch.nn.init.uniform_(module.running_var, 0.5, 2.0)
    return net.eval()
