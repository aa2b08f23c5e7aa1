"""FPN: shapes, names and parity with torchvision's FeaturePyramidNetwork + LastLevelMaxPool."""

import jax
import numpy as np
import pytest

from jaxseg.models.fpn import FPN, upsample_nearest

torch = pytest.importorskip("torch")
tv_fpn = pytest.importorskip("torchvision.ops.feature_pyramid_network")


def _features(rng, sizes, channels):
    return [
        rng.normal(size=(1, h, w, c)).astype(np.float32)
        for (h, w), c in zip(sizes, channels, strict=True)
    ]


def test_upsample_nearest_matches_torch():
    x = np.arange(2 * 3 * 5, dtype=np.float32).reshape(1, 3, 5, 2)
    out = np.asarray(upsample_nearest(x, (7, 9)))
    ref = (
        torch.nn.functional.interpolate(
            torch.from_numpy(x).permute(0, 3, 1, 2), size=(7, 9), mode="nearest"
        )
        .permute(0, 2, 3, 1)
        .numpy()
    )
    np.testing.assert_array_equal(out, ref)


def test_matches_torchvision_with_the_same_weights():
    rng = np.random.default_rng(0)
    channels, out = (4, 8, 16, 32), 8
    # Odd sizes exercise the nearest upsampling of a non-2x ratio.
    feats = _features(rng, [(17, 21), (9, 11), (5, 6), (3, 3)], channels)
    model = FPN(channels=out)
    params = model.init(jax.random.key(0), feats)["params"]
    assert sorted(params) == sorted(
        [f"inner_blocks_{i}" for i in range(4)] + [f"layer_blocks_{i}" for i in range(4)]
    )
    ours = [np.asarray(p) for p in model.apply({"params": params}, feats)]
    assert [p.shape for p in ours] == [
        (1, 17, 21, 8),
        (1, 9, 11, 8),
        (1, 5, 6, 8),
        (1, 3, 3, 8),
        (1, 2, 2, 8),
    ]

    ref = tv_fpn.FeaturePyramidNetwork(list(channels), out, extra_blocks=tv_fpn.LastLevelMaxPool())
    with torch.no_grad():
        for kind in ("inner_blocks", "layer_blocks"):
            for i in range(4):
                conv = getattr(ref, kind)[i][0]
                p = params[f"{kind}_{i}"]
                conv.weight.copy_(torch.tensor(np.asarray(p["kernel"]).transpose(3, 2, 0, 1)))
                conv.bias.copy_(torch.tensor(np.asarray(p["bias"])))
        result = ref({str(i): torch.from_numpy(f).permute(0, 3, 1, 2) for i, f in enumerate(feats)})
    for mine, theirs in zip(ours, result.values(), strict=True):
        np.testing.assert_allclose(mine, theirs.permute(0, 2, 3, 1).numpy(), atol=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="FPN"):
        FPN(channels=4).init(jax.random.key(0), [np.zeros((4, 4, 3), np.float32)])
