"""Mask R-CNN end to end on a tiny model: losses, bad input, training steps, inference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.detection import LOSS_NAMES, Detections, Instances, total_loss
from jaxseg.models import MODELS, build_model
from jaxseg.models.mask_rcnn import MaskRCNN, mask_rcnn_trainable_mask
from jaxseg.testing import tiny_mask_rcnn

TINY = tiny_mask_rcnn()
SIZE, N, M = 64, 4, 16


def _key(seed):
    # XLA on CPU compiles threefry-based initialisers of every parameter slowly (~3x the
    # time of 'rbg' for this model); the model does not depend on the PRNG implementation.
    return jax.random.key(seed, impl="rbg")


def _rect_masks(boxes):
    """[N, M, M] crops of filled boxes: the mask fills its box."""
    return np.where(boxes[:, 2:3, None] > boxes[:, 0:1, None], 1, 0) * np.ones((1, M, M))


def _batch():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    boxes = np.array(
        [
            [[4, 4, 30, 30], [20, 30, 60, 50], [40, 2, 62, 20], [0, 0, 0, 0]],
            [[10, 10, 20, 40], [30, 30, 63, 63], [0, 0, 0, 0], [0, 0, 0, 0]],
        ],
        np.float32,
    )
    # Brighten the objects so there is something to learn.
    for b in range(2):
        for x1, y1, x2, y2 in boxes[b].astype(int):
            images[b, y1:y2, x1:x2] += 2.0
    masks = np.stack([_rect_masks(b) for b in boxes]).astype(np.uint8)
    return images, Instances(
        boxes=jnp.asarray(boxes),
        classes=jnp.array([[1, 2, 3, 0], [3, 1, 0, 0]]),
        masks=jnp.asarray(masks),
        valid=jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool),
    )


@pytest.fixture(scope="module")
def tiny():
    model = MaskRCNN(**TINY)
    images, gt = _batch()
    variables = jax.jit(lambda k: model.init({"params": k}, images, train=False))(_key(0))

    @jax.jit
    def grad_fn(params, images, gt, key):
        def loss(p):
            _, losses = model.apply(
                {**variables, "params": p}, images, gt, train=True, rngs={"sampling": key}
            )
            return total_loss(losses), losses

        return jax.value_and_grad(loss, has_aux=True)(params)

    return model, variables, grad_fn, images, gt


def _finite(tree):
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree))


def test_losses_and_frozen_backbone(tiny):
    _, variables, grad_fn, images, gt = tiny
    (loss, losses), grads = grad_fn(variables["params"], images, gt, _key(1))
    assert set(losses) == set(LOSS_NAMES)
    assert all(float(v) > 0 for v in losses.values()) and _finite(grads)
    np.testing.assert_allclose(float(loss), sum(float(v) for v in losses.values()), rtol=1e-6)
    backbone = grads["backbone"]
    # Stem and layer1 are frozen (no gradient), as are all frozen BatchNorm parameters.
    for name in ("conv1", "layer1_0", "layer1_1"):
        assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree_util.tree_leaves(backbone[name]))
    assert float(jnp.abs(backbone["layer2_0"]["conv1"]["kernel"]).max()) > 0
    assert float(jnp.abs(backbone["layer2_0"]["bn1"]["scale"]).max()) == 0
    for part in ("fpn", "rpn", "roi_heads"):
        assert float(optax.tree.norm(grads[part])) > 0
    mask = mask_rcnn_trainable_mask(variables["params"])
    assert mask["roi_heads"]["box_head"]["fc6"]["kernel"] is True
    assert mask["backbone"]["layer1_0"]["conv1"]["kernel"] is False


def test_bad_input_keeps_losses_finite(tiny):
    _, variables, grad_fn, images, _ = tiny
    boxes = np.array(
        [
            [[0, 0, 0, 0]] * N,  # image 0: no objects at all
            [
                [10.2, 10.3, 10.5, 10.6],  # smaller than a pixel
                [20, 20, 20, 35],  # zero width
                [30, 30, 50, 50],  # all-zero mask
                [70, 70, 90, 90],  # outside the image
            ],
        ],
        np.float32,
    )
    masks = np.zeros((2, N, M, M), np.uint8)
    masks[1, 0] = 1
    gt = Instances(
        boxes=jnp.asarray(boxes),
        classes=jnp.array([[0] * N, [1, 2, 3, 1]]),
        masks=jnp.asarray(masks),
        valid=jnp.array([[False] * N, [True] * N]),
    )
    (loss, losses), grads = grad_fn(variables["params"], images, gt, _key(2))
    assert _finite(losses) and _finite(grads) and np.isfinite(float(loss))
    # Every slot used (as many objects as max_instances) is fine as well.
    _, full = _batch()
    full = full.replace(
        valid=jnp.ones((2, N), bool),
        boxes=full.boxes.at[:, 3].set(jnp.array([5.0, 40.0, 25.0, 60.0])),
        classes=full.classes.at[:, 3].set(2),
    )
    (_, losses), grads = grad_fn(variables["params"], images, full, _key(3))
    assert _finite(losses) and _finite(grads)


def test_sgd_steps_reduce_every_loss(tiny):
    _, variables, grad_fn, images, gt = tiny
    optimizer = optax.sgd(0.005, momentum=0.9)
    params = variables["params"]
    state = optimizer.init(params)
    key = _key(4)  # the same random samples every step
    update = jax.jit(optimizer.update)
    (_, first), _ = grad_fn(params, images, gt, key)
    for _ in range(30):
        _, grads = grad_fn(params, images, gt, key)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    (_, last), _ = grad_fn(params, images, gt, key)
    for name in ("rpn_objectness", "rpn_box", "classifier", "mask"):
        assert float(last[name]) < float(first[name]), (name, first[name], last[name])
    assert float(total_loss(last)) < 0.7 * float(total_loss(first))
    # As the RPN improves, more proposals overlap the objects and the sampled RoIs hold
    # more positives, so box_reg is compared on one fixed sample: the trained proposals
    # with the untrained RoI heads versus the trained ones.
    untrained_heads = {**params, "roi_heads": variables["params"]["roi_heads"]}
    (_, before), _ = grad_fn(untrained_heads, images, gt, key)
    assert float(last["box_reg"]) < 0.9 * float(before["box_reg"]), (before, last)


def test_inference_has_fixed_shapes_under_jit(tiny):
    model, variables, _, images, _ = tiny
    traces = []

    @jax.jit
    def infer(v, x):
        traces.append(1)
        return model.apply(v, x, train=False)

    det = infer(variables, images)
    det2 = infer(variables, images[::-1])
    assert len(traces) == 1 and isinstance(det, Detections)
    d = TINY["roi_heads"]["detections_per_image"]
    assert det.boxes.shape == (2, d, 4) and det.scores.shape == det.classes.shape == (2, d)
    assert det.masks.shape == (2, d, 28, 28) and det.valid.shape == (2, d)
    assert det2.boxes.shape == det.boxes.shape
    valid = np.asarray(det.valid)
    assert valid.any()
    classes, masks = np.asarray(det.classes), np.asarray(det.masks)
    assert ((classes >= 1) & (classes <= 3))[valid].all() and (classes[~valid] == 0).all()
    assert (masks >= 0).all() and (masks <= 1).all() and (masks[~valid] == 0).all()


def test_bfloat16_with_roi_pool_and_group_norm():
    images, gt = _batch()
    model = MaskRCNN(
        **tiny_mask_rcnn(
            dtype=jnp.bfloat16,
            backbone_norm="group",
            roi_heads={"pooler": "roi_pool"},
            frozen_stages=0,
        )
    )

    @jax.jit
    def run(key):
        variables = model.init({"params": key}, images, train=False)
        _, losses = model.apply(variables, images, gt, train=True, rngs={"sampling": key})
        return variables["params"], losses

    params, losses = run(_key(0))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    assert "GroupNorm" not in str(jax.tree_util.tree_structure(params))  # named like the BNs
    assert all(v.dtype == jnp.float32 and np.isfinite(float(v)) for v in losses.values())


def test_build_model_and_bad_input():
    assert MODELS["mask_rcnn_resnet50_fpn"].settings == {"depth": 50}
    model = build_model("mask_rcnn_resnet18_fpn", num_classes=3)
    assert isinstance(model, MaskRCNN) and model.depth == 18
    images, gt = _batch()
    m = MaskRCNN(**TINY)
    with pytest.raises(ValueError, match="images"):
        m.init(_key(0), images[0], train=False)
    with pytest.raises(ValueError, match="ground truth"):
        m.init(_key(0), images, train=True)
    with pytest.raises(ValueError, match="Instances"):
        m.init(_key(0), images, gt.replace(classes=gt.classes[:, :2]), train=True)
    with pytest.raises(ValueError, match="mask_format"):
        m.init(_key(0), images, gt.replace(mask_format="canvas"), train=True)
