"""Mask R-CNN R50-FPN: jaxseg vs torchvision on this machine, side by side.

    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/mask_rcnn.py [--steps 3] [--size 512]

Batch 2 at size x size, five ground-truth objects per image, 91 classes (torchvision's COCO
head), torchvision's defaults otherwise (jaxseg with `aligned=False`, fixed counts: 2000
proposals, 512 RoIs, 128 mask RoIs per image; torchvision with min_size = max_size = size so
both see the same pixels). The mask head's RoI count differs in kind: jaxseg's is fixed
(`--mask-rois`, 128 per image = 512 sampled x 25%: every positive torchvision could use),
torchvision's is the number of sampled positives, which depends on the data and on how far the
RPN has learnt (few with random weights); the table prints both, and `--mask-rois N` runs
jaxseg with torchvision's count for a like-for-like figure. Each framework runs in its own
process, so peak memory is that process's maximum resident set. Train step: forward, backward
and an SGD update (momentum 0.9, lr 1e-3); inference: batch 2, eval mode. Default:
torchvision's `maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`, which trains every
stage with BatchNorm, against jaxseg with `backbone_norm='batch', frozen_stages=0`.
`--frozen`: both with frozen BatchNorm and stem + layer1 frozen (the fine-tuning set-up,
jaxseg's default; torchvision built as `maskrcnn_resnet50_fpn` builds it from ImageNet
weights). With random weights and no normalisation the frozen set-up diverges (NaN losses),
which makes its timings meaningless (NaN boxes leave nothing to NMS or to the mask head).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

BATCH, OBJECTS, CLASSES = 2, 5, 90
LR = 1e-3  # small: random weights without warm-up diverge at 0.02


def _data(size: int):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(BATCH, size, size, 3)).astype(np.float32)
    xy = rng.uniform(0, size * 0.6, (BATCH, OBJECTS, 2))
    wh = rng.uniform(size * 0.1, size * 0.4, (BATCH, OBJECTS, 2))
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    classes = rng.integers(1, CLASSES + 1, (BATCH, OBJECTS))
    return images, boxes, classes


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_jax(size: int, steps: int, frozen: bool = False, mask_rois: int = 128) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from jaxseg import compiler_options
    from jaxseg.detection import Instances, total_loss
    from jaxseg.models import MaskRCNN

    images, boxes, classes = _data(size)
    masks = np.ones((BATCH, OBJECTS, 112, 112), np.uint8)  # the loader's crop format
    gt = Instances(
        boxes=jnp.asarray(boxes),
        classes=jnp.asarray(classes, jnp.int32),
        masks=jnp.asarray(masks),
        valid=jnp.ones((BATCH, OBJECTS), bool),
    )
    if frozen:
        model = MaskRCNN(num_classes=CLASSES, roi_heads={"mask_rois_per_image": mask_rois})
    else:
        model = MaskRCNN(
            num_classes=CLASSES,
            backbone_norm="batch",
            frozen_stages=0,
            roi_heads={"mask_rois_per_image": mask_rois},
        )
    # 'rbg' keys: threefry initialisers compile slowly on CPU (init is not measured).
    variables = jax.jit(lambda k: model.init({"params": k}, images, train=False))(
        jax.random.key(0, impl="rbg")
    )
    optimizer = optax.sgd(LR, momentum=0.9)
    opt_state = optimizer.init(variables["params"])

    def step(params, batch_stats, opt_state, images, gt, key):
        def loss_fn(p):
            (_, losses), updates = model.apply(
                {"params": p, "batch_stats": batch_stats},
                images,
                gt,
                train=True,
                rngs={"sampling": key},
                mutable=["batch_stats"],
            )
            return total_loss(losses), updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    t = time.perf_counter()
    compiled = (
        compiler_options.jit(step, donate_argnums=(0, 1, 2))  # the kernels of train.py's step
        .lower(
            variables["params"],
            variables["batch_stats"],
            opt_state,
            images,
            gt,
            jax.random.key(1, impl="rbg"),
        )
        .compile()
    )
    compile_s = time.perf_counter() - t
    params, batch_stats = variables["params"], variables["batch_stats"]
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        params, batch_stats, opt_state, loss = compiled(
            params, batch_stats, opt_state, images, gt, jax.random.key(i, impl="rbg")
        )
        loss.block_until_ready()
        times.append(time.perf_counter() - t)
    infer = compiler_options.jit(lambda v, x: model.apply(v, x, train=False))
    variables = {"params": params, "batch_stats": batch_stats}
    t = time.perf_counter()
    jax.block_until_ready(infer(variables, images))
    infer_compile_s = time.perf_counter() - t
    infer_times = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(infer(variables, images))
        infer_times.append(time.perf_counter() - t)
    return {
        "compile_s": compile_s,
        "infer_compile_s": infer_compile_s,
        "step_s": float(np.median(times[1:])),
        "infer_s": float(np.median(infer_times)),
        "peak_mb": _peak_mb(),
        "loss": float(loss),
    }


def run_torch(size: int, steps: int, frozen: bool = False) -> dict:
    import torch
    from torchvision.models import resnet50
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.mask_rcnn import MaskRCNN
    from torchvision.ops import misc

    torch.manual_seed(0)
    images, boxes, classes = _data(size)
    if not frozen:
        # weights=None makes torchvision train every stage with ordinary BatchNorm.
        model = maskrcnn_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=CLASSES + 1,
            min_size=size,
            max_size=size,
        )
    else:
        # What maskrcnn_resnet50_fpn builds for training from ImageNet weights (frozen
        # BatchNorm, stem and layer1 frozen), as jaxseg's default; the weights stay random.
        backbone = _resnet_fpn_extractor(resnet50(norm_layer=misc.FrozenBatchNorm2d), 3)
        model = MaskRCNN(backbone, num_classes=CLASSES + 1, min_size=size, max_size=size)
    inputs = [torch.from_numpy(im).permute(2, 0, 1).contiguous() for im in images]
    targets = []
    for b in range(BATCH):
        m = np.zeros((OBJECTS, size, size), np.uint8)
        for n, (x1, y1, x2, y2) in enumerate(boxes[b].astype(int)):
            m[n, y1:y2, x1:x2] = 1
        targets.append(
            {
                "boxes": torch.from_numpy(boxes[b]),
                "labels": torch.from_numpy(classes[b]).long(),
                "masks": torch.from_numpy(m),
            }
        )
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=LR, momentum=0.9
    )
    # The mask head runs on the sampled positives, a data-dependent count: record it.
    positives = []
    select = model.roi_heads.select_training_samples

    def counting_select(proposals, targets):
        out = select(proposals, targets)
        positives.extend(int((labels > 0).sum()) for labels in out[2])
        return out

    model.roi_heads.select_training_samples = counting_select
    model.train()
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        losses = model(inputs, targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t)
    model.eval()
    infer_times = []
    with torch.no_grad():
        model(inputs)
        for _ in range(steps):
            t = time.perf_counter()
            model(inputs)
            infer_times.append(time.perf_counter() - t)
    return {
        "step_s": float(np.median(times[1:])),
        "first_step_s": times[0],
        "infer_s": float(np.median(infer_times)),
        "peak_mb": _peak_mb(),
        "threads": torch.get_num_threads(),
        "mask_rois_per_image": float(np.mean(positives)),
        "loss": float(loss),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--framework", choices=["jax", "torch"], default=None)
    parser.add_argument(
        "--mask-rois", type=int, default=128, help="jaxseg's fixed mask RoIs per image"
    )
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="frozen BatchNorm, stem and layer1 frozen (fine-tuning set-up) in both",
    )
    args = parser.parse_args()
    if args.framework:
        if args.framework == "jax":
            print(json.dumps(run_jax(args.size, args.steps, args.frozen, args.mask_rois)))
        else:
            print(json.dumps(run_torch(args.size, args.steps, args.frozen)))
        return
    results = {}
    for framework in ("jax", "torch"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--framework",
                framework,
                "--steps",
                str(args.steps),
                "--size",
                str(args.size),
                "--mask-rois",
                str(args.mask_rois),
                *(["--frozen"] if args.frozen else []),
            ],
            check=True,
            capture_output=True,
            text=True,
            env=os.environ,
        )
        results[framework] = json.loads(out.stdout.strip().splitlines()[-1])
    j, t = results["jax"], results["torch"]
    print(
        f"Mask R-CNN R50-FPN, batch {BATCH}, {args.size}x{args.size}, {OBJECTS} objects/image, "
        f"median of {args.steps} steps after one warm-up"
    )
    print(f"{'':24s}{'jaxseg':>12s}{'torchvision':>14s}{'ratio':>8s}")
    rows = [
        ("train step (s)", j["step_s"], t["step_s"]),
        ("inference (s)", j["infer_s"], t["infer_s"]),
        ("peak memory (MB)", j["peak_mb"], t["peak_mb"]),
    ]
    for name, a, b in rows:
        print(f"{name:24s}{a:12.2f}{b:14.2f}{a / b:8.2f}")
    mask_rois = t["mask_rois_per_image"]
    print(f"{'mask RoIs per image':24s}{args.mask_rois:12d}{mask_rois:14.1f}")
    print(f"{'compile train (s)':24s}{j['compile_s']:12.1f}{'-':>14s}")
    print(f"{'compile inference (s)':24s}{j['infer_compile_s']:12.1f}{'-':>14s}")
    print(f"torchvision first step {t['first_step_s']:.2f} s, {t['threads']} threads")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
