"""Inference latency on CPU: jaxseg's Predictor and a loaded export against torchvision eager.

    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/deploy.py [--repeats 5]
        [--models mask_rcnn,fcn_resnet50] [--size N] [--batch 1] [--score 0.0]

Mask R-CNN R50-FPN at 800 x 800 and FCN-ResNet50 (21 classes, no auxiliary head) at
520 x 520, batch 1 (`--size`, `--batch` change both). Each model is torchvision's with random
weights (seeded; BatchNorm given random affine parameters and one batch's statistics, as the
parity tests do), and jaxseg runs the same weights converted by `jaxseg.convert`, so the
three paths compute the same network on the same pixels:

- torchvision eager: uint8 image -> float tensor, `model([image])` (its transform resizes,
  normalises and pads; post-processing pastes masks into the image), masks thresholded at
  0.5; FCN: normalise, `model(x)['out'].argmax(1)`.
- jaxseg Predictor: `Predictor(...)(images)` on the canvas size x size: resize,
  normalisation, the model, mask pasting and thresholds in one jitted function, results
  cut to each image.
- jaxseg export: the same function written by `jaxseg.export.writer.export_predictor`,
  loaded with `jaxseg.export.load` and called.

Mask R-CNN's box score threshold is `--score` (default 0.0 on both sides: with random
weights no class would pass torchvision's 0.05, so every one of the 100 detections is kept
and pasted, the heaviest post-processing). Times are medians of `--repeats` calls after one
warm-up (jaxseg's first call compiles: printed as compile). The load average is printed
before and after each model: measure on a quiet machine (load average below 1).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np

MODELS = {
    "mask_rcnn": {"arch": "maskrcnn_resnet50_fpn", "size": 800},
    "fcn_resnet50": {"arch": "fcn_resnet50", "size": 520},
}


def _settle_batch_norm(torch, net, images):
    """Random BatchNorm affine parameters and one batch's statistics, then eval mode."""
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                channels = module.num_features
                module.weight.copy_(0.2 + 0.4 * torch.rand(channels, generator=generator))
                module.bias.copy_(0.2 * torch.randn(channels, generator=generator))
            module.momentum = None
    net.train()
    with torch.no_grad():
        net(images)
    return net.eval()


def _torch_model(name, size, score):
    import torch
    import torchvision

    torch.manual_seed(0)
    if name == "mask_rcnn":
        net = torchvision.models.detection.maskrcnn_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            min_size=size,
            max_size=max(1333, size),
            box_score_thresh=score,
        )
        _settle_batch_norm(torch, net.backbone.body, torch.rand(1, 3, size, size))
    else:
        net = torchvision.models.segmentation.fcn_resnet50(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=False
        )
        _settle_batch_norm(torch, net, torch.rand(1, 3, size, size))
    return net.eval()


def _torch_predict(name, net, images):
    import torch

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        tensors = [torch.from_numpy(image).permute(2, 0, 1).float().div(255) for image in images]
        if name == "mask_rcnn":
            return [
                {"scores": d["scores"].numpy(), "masks": (d["masks"][:, 0] > 0.5).numpy()}
                for d in net(tensors)
            ]
        x = (torch.stack(tensors) - mean) / std
        return [{"classes": c.numpy()} for c in net(x)["out"].argmax(1)]


def _timed(fn, repeats):
    """Returns (first call's seconds, median of `repeats` further calls, last result)."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), result


def _agreement(name, reference, got):
    if name == "mask_rcnn":
        counts = f"{len(got[0]['scores'])} / {len(reference[0]['scores'])} detections"
        if len(got[0]["scores"]) and len(reference[0]["scores"]):
            top = abs(float(got[0]["scores"][0]) - float(reference[0]["scores"][0]))
            counts += f", top score differs by {top:.1e}"
        return counts
    share = np.mean(
        [np.mean(g["classes"] == r["classes"]) for g, r in zip(got, reference, strict=True)]
    )
    return f"{100 * share:.2f}% of pixels as torchvision's"


def run(name, *, size, batch, repeats, score):
    import torch

    from jaxseg.convert import convert_state_dict, preprocessing
    from jaxseg.convert.categories import class_names
    from jaxseg.export import load
    from jaxseg.export.writer import export_predictor
    from jaxseg.predict import Predictor

    arch = MODELS[name]["arch"]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
    net = _torch_model(name, size, score)
    settings = {"roi_heads": {"score_threshold": score}} if name == "mask_rcnn" else {}
    conversion = convert_state_dict(net.state_dict(), arch, **settings)
    rule = preprocessing(arch)
    rule["resize_size"] = size  # torchvision's 800 / 520, or --size: the images' own size
    kind = "instance" if name == "mask_rcnn" else "semantic"
    predictor = Predictor(
        conversion.model,
        conversion.variables,
        kind=kind,
        class_names=class_names(arch, conversion.model.num_classes),
        preprocessing=rule,
        canvas=(size, size),
        batch_size=batch,
        score_threshold=score,
        min_size=32,
        source={"model": arch},
    )
    rows = {}
    rows["torchvision eager"] = _timed(lambda: _torch_predict(name, net, images), repeats)
    rows["jaxseg Predictor"] = _timed(lambda: predictor(images), repeats)
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        export_predictor(predictor, os.path.join(directory, "export"))
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        loaded = load(os.path.join(directory, "export"))
        load_s = time.perf_counter() - start
        rows["jaxseg export (loaded)"] = _timed(lambda: loaded(images), repeats)
    reference = rows["torchvision eager"][2]
    base = rows["torchvision eager"][1]
    print(f"{name} {size}x{size} batch {batch} (torch {torch.get_num_threads()} threads)")
    print(f"  {'path':<24} {'seconds':>8} {'ratio':>6} {'first call':>11}  agreement")
    for label, (first, median, result) in rows.items():
        agreement = "" if result is reference else _agreement(name, reference, result)
        print(f"  {label:<24} {median:>8.3f} {median / base:>6.2f} {first:>10.1f}s  {agreement}")
    print(f"  export written in {export_s:.1f} s, loaded in {load_s:.1f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mask_rcnn,fcn_resnet50")
    parser.add_argument("--size", type=int, default=None, help="side of the square images")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--score", type=float, default=0.0, help="Mask R-CNN score threshold")
    args = parser.parse_args()
    import jax

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; jax {jax.__version__} "
        f"({jax.default_backend()})"
    )
    for name in args.models.split(","):
        if name not in MODELS:
            parser.error(f"--models: unknown {name!r}; known: {', '.join(MODELS)}")
        size = args.size or MODELS[name]["size"]
        print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        run(name, size=size, batch=args.batch, repeats=args.repeats, score=args.score)
        print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
