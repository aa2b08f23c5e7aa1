"""Instance input pipeline throughput (images/s), as the training loop would draw it.

    JAX_PLATFORMS=cpu python benchmarks/data_pipeline.py [--workers 0 2] [--batches 20]

Two settings:
  shapes    jaxseg_shapes/medium (128x128 px), canvas 128x128, 16 instances, 112x112 crops:
            the Mask R-CNN shapes demo.
  coco-like 640x480 JPEGs with 4-12 polygon instances each, written as a COCO-format
            dataset (jaxseg_coco builder), resized torchvision-style to shorter side 800 /
            longer side at most 1333 on an 800x1333 canvas, 100 instances, 112x112 crops.
Datasets are built once under --data_dir. Each row reports images/s after three warm-up
batches; the machine's other load shows up in the figures, so run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from PIL import Image, ImageDraw

from jaxseg.data import CocoFormatConfig, make_instance_loader


def _fake_coco(root: str, num_images: int, seed: int = 0) -> None:
    """Writes root/images/*.jpg and root/train.json: COCO-sized images with polygons."""
    if os.path.exists(os.path.join(root, "train.json")):
        return
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        pixels = rng.integers(0, 255, (480 // 8, 640 // 8, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize((640, 480), Image.BILINEAR)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(4, 13))):
            cx, cy = rng.uniform(40, 600), rng.uniform(40, 440)
            radius = rng.uniform(10, 120)
            angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
            xs = np.clip(cx + radius * np.cos(angles), 0, 639)
            ys = np.clip(cy + radius * np.sin(angles), 0, 479)
            polygon = np.stack([xs, ys], 1)
            draw.polygon([tuple(p) for p in polygon], fill=tuple(rng.integers(0, 255, 3).tolist()))
            x0, y0 = polygon.min(0)
            x1, y1 = polygon.max(0)
            annotations.append(
                dict(
                    id=len(annotations) + 1, image_id=i + 1, category_id=int(rng.integers(1, 81)),
                    segmentation=[polygon.reshape(-1).round(2).tolist()],
                    bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)], iscrowd=0,
                )
            )  # fmt: skip
        name = f"{i:06d}.jpg"
        image.save(os.path.join(root, "images", name), quality=90)
        images.append(dict(id=i + 1, file_name=name, height=480, width=640))
    categories = [dict(id=k, name=f"class{k}") for k in range(1, 81)]
    with open(os.path.join(root, "train.json"), "w") as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def _measure(loader, batches: int) -> float:
    iterator = iter(loader)
    for _ in range(3):  # warm-up: workers start, first reads, buffers fill
        batch = next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
    elapsed = time.perf_counter() - start
    return batches * len(batch["image"]) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default="/tmp/jaxseg_bench/tfds")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--coco_images", type=int, default=64)
    args = parser.parse_args()

    coco_root = os.path.join(os.path.dirname(args.data_dir), "fake_coco")
    _fake_coco(coco_root, args.coco_images)
    coco_config = CocoFormatConfig(
        name="bench_coco_like", splits={"train": ("train.json", "images")}
    )
    settings = {
        "shapes 128x128, N=16": dict(
            name="jaxseg_shapes/medium", batch_size=8, image_size=128, max_instances=16
        ),
        "coco-like 800x1333, N=100": dict(
            name="coco",
            batch_size=2,
            image_size=(800, 1333),
            max_instances=100,
            min_size=800,
            max_size=1333,
            config=coco_config,
            manual_dir=coco_root,
        ),
    }
    print(f"cpu count: {os.cpu_count()}")
    print(f"{'setting':28s} {'workers':>7s} {'batch':>5s} {'images/s':>9s}")
    for label, kwargs in settings.items():
        kwargs = dict(kwargs)
        name = kwargs.pop("name")
        for workers in args.workers:
            loader = make_instance_loader(
                name, "train", train=True, seed=0, worker_count=workers,
                data_dir=args.data_dir, scale_range=(1.0, 1.0), **kwargs,
            )  # fmt: skip
            rate = _measure(loader, args.batches)
            print(f"{label:28s} {workers:7d} {kwargs['batch_size']:5d} {rate:9.1f}", flush=True)


if __name__ == "__main__":
    main()
