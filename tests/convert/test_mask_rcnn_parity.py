"""A converted `maskrcnn_resnet50_fpn` computes torchvision's FPN, proposals and detections.

torchvision's model is randomly initialised (fixed seed, no download), its backbone's
BatchNorm given random affine parameters and one batch's statistics, in eval mode.
`min_size` / `max_size` equal the image's sides and the sides are multiples of 32, so
torchvision's transform neither resizes nor pads; jaxseg gets exactly torchvision's
normalised image. Random weights score every class near 1 / 91, so the score threshold is
lowered from 0.05 to `SCORE_THRESHOLD`; 50 detections (instead of 100) halve the mask head's
cost.
References are torch in float32 (the same run that gives proposals and detections).

Proposal and detection order: both sort by score. Where two scores differ by less than
float32 noise, the two frameworks may order them differently; such swaps are allowed
(and counted) only between entries whose torch scores are within `TIE` of each other.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.detection.rpn import concat_box_prediction_layers

from jaxseg.convert import from_torchvision
from jaxseg.detection import paste_detection_masks

PARITY_FORMAT = "PARITY {}: {:.2e}"  # run with -s to read them (README.md, docs/convert.md)
HEIGHT, WIDTH = 128, 160
TIE = 1e-6  # scores closer than this may swap places
SCORE_THRESHOLD = 0.015
DETECTIONS = 50


@pytest.fixture(scope="module")
def outputs(settle_batch_norm):
    torch.manual_seed(0)
    net = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        min_size=HEIGHT,
        max_size=WIDTH,
        box_score_thresh=SCORE_THRESHOLD,
        box_detections_per_img=DETECTIONS,
    )
    image = torch.rand(3, HEIGHT, WIDTH)
    net.eval()
    with torch.no_grad():
        images, _ = net.transform([image])
    assert images.tensors.shape == (1, 3, HEIGHT, WIDTH)  # neither resized nor padded
    settle_batch_norm(net.backbone.body, images.tensors)
    start = time.perf_counter()
    with torch.no_grad():
        features = net.backbone(images.tensors)
        levels = list(features.values())
        objectness, deltas = net.rpn.head(levels)
        anchors = net.rpn.anchor_generator(images, levels)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        decoded = net.rpn.box_coder.decode(deltas, anchors).view(1, -1, 4)
        proposals, proposal_scores = net.rpn.filter_proposals(
            decoded, objectness, images.image_sizes, per_level
        )
        assert torch.equal(proposals[0], net.rpn(images, features)[0][0])
        (detections,) = net([image])
    torch_seconds = time.perf_counter() - start

    start = time.perf_counter()
    model, variables = from_torchvision(
        net.state_dict(),
        "maskrcnn_resnet50_fpn",
        roi_heads={"score_threshold": SCORE_THRESHOLD, "detections_per_image": DETECTIONS},
    )

    def forward(variables, x):
        result, state = model.apply(
            variables,
            x,
            train=False,
            capture_intermediates=lambda module, _: module.name in ("fpn", "rpn"),
            mutable=["intermediates"],
        )
        fpn = state["intermediates"]["fpn"]["__call__"][0]
        (got_proposals, _) = state["intermediates"]["rpn"]["__call__"][0]
        masks = paste_detection_masks(result, (HEIGHT, WIDTH))
        return fpn, got_proposals, result, masks

    x = jnp.asarray(images.tensors.permute(0, 2, 3, 1).numpy())
    got = jax.block_until_ready(jax.jit(forward)(variables, x))
    print(f"torchvision {torch_seconds:.1f} s, jaxseg convert + compile + run "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    want = {
        "features": [f[0].permute(1, 2, 0).numpy() for f in levels],
        "proposals": proposals[0].numpy(),
        "proposal_scores": proposal_scores[0].numpy(),
        **{k: v.numpy() for k, v in detections.items()},
    }
    return got, want


def _order(got_boxes, want_boxes, want_scores, tolerance):
    """Returns the torch index of each jaxseg box, asserting a tie-only permutation."""
    assert got_boxes.shape == want_boxes.shape, (got_boxes.shape, want_boxes.shape)
    distance = np.abs(got_boxes[:, None] - want_boxes[None]).max(-1)  # [P, P]
    match = distance.argmin(1)
    assert len(set(match.tolist())) == len(match), "two boxes matched the same reference"
    assert distance[np.arange(len(match)), match].max() <= tolerance
    moved = np.nonzero(match != np.arange(len(match)))[0]
    # An entry may only trade places with one of (float32-)equal score.
    np.testing.assert_allclose(want_scores[match[moved]], want_scores[moved], atol=TIE, rtol=0)
    return match, len(moved)


def test_fpn_features(outputs, relative_error):
    got, want = outputs
    names = ["P2", "P3", "P4", "P5", "P6"]
    assert len(got[0]) == len(want["features"]) == 5
    for name, g, w in zip(names, got[0], want["features"], strict=True):
        error = relative_error(np.asarray(g[0]), w)
        print(PARITY_FORMAT.format(f"maskrcnn_resnet50_fpn {name} (relative)", error))
        assert error < 1e-4, (name, error)


def test_rpn_proposals_same_boxes_in_the_same_order(outputs):
    got, want = outputs
    proposals = got[1]
    count = int(proposals.valid[0].sum())
    assert count == len(want["proposals"]) > 100
    boxes = np.asarray(proposals.boxes[0, :count])
    match, moved = _order(boxes, want["proposals"], want["proposal_scores"], 1e-3)
    error = np.abs(boxes - want["proposals"][match]).max()
    score_error = np.abs(np.asarray(proposals.scores[0, :count]) - want["proposal_scores"][match])
    print(PARITY_FORMAT.format("maskrcnn_resnet50_fpn proposal boxes (px)", error))
    print(PARITY_FORMAT.format("maskrcnn_resnet50_fpn proposal scores", score_error.max()))
    print(f"proposals: {count}, {moved} swapped within score ties")
    assert error < 1e-3
    assert moved <= count // 50  # a few float32 ties, not a different ordering


def test_detections_labels_boxes_scores_and_masks(outputs):
    got, want = outputs
    detections, masks = got[2], got[3]
    count = int(detections.valid[0].sum())
    assert count == len(want["boxes"]) == DETECTIONS
    boxes = np.asarray(detections.boxes[0, :count])
    match, moved = _order(boxes, want["boxes"], want["scores"], 1e-2)
    np.testing.assert_array_equal(np.asarray(detections.classes[0, :count]), want["labels"][match])
    assert len(np.unique(want["labels"])) > 1
    box_error = np.abs(boxes - want["boxes"][match]).max()
    score_error = np.abs(np.asarray(detections.scores[0, :count]) - want["scores"][match]).max()
    probabilities = np.asarray(masks[0, :count])
    want_masks = want["masks"][match, 0]
    mask_error = np.abs(probabilities - want_masks).max()
    got_binary, want_binary = probabilities >= 0.5, want_masks >= 0.5
    union = (got_binary | want_binary).sum((1, 2))
    iou = np.where(union > 0, (got_binary & want_binary).sum((1, 2)) / np.maximum(union, 1), 1.0)
    assert want_binary.any((1, 2)).mean() > 0.5  # masks that are not empty
    for name, value in [
        ("box (px)", box_error),
        ("score", score_error),
        ("pasted mask probability", mask_error),
        ("1 - min mask IoU", 1 - iou.min()),
    ]:
        print(PARITY_FORMAT.format(f"maskrcnn_resnet50_fpn detection {name}", value))
    print(f"detections: {count}, {moved} swapped within score ties")
    assert box_error < 1e-2
    assert score_error < 1e-4
    assert iou.min() >= 0.99
    assert moved <= 4
