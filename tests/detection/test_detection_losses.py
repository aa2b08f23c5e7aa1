"""Losses against hand computation and torchvision's loss functions."""

import numpy as np
import pytest

from jaxseg.detection import fast_rcnn_losses, mask_loss, rpn_losses, smooth_l1, total_loss

torch = pytest.importorskip("torch")
roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")
F = torch.nn.functional


def test_smooth_l1_hand_values():
    x = np.array([0.0, 0.05, -0.05, 0.5, -2.0])
    beta = 1 / 9
    expected = [0.0, 0.5 * 0.0025 * 9, 0.5 * 0.0025 * 9, 0.5 - beta / 2, 2.0 - beta / 2]
    np.testing.assert_allclose(np.asarray(smooth_l1(x, beta=beta)), expected, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(smooth_l1(x, beta=beta)),
        F.smooth_l1_loss(torch.tensor(x), torch.zeros(5), beta=beta, reduction="none").numpy(),
        rtol=1e-6,
    )


def test_rpn_losses_by_hand():
    objectness = np.array([[2.0, -1.0, 0.5, 9.0], [0.0, 3.0, -2.0, 1.0]], np.float32)
    labels = np.array([[1, 0, 0, 1], [0, 1, 0, 0]])
    valid = np.array([[True, True, True, False], [True, True, False, False]])
    deltas = np.array(np.arange(32).reshape(2, 4, 4) / 40.0, np.float32)
    targets = np.zeros((2, 4, 4), np.float32)
    out = rpn_losses(objectness, deltas, labels, targets, valid)
    x, y = objectness[valid], labels[valid].astype(np.float32)
    bce = np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))
    beta = 1 / 9
    d = np.abs(deltas[valid & (labels > 0)])
    box = np.where(d < beta, 0.5 * d * d / beta, d - beta / 2).sum() / valid.sum()
    np.testing.assert_allclose(float(out["rpn_objectness"]), bce, rtol=1e-5)
    np.testing.assert_allclose(float(out["rpn_box"]), box, rtol=1e-5)


def test_fast_rcnn_losses_match_torchvision_and_ignore_padding():
    rng = np.random.default_rng(0)
    b, s, k1 = 2, 6, 4
    logits = rng.normal(size=(b, s, k1)).astype(np.float32)
    regression = rng.normal(size=(b, s, k1, 4)).astype(np.float32)
    labels = rng.integers(0, k1, (b, s))
    targets = rng.normal(size=(b, s, 4)).astype(np.float32)
    valid = np.ones((b, s), bool)
    valid[1, 4:] = False
    labels[1, 4:] = 0
    out = fast_rcnn_losses(logits, regression, labels, targets, valid)
    keep = valid.reshape(-1)
    cls, box = roi_heads.fastrcnn_loss(
        torch.from_numpy(logits.reshape(-1, k1)[keep]),
        torch.from_numpy(regression.reshape(-1, k1 * 4)[keep]),
        [torch.from_numpy(labels.reshape(-1)[keep])],
        [torch.from_numpy(targets.reshape(-1, 4)[keep])],
    )
    np.testing.assert_allclose(float(out["classifier"]), cls.item(), rtol=1e-5)
    np.testing.assert_allclose(float(out["box_reg"]), box.item(), rtol=1e-5)


def test_mask_loss_matches_torch_bce_on_positives():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 28, 28)).astype(np.float32) * 3
    targets = rng.uniform(size=(2, 3, 28, 28)).astype(np.float32)
    valid = np.array([[True, True, False], [True, False, False]])
    expected = F.binary_cross_entropy_with_logits(
        torch.from_numpy(logits[valid]), torch.from_numpy(targets[valid])
    )
    np.testing.assert_allclose(float(mask_loss(logits, targets, valid)), expected.item(), rtol=1e-5)
    assert float(mask_loss(logits, targets, np.zeros_like(valid))) == 0.0


def test_total_loss():
    assert float(total_loss({"a": 1.0, "b": np.float32(2.5)})) == 3.5
    with pytest.raises(ValueError):
        total_loss({})
