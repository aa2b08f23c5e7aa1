"""RoI heads: the switchable pooler, box and mask heads against torchvision's modules."""

import jax
import numpy as np
import pytest

from jaxseg import ops
from jaxseg.models.box_head import FastRCNNPredictor, TwoMLPHead
from jaxseg.models.mask_head import MaskHead
from jaxseg.models.roi_heads import level_scales, pool_rois

torch = pytest.importorskip("torch")
tv_faster = pytest.importorskip("torchvision.models.detection.faster_rcnn")
tv_mask = pytest.importorskip("torchvision.models.detection.mask_rcnn")


def _t(a):
    return torch.tensor(np.asarray(a))


def test_pool_rois_switches_between_poolers():
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(2, s, s, 3)).astype(np.float32) for s in (16, 8, 4, 2)]
    boxes = np.array(
        [[[2, 3, 20, 30], [10, 5, 60, 50]], [[0, 0, 64, 64], [5, 5, 9, 12]]], np.float32
    )
    assert level_scales(feats, (64, 64)) == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    for pooler, aligned in (("roi_align", False), ("roi_align", True), ("roi_pool", False)):
        out = np.asarray(pool_rois(feats, boxes, (64, 64), 7, pooler=pooler, aligned=aligned))
        assert out.shape == (2, 2, 7, 7, 3)
        for b in range(2):
            per_level = [f[b] for f in feats]
            if pooler == "roi_align":
                ref = ops.multiscale_roi_align(
                    per_level, boxes[b], 7, scales=[1 / 4, 1 / 8, 1 / 16, 1 / 32], aligned=aligned
                )
            else:
                ref = ops.multiscale_roi_pool(
                    per_level, boxes[b], 7, scales=[1 / 4, 1 / 8, 1 / 16, 1 / 32]
                )
            np.testing.assert_allclose(out[b], np.asarray(ref), atol=1e-6)
    align = pool_rois(feats, boxes, (64, 64), 7)
    pool = pool_rois(feats, boxes, (64, 64), 7, pooler="roi_pool")
    assert not np.allclose(np.asarray(align), np.asarray(pool))
    with pytest.raises(ValueError, match="pooler"):
        pool_rois(feats, boxes, (64, 64), 7, pooler="bilinear")


def test_box_head_and_predictor_match_torchvision():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 7, 7, 4)).astype(np.float32)
    head, predictor = TwoMLPHead(representation_size=16), FastRCNNPredictor(num_classes=3)
    hp = head.init(jax.random.key(0), x)["params"]
    rep = head.apply({"params": hp}, x)
    pp = predictor.init(jax.random.key(1), rep)["params"]
    logits, deltas = predictor.apply({"params": pp}, rep)
    assert logits.shape == (5, 3) and deltas.shape == (5, 3, 4)

    ref_head, ref_pred = tv_faster.TwoMLPHead(4 * 49, 16), tv_faster.FastRCNNPredictor(16, 3)
    with torch.no_grad():
        # fc6 reads (y, x, c) here and (c, y, x) in torchvision.
        fc6 = np.asarray(hp["fc6"]["kernel"]).reshape(7, 7, 4, 16).transpose(2, 0, 1, 3)
        ref_head.fc6.weight.copy_(_t(fc6.reshape(-1, 16).T))
        ref_head.fc6.bias.copy_(_t(hp["fc6"]["bias"]))
        ref_head.fc7.weight.copy_(_t(np.asarray(hp["fc7"]["kernel"]).T))
        ref_head.fc7.bias.copy_(_t(hp["fc7"]["bias"]))
        for name in ("cls_score", "bbox_pred"):
            getattr(ref_pred, name).weight.copy_(_t(np.asarray(pp[name]["kernel"]).T))
            getattr(ref_pred, name).bias.copy_(_t(pp[name]["bias"]))
        ref_logits, ref_deltas = ref_pred(ref_head(_t(x).permute(0, 3, 1, 2)))
    np.testing.assert_allclose(np.asarray(logits), ref_logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(deltas).reshape(5, 12), ref_deltas.numpy(), atol=1e-5)


def test_mask_head_matches_torchvision():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 14, 14, 4)).astype(np.float32)
    head = MaskHead(num_classes=3, channels=6)
    params = head.init(jax.random.key(0), x)["params"]
    out = np.asarray(head.apply({"params": params}, x))
    assert out.shape == (3, 28, 28, 3)
    ref_heads = tv_mask.MaskRCNNHeads(4, [6, 6, 6, 6], 1)
    ref_pred = tv_mask.MaskRCNNPredictor(6, 6, 3)
    with torch.no_grad():
        for i in range(4):
            p = params[f"mask_fcn{i + 1}"]
            ref_heads[i][0].weight.copy_(_t(np.asarray(p["kernel"]).transpose(3, 2, 0, 1)))
            ref_heads[i][0].bias.copy_(_t(p["bias"]))
        # conv5_mask: kernel [kh, kw, in, out] <- torch's ConvTranspose2d weight [in, out, kh, kw].
        k = np.asarray(params["conv5_mask"]["kernel"])
        ref_pred.conv5_mask.weight.copy_(_t(k.transpose(2, 3, 0, 1)))
        ref_pred.conv5_mask.bias.copy_(_t(params["conv5_mask"]["bias"]))
        p = params["mask_fcn_logits"]
        ref_pred.mask_fcn_logits.weight.copy_(_t(np.asarray(p["kernel"]).transpose(3, 2, 0, 1)))
        ref_pred.mask_fcn_logits.bias.copy_(_t(p["bias"]))
        ref = ref_pred(ref_heads(_t(x).permute(0, 3, 1, 2))).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)
