"""Proposal selection and box post-processing against torchvision, given the same outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import ops
from jaxseg.detection import Detections, detect_boxes, paste_detection_masks, select_proposals

torch = pytest.importorskip("torch")
tv_rpn = pytest.importorskip("torchvision.models.detection.rpn")
tv_roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402

IMAGE = (64, 80)


def test_select_proposals_matches_torchvision_filter_proposals():
    rng = np.random.default_rng(0)
    feature_sizes = [(16, 20), (8, 10), (4, 5)]
    anchors_per_level = ops.generate_anchors(feature_sizes, IMAGE, sizes=((16,), (32,), (64,)))
    anchors = np.concatenate(anchors_per_level)
    level_sizes = [a.shape[0] for a in anchors_per_level]
    num = anchors.shape[0]
    objectness = rng.normal(size=num).astype(np.float32) * 3
    deltas = (rng.normal(size=(num, 4)) * 0.3).astype(np.float32)
    deltas[::7, 2] = -12.0  # tiny boxes, dropped by min_size
    pre, post = 150, 60
    fn = jax.jit(
        lambda o, d: select_proposals(
            o, d, anchors, level_sizes, IMAGE, pre_nms_top_n=pre, post_nms_top_n=post
        )
    )
    boxes, scores, valid = (np.asarray(a) for a in fn(objectness, deltas))
    assert boxes.shape == (post, 4) and scores.shape == valid.shape == (post,)

    generator = AnchorGenerator(((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3)
    rpn = tv_rpn.RegionProposalNetwork(
        generator,
        torch.nn.Identity(),
        0.7,
        0.3,
        256,
        0.5,
        pre_nms_top_n={"training": pre, "testing": pre},
        post_nms_top_n={"training": post, "testing": post},
        nms_thresh=0.7,
    ).eval()
    decoded = rpn.box_coder.decode(torch.from_numpy(deltas), [torch.from_numpy(anchors)])
    ref_boxes, ref_scores = rpn.filter_proposals(
        decoded.view(1, -1, 4), torch.from_numpy(objectness)[None], [IMAGE], level_sizes
    )
    count = ref_boxes[0].shape[0]
    assert valid.sum() == count and valid[:count].all()
    np.testing.assert_allclose(boxes[:count], ref_boxes[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(scores[:count], ref_scores[0].numpy(), atol=1e-6)
    assert (boxes[count:] == 0).all()


def test_detect_boxes_matches_torchvision_postprocess():
    rng = np.random.default_rng(1)
    num_rois, k1, detections = 40, 4, 25
    x1y1 = rng.uniform(0, 50, (num_rois, 2))
    proposals = np.concatenate([x1y1, x1y1 + rng.uniform(4, 30, (num_rois, 2))], 1)
    proposals = proposals.astype(np.float32)
    logits = (rng.normal(size=(num_rois, k1)) * 2).astype(np.float32)
    regression = (rng.normal(size=(num_rois, k1, 4)) * 0.5).astype(np.float32)
    proposal_valid = np.ones(num_rois, bool)
    proposal_valid[-5:] = False
    fn = jax.jit(lambda *a: detect_boxes(*a, IMAGE, detections_per_image=detections))
    boxes, scores, classes, valid = (
        np.asarray(a) for a in fn(logits, regression, proposals, proposal_valid)
    )
    heads = tv_roi_heads.RoIHeads(
        None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0), 0.05, 0.5, detections
    )
    keep = proposal_valid
    ref_boxes, ref_scores, ref_labels = heads.postprocess_detections(
        torch.from_numpy(logits[keep]),
        torch.from_numpy(regression[keep].reshape(-1, k1 * 4)),
        [torch.from_numpy(proposals[keep])],
        [IMAGE],
    )
    count = ref_boxes[0].shape[0]
    assert count > 5 and valid.sum() == count and valid[:count].all()
    np.testing.assert_allclose(boxes[:count], ref_boxes[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(scores[:count], ref_scores[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(classes[:count], ref_labels[0].numpy())
    assert (classes[count:] == 0).all() and (scores[count:] == 0).all()


def test_paste_detection_masks():
    masks = jnp.ones((1, 2, 28, 28))
    dets = Detections(
        boxes=jnp.array([[[10.0, 10.0, 30.0, 20.0], [0.0, 0.0, 40.0, 40.0]]]),
        scores=jnp.array([[0.9, 0.0]]),
        classes=jnp.array([[1, 0]]),
        masks=masks,
        valid=jnp.array([[True, False]]),
    )
    paste = jax.jit(paste_detection_masks, static_argnums=1, static_argnames="threshold")
    pasted = np.asarray(paste(dets, (40, 50), threshold=0.5))
    assert pasted.shape == (1, 2, 40, 50) and not pasted[0, 1].any()
    direct = np.asarray(
        jax.jit(ops.paste_masks_in_image, static_argnums=2)(
            masks[0, :1], dets.boxes[0, :1], (40, 50)
        )
    )
    np.testing.assert_array_equal(pasted[0, 0], direct[0] >= 0.5)
    ys, xs = np.nonzero(pasted[0, 0])
    assert 9 <= xs.min() <= 11 and 29 <= xs.max() <= 31 and 9 <= ys.min() <= 11
    # Halving the scale maps the boxes to twice the size.
    half = paste(dets, (40, 70), scale=jnp.array([0.5]), threshold=0.5)
    xs = np.nonzero(np.asarray(half)[0, 0])[1]
    assert 19 <= xs.min() <= 21 and 59 <= xs.max() <= 61
