"""Where Mask R-CNN R50-FPN inference time goes: jaxseg vs torchvision, stage by stage.

    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/mask_rcnn_inference.py [--size 800]
        [--batch 1] [--steps 3]

Random weights, 91 classes, torchvision's inference settings except the score threshold:
0 in both (not 0.05), so that both keep 100 detections per image and run the mask head on
them, as a trained model does on a busy image (random weights score every class about
1/91, below 0.05, and torchvision would then skip the mask head). torchvision gets
min_size = max_size = size, so both see the same pixels; masks are pasted into the image
in both (torchvision's `transform.postprocess`, jaxseg's `paste_detection_masks`, jitted).

jaxseg's stages are cumulative jitted programs: backbone (ResNet-50), + FPN, + RPN
(proposals after NMS) and the whole model; the box head (fc6, fc7, predictor) on the P
proposals and the mask head on the D detections are timed alone (with the model's weights),
the rest of the RoI heads (RoIAligns, box decoding, per-class NMS) is what remains; then the
pasting. torchvision's come from forward hooks on the same modules. Each framework runs in
its own process; medians of `--steps` runs after one warm-up.

jaxseg always runs the box head on its fixed 1000 proposals per image; torchvision on the
proposals its RPN keeps, which with random weights are far fewer (the table prints both
counts): its box stages are then cheaper than with a trained model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

CLASSES = 90  # + background: torchvision's COCO head


def _images(batch: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype(np.float32)


def _median_time(fn, steps: int) -> float:
    fn()  # warm-up (and compile)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def run_jax(size: int, batch: int, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxseg.detection import paste_detection_masks
    from jaxseg.models import MaskRCNN
    from jaxseg.models.box_head import FastRCNNPredictor, TwoMLPHead
    from jaxseg.models.fpn import FPN
    from jaxseg.models.mask_head import MaskHead
    from jaxseg.models.resnet import ResNet
    from jaxseg.models.rpn import RPN

    images = jnp.asarray(_images(batch, size))
    model = MaskRCNN(num_classes=CLASSES, roi_heads={"score_threshold": 0.0})
    variables = jax.jit(lambda k: model.init({"params": k}, images, train=False))(
        jax.random.key(0, impl="rbg")
    )

    def part(name):
        return {kind: tree[name] for kind, tree in variables.items() if name in tree}

    backbone = ResNet(depth=50, norm=model.backbone_norm, frozen_stages=model.frozen_stages)
    fpn = FPN(**model.fpn)
    rpn = RPN(**model.rpn, nms=model.nms)

    def features(x):
        c = backbone.apply(part("backbone"), x, train=False)
        return c, fpn.apply(part("fpn"), [c["c2"], c["c3"], c["c4"], c["c5"]])

    def proposals(x):
        _, f = features(x)
        p, _ = rpn.apply(part("rpn"), f, tuple(x.shape[1:3]), None, train=False)
        return p

    def full(x):
        return model.apply(variables, x, train=False)

    programs = {
        "backbone": jax.jit(lambda x: backbone.apply(part("backbone"), x, train=False)),
        "+ fpn": jax.jit(lambda x: features(x)[1]),
        "+ rpn": jax.jit(proposals),
        "whole model": jax.jit(full),
    }
    # The heads alone, on the RoI counts the whole model runs them on (P proposals, D
    # detections), with the model's own weights.
    heads = variables["params"]["roi_heads"]
    box_head = TwoMLPHead()
    box_predictor = FastRCNNPredictor(num_classes=CLASSES + 1)
    mask_head = MaskHead(num_classes=CLASSES + 1)
    rng = np.random.default_rng(1)
    rois = jnp.asarray(rng.normal(size=(batch * rpn.post_nms_top_n_test, 7, 7, 256)), jnp.float32)
    detections_count = batch * model_heads_detections(model)
    mask_rois = jnp.asarray(rng.normal(size=(detections_count, 14, 14, 256)), jnp.float32)
    mask_classes = jnp.asarray(rng.integers(1, CLASSES + 1, detections_count), jnp.int32)
    parts = {
        "box head": jax.jit(
            lambda r: box_predictor.apply(
                {"params": heads["box_predictor"]},
                box_head.apply({"params": heads["box_head"]}, r),
            )
        ),
        "mask head": jax.jit(lambda r, c: mask_head.apply({"params": heads["mask_head"]}, r, c)),
    }
    result = {}
    for name, program in programs.items():
        result[name] = _median_time(lambda p=program: jax.block_until_ready(p(images)), steps)
    box = parts["box head"]
    result["box head"] = _median_time(lambda: jax.block_until_ready(box(rois)), steps)
    masks = parts["mask head"]
    result["mask head"] = _median_time(
        lambda: jax.block_until_ready(masks(mask_rois, mask_classes)), steps
    )
    detections = jax.jit(full)(images)
    paste = jax.jit(lambda d: paste_detection_masks(d, (size, size), threshold=0.5))
    result["paste masks"] = _median_time(lambda: jax.block_until_ready(paste(detections)), steps)
    result["detections"] = float(np.asarray(detections.valid).sum(1).mean())
    result["proposals"] = float(rpn.post_nms_top_n_test)  # a fixed count, all computed
    return result


def model_heads_detections(model) -> int:
    """D, the detections per image of a `MaskRCNN` (its RoI heads' setting or default)."""
    from jaxseg.models.roi_heads import RoIHeads

    return int(dict(model.roi_heads).get("detections_per_image", RoIHeads.detections_per_image))


def run_torch(size: int, batch: int, steps: int) -> dict:
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=CLASSES + 1,
        min_size=size,
        max_size=size,
        box_score_thresh=0.0,
    ).eval()
    inputs = [torch.from_numpy(im).permute(2, 0, 1).contiguous() for im in _images(batch, size)]
    stamps: dict[str, list[float]] = {}

    def timed(module, name):
        module.register_forward_pre_hook(
            lambda *_: stamps.setdefault(name, []).append(-time.perf_counter())
        )
        module.register_forward_hook(
            lambda *_: stamps[name].__setitem__(-1, stamps[name][-1] + time.perf_counter())
        )

    heads = model.roi_heads
    timed(model.backbone.body, "backbone")
    timed(model.backbone.fpn, "fpn")
    timed(model.rpn, "rpn")
    proposals = []
    model.rpn.register_forward_hook(lambda m, i, out: proposals.append(len(out[0][0])))
    timed(heads.box_roi_pool, "box RoIAlign")
    timed(heads.box_head, "box head")
    timed(heads.box_predictor, "box predictor")
    timed(heads.mask_roi_pool, "mask RoIAlign")
    timed(heads.mask_head, "mask head convs")
    timed(heads.mask_predictor, "mask predictor")
    timed(heads, "roi heads (all)")
    postprocess = model.transform.postprocess

    def timed_postprocess(*args, **kwargs):
        t = time.perf_counter()
        out = postprocess(*args, **kwargs)
        stamps.setdefault("paste masks", []).append(time.perf_counter() - t)
        return out

    model.transform.postprocess = timed_postprocess
    counts = []
    with torch.no_grad():
        whole = _median_time(lambda: counts.append(len(model(inputs)[0]["boxes"])), steps)
    result = {name: float(np.median(v[1:])) for name, v in stamps.items()}
    result["whole model"] = whole
    result["detections"] = float(np.mean(counts))
    result["proposals"] = float(np.mean(proposals))
    result["threads"] = torch.get_num_threads()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--framework", choices=["jax", "torch"], default=None)
    args = parser.parse_args()
    if args.framework:
        run = run_jax if args.framework == "jax" else run_torch
        print(json.dumps(run(args.size, args.batch, args.steps)))
        return
    load = os.getloadavg()[0]
    results = {}
    for framework in ("jax", "torch"):
        command = [sys.executable, __file__, "--framework", framework]
        command += [
            "--size",
            str(args.size),
            "--batch",
            str(args.batch),
            "--steps",
            str(args.steps),
        ]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{framework} run failed:\n{out.stderr[-3000:]}")
        results[framework] = json.loads(out.stdout.strip().splitlines()[-1])
    j, t = results["jax"], results["torch"]
    # jaxseg's cumulative programs as stages.
    jax_stages = {
        "backbone": j["backbone"],
        "fpn": j["+ fpn"] - j["backbone"],
        "rpn (head, decode, NMS)": j["+ rpn"] - j["+ fpn"],
        "box head (fc6, fc7, predictor)": j["box head"],
        "mask head (convs, predictor)": j["mask head"],
        "RoIAligns, box decoding, NMS": j["whole model"]
        - j["+ rpn"]
        - j["box head"]
        - j["mask head"],
        "paste masks": j["paste masks"],
    }
    torch_stages = {
        "backbone": t["backbone"],
        "fpn": t["fpn"],
        "rpn (head, decode, NMS)": t["rpn"],
        "box head (fc6, fc7, predictor)": t["box head"] + t["box predictor"],
        "mask head (convs, predictor)": t["mask head convs"] + t["mask predictor"],
        "RoIAligns, box decoding, NMS": t["roi heads (all)"]
        - t["mask head convs"]
        - t["mask predictor"]
        - t["box head"]
        - t["box predictor"],
        "paste masks": t["paste masks"],
    }
    print(
        f"Mask R-CNN R50-FPN inference, batch {args.batch}, {args.size}x{args.size}, "
        f"median of {args.steps} after one warm-up, load average {load:.2f} at the start, "
        f"torch {t['threads']} threads"
    )
    print(f"{'stage (s)':34s}{'jaxseg':>10s}{'torchvision':>13s}{'ratio':>8s}")
    for name in jax_stages:
        a, b = jax_stages[name], torch_stages[name]
        print(f"{name:34s}{a:10.3f}{b:13.3f}{a / b:8.2f}")
    whole_j = j["whole model"] + j["paste masks"]
    whole_t = t["whole model"]
    print(f"{'whole (model + paste)':34s}{whole_j:10.3f}{whole_t:13.3f}{whole_j / whole_t:8.2f}")
    print(f"{'detections per image':34s}{j['detections']:10.1f}{t['detections']:13.1f}")
    print(f"{'proposals per image':34s}{j['proposals']:10.1f}{t['proposals']:13.1f}")
    print(
        "torchvision's box stage: RoIAlign "
        f"{t['box RoIAlign']:.3f}, box head {t['box head']:.3f}, predictor "
        f"{t['box predictor']:.3f}, mask RoIAlign {t['mask RoIAlign']:.3f} s"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
