"""InstanceSegmentationTask: a few steps reduce every loss; inference has fixed shapes."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg.data import IMAGENET_MEAN, IMAGENET_STD
from jaxseg.detection import LOSS_NAMES
from jaxseg.models.settings import get_setting
from jaxseg.tasks import make_task
from jaxseg.tasks.instance import InstanceSegmentationTask
from jaxseg.testing import TINY_MASK_RCNN_WIDTHS, set_model_settings
from jaxseg.train import make_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE, N, M, B = 64, 3, 28, 2


def _tiny_config():
    path = os.path.join(ROOT, "configs", "mask_rcnn_shapes.py")
    spec = importlib.util.spec_from_file_location("mask_rcnn_shapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    set_model_settings(config.model, TINY_MASK_RCNN_WIDTHS)
    # Only the ground-truth boxes appended to the proposals are positive RoIs, so the RoI
    # losses judge the same positives however much the RPN learns between two steps.
    config.model.roi_heads.fg_iou_threshold = 0.95
    config.dataset.max_instances = N
    config.dataset.mask_size = M
    config.batch_size = B
    return config


def _batch():
    """Two 64 px images with coloured rectangles (boxes filled by their masks)."""
    rng = np.random.default_rng(0)
    image = np.full((B, SIZE, SIZE, 3), 120.0)
    boxes = np.zeros((B, N, 4), np.float32)
    classes = np.zeros((B, N), np.int32)
    valid = np.zeros((B, N), bool)
    for b, objects in enumerate(([(6, 8, 30, 26, 1), (36, 34, 58, 60, 2)], [(10, 30, 50, 44, 3)])):
        for k, (x1, y1, x2, y2, cls) in enumerate(objects):
            image[b, y1:y2, x1:x2] = rng.uniform(0, 255, 3)
            boxes[b, k], classes[b, k], valid[b, k] = (x1, y1, x2, y2), cls, True
    image = (image / 255.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    return {
        "image": jnp.asarray(image, jnp.float32),
        "boxes": jnp.asarray(boxes),
        "classes": jnp.asarray(classes),
        "masks": jnp.asarray(valid[:, :, None, None] * np.ones((1, 1, M, M)), jnp.uint8),
        "valid": jnp.asarray(valid),
    }


def test_mask_rcnn_names_pick_the_instance_task():
    task = make_task(_tiny_config())
    assert isinstance(task, InstanceSegmentationTask)
    assert task.num_classes == 4 and task.class_names[0] == "circle"
    spec = task.input_spec(B)
    assert spec["masks"].shape == (B, N, M, M) and spec["boxes"].shape == (B, N, 4)


def test_a_few_steps_reduce_every_loss_and_inference_has_fixed_shapes():
    task = make_task(_tiny_config())
    batch = _batch()
    variables = task.init_variables(jax.random.PRNGKey(0), batch)
    params = variables.pop("params")
    # Box deltas off by 1 to start from: with the near-zero init the box loss starts at its
    # floor (the positives are the ground-truth boxes themselves).
    bbox_pred = params["roi_heads"]["box_predictor"]["bbox_pred"]
    bbox_pred["bias"] = jnp.ones_like(bbox_pred["bias"])
    optimizer = optax.adam(3e-3)
    rng = jax.random.PRNGKey(1)  # the same sampling at every step: a fair before / after

    @jax.jit
    def step(params, opt_state, model_state):
        grad_fn = jax.value_and_grad(task.loss_fn, has_aux=True)
        (_loss, (metrics, model_state)), grads = grad_fn(params, model_state, batch, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, model_state, metrics

    opt_state = optimizer.init(params)
    history = []
    for _ in range(10):
        params, opt_state, variables, metrics = step(params, opt_state, variables)
        history.append(jax.device_get(metrics))
    changes = {n: (history[0][f"loss_{n}"], history[-1][f"loss_{n}"]) for n in LOSS_NAMES}
    assert all(np.isfinite(first) and last < first for first, last in changes.values()), changes

    eval_batch = {
        "image": batch["image"],
        "image_id": jnp.array([3, -1]),
        "scale": jnp.ones((B,)),
        "original_size": jnp.full((B, 2), SIZE, jnp.int32),
        "image_valid": jnp.array([True, False]),
    }
    out = jax.jit(task.eval_step)({"params": params, **variables}, eval_batch)
    d = get_setting(task.model, "roi_heads.detections_per_image")
    assert out["boxes"].shape == (B, d, 4) and out["scores"].shape == (B, d)
    assert out["classes"].shape == (B, d) and out["valid"].shape == (B, d)
    assert out["masks"].shape == (B, d, 28, 28)
    assert not np.asarray(out["valid"][1]).any()  # the padding image has no detections
    results = task.reduce_eval([jax.device_get(out)])
    assert {r["image_id"] for r in results} <= {3}
    for r in results:
        assert set(r) == {"image_id", "category_id", "bbox", "score", "segmentation"}
        assert r["segmentation"]["size"] == [SIZE, SIZE]


def test_sgd_weight_decay_leaves_the_frozen_backbone_alone():
    config = _tiny_config()
    config.model.backbone_norm = "frozen"
    config.model.frozen_stages = 2
    config.optimizer.update(name="sgd", weight_decay=0.1, learning_rate=0.1, warmup_steps=0)
    task = make_task(config)
    params = task.init_variables(jax.random.PRNGKey(0), _batch())["params"]
    optimizer = make_optimizer(config.optimizer, 10, task.trainable)
    grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    backbone = updates["backbone"]
    frozen = [backbone["conv1"], backbone["bn1"], backbone["layer1_0"], backbone["layer2_0"]["bn1"]]
    assert all(not np.any(u) for u in jax.tree_util.tree_leaves(frozen))
    trained = [backbone["layer2_0"]["conv1"]["kernel"], updates["fpn"], updates["roi_heads"]]
    assert all(np.any(u) for u in jax.tree_util.tree_leaves(trained) if u.ndim > 1)
