"""GPU check: jaxseg training images/s against torchvision AMP on one GPU, and GPU = CPU.

    python benchmarks/gpu_check.py [--tiny] [--steps N] [--warmup N] [--only fcn|mask_rcnn]
                                   [--json OUT] [--deadline S] [--block-missing]
                                   [--mask-rcnn-batch B] [--fcn-batch B] [--mask-rois N]

On one H100 / H200 (`benchmarks/gpu_check.sh` runs it there) it prints, side by side:

- images/s of a training step (forward, backward, SGD with momentum) of Mask R-CNN R50-FPN
  at 1024x1024 (batch 8) and FCN-8s VGG16 at 512x512 (batch 16), jaxseg in float32 and
  bfloat16 (`dtype=`: parameters and losses stay float32) and torchvision with AMP (float16
  autocast and a GradScaler, as torchvision's reference scripts train with `--amp`), on the
  same GPU in the same run, with the ratios; jaxseg's compile times on their own;
- a correctness line: jaxseg float32 inference on the GPU equals the CPU result (same
  weights, same input, one process: `jax.devices('cpu')`), matmul precision 'highest' so
  that TF32 does not enter, within the printed tolerances.

Both frameworks run the same model: torchvision builds it with random weights (seeded, no
download) and `jaxseg.convert` converts them. Mask R-CNN: 90 classes, five objects per image
(benchmarks/mask_rcnn.py's data), torchvision's counts (2000 proposals, 512 RoIs), jaxseg's
fixed 128 mask RoIs per image (`--mask-rois`; torchvision's data-dependent count is
printed), `aligned=False`, ImageNet normalisation switched off on the torch side so both see
the same pixels. By default the fine-tuning set-up that MLPerf and jaxseg's configs train:
frozen BatchNorm, stem and layer1 frozen (`--mask-rcnn-setup batch`: every stage trained
with BatchNorm); the random backbone's BatchNorm statistics are first set from one batch so
that the frozen network neither explodes nor vanishes. FCN-8s: benchmarks/fcn.py's torch
net with torchvision's VGG16 weights, 21 classes, fixed bilinear upsampling on both sides.

Each measurement runs in its own process (the GPU's memory is that framework's alone; a
stuck compile can be stopped): a few warm-up steps, then `--steps` steps timed together
(asynchronous dispatch, one synchronisation at the end). The most important runs go first
and a global deadline (`--deadline`, 420 s by default) stops the rest, so the table always
comes out, under 8 minutes.

`--tiny`: the CPU dry run (tiny images and counts, full-width models). `--block-missing`:
`grain`, `tensorflow_datasets`, `ml_collections` and `pycocotools` cannot be imported, as on
the GPU machine's image (the test runs the dry run so).
"""

from __future__ import annotations

import argparse
import importlib.abc
import json
import os
import platform
import subprocess
import sys
import time

# benchmarks/fcn.py (the torch FCN-8s) and benchmarks/mask_rcnn.py (data, constants).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fcn as fcn_benchmark
import mask_rcnn as mask_rcnn_benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = ("grain", "tensorflow_datasets", "ml_collections", "pycocotools")
GOAL_MASK_RCNN_BF16 = 200.0  # images/s per H100/H200 (issue 13)
GOAL_RATIO = 1.5  # over torchvision AMP in the same run

# model -> label, image size and batch of the full run and of the --tiny dry run.
MODELS = {
    "mask_rcnn": dict(label="Mask R-CNN R50-FPN", size=1024, batch=8, tiny_size=128, tiny_batch=1),
    "fcn": dict(label="FCN-8s VGG16", size=512, batch=16, tiny_size=64, tiny_batch=1),
}
# Mask R-CNN counts of the dry run (jaxseg dotted setting -> torchvision name); the full run
# keeps both frameworks' defaults, which are the same numbers.
TINY_COUNTS = {
    "rpn.pre_nms_top_n_train": ("rpn_pre_nms_top_n_train", 200),
    "rpn.post_nms_top_n_train": ("rpn_post_nms_top_n_train", 100),
    "rpn.pre_nms_top_n_test": ("rpn_pre_nms_top_n_test", 100),
    "rpn.post_nms_top_n_test": ("rpn_post_nms_top_n_test", 50),
    "roi_heads.batch_size_per_image": ("box_batch_size_per_image", 64),
    "roi_heads.detections_per_image": ("box_detections_per_img", 20),
}
TINY_MASK_ROIS = 16
# Correctness: inference sizes (full, tiny), detections kept, and the tolerances.
CHECK_SIZES = {"fcn": (256, 64), "mask_rcnn": (512, 128)}
CHECK_SCORE_THRESHOLD = 0.015  # random weights score every class near 1/91 (< 0.05)
CHECK_DETECTIONS = 50
TOLERANCE = {"dense": 1e-4, "box_px": 1e-2, "score": 1e-4, "mask": 1e-3}

# The order of the runs: what the goals need first; what is left when time runs out last.
# (model, kind, cap in seconds on the full run)
RUNS = [
    ("mask_rcnn", "torch_amp", 75),
    ("mask_rcnn", "jax_bfloat16", 240),
    ("fcn", "torch_amp", 60),
    ("fcn", "jax_bfloat16", 120),
    ("both", "correctness", 150),
    ("fcn", "jax_float32", 120),
    ("mask_rcnn", "jax_float32", 240),
]
KIND_LABELS = {"jax_float32": "jaxseg f32", "jax_bfloat16": "jaxseg bf16", "torch_amp": "torch AMP"}


class _BlockMissing(importlib.abc.MetaPathFinder):
    """Makes the packages the GPU image lacks unimportable, as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by --block-missing)")
        return None


def block_missing() -> None:
    """Installs `_BlockMissing` first on `sys.meta_path`; fails if one is already imported."""
    imported = sorted(m for m in sys.modules if m.split(".")[0] in MISSING)
    if imported:
        raise RuntimeError(f"--block-missing: already imported: {imported}")
    sys.meta_path.insert(0, _BlockMissing())


# ---------------------------------------------------------------------------- the models


def _settle_batch_norm(torch, net, images):
    """Sets every BatchNorm2d's running statistics of `net` from one batch of `images`."""
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average: one batch sets the statistics
    net.train()
    with torch.no_grad():
        net(images)
    net.eval()


def torch_mask_rcnn(torch, *, size, setup, tiny, check=False, build=True):
    """Returns `(net, state_dict)`: torchvision's Mask R-CNN R50-FPN with random weights.

    `state_dict` (BatchNorm2d keys) is what `jaxseg.convert` reads; `net` is built for
    `setup` ('frozen': FrozenBatchNorm2d, stem and layer1 frozen; 'batch': all trained),
    unless not `build` (then None where it would be another net than the state dict's).
    """
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import misc

    torch.manual_seed(0)
    settings = dict(
        num_classes=mask_rcnn_benchmark.CLASSES + 1,
        min_size=size,
        max_size=size,
        image_mean=[0.0, 0.0, 0.0],  # the inputs are already normalised, as jaxseg's
        image_std=[1.0, 1.0, 1.0],
    )
    if tiny:
        settings.update({name: value for name, value in TINY_COUNTS.values()})
    if check:
        settings.update(box_score_thresh=CHECK_SCORE_THRESHOLD)
        settings.update(box_detections_per_img=CHECK_DETECTIONS)
    net = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **settings)
    calibration = torch.randn(2, 3, min(size, 256), min(size, 256))
    _settle_batch_norm(torch, net.backbone.body, calibration)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if setup == "frozen" and not build:
        net = None
    elif setup == "frozen":
        # What maskrcnn_resnet50_fpn builds from ImageNet weights (trainable_layers=3).
        backbone = _resnet_fpn_extractor(resnet50(norm_layer=misc.FrozenBatchNorm2d), 3)
        net = MaskRCNN(backbone, **settings)
        net.load_state_dict(state)
    return net, state


def jax_mask_rcnn(torch, *, size, setup, tiny, dtype, mask_rois=None, check=False):
    """Returns `(model, variables)`: torch_mask_rcnn's weights converted by jaxseg.convert."""
    from jaxseg.convert import convert_state_dict
    from jaxseg.models.settings import nest

    _, state = torch_mask_rcnn(torch, size=size, setup=setup, tiny=tiny, check=check, build=False)
    settings = dict(dtype=dtype)
    if setup == "batch":
        settings.update(backbone_norm="batch", frozen_stages=0)
    if tiny:
        settings.update({name: value for name, (_, value) in TINY_COUNTS.items()})
    if mask_rois:
        settings["roi_heads.mask_rois_per_image"] = mask_rois
    if check:
        settings["roi_heads.score_threshold"] = CHECK_SCORE_THRESHOLD
        settings["roi_heads.detections_per_image"] = CHECK_DETECTIONS
    conversion = convert_state_dict(state, "maskrcnn_resnet50_fpn", **nest(settings))
    return conversion.model, conversion.variables


def _bilinear_deconv(torch, layer):
    """Sets a ConvTranspose2d [K, K, k, k] to jaxseg's fixed upsampling: bilinear, c -> c."""
    from jaxseg.models import bilinear_kernel

    channels, size = layer.weight.shape[0], layer.weight.shape[2]
    weight = torch.zeros_like(layer.weight)
    weight[range(channels), range(channels)] = torch.from_numpy(bilinear_kernel(size)).float()
    with torch.no_grad():
        layer.weight.copy_(weight)


def torch_fcn8s(torch):
    """Returns `(net, vgg16_state_dict)`: benchmarks/fcn.py's FCN-8s with random weights.

    The VGG16 layers are torchvision's `vgg16` (seeded), the score layers the torch net's
    default initialisation, the upsampling bilinear (jaxseg's fixed upsampling).
    """
    import torchvision

    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None)
    net = fcn_benchmark.torch_fcn8s(torch)
    convs = [m for m in vgg.features if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for mine, theirs in zip(net.convs, convs, strict=True):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
        net.fc6.weight.copy_(vgg.classifier[0].weight.view(4096, 512, 7, 7))
        net.fc6.bias.copy_(vgg.classifier[0].bias)
        net.fc7.weight.copy_(vgg.classifier[3].weight.view(4096, 4096, 1, 1))
        net.fc7.bias.copy_(vgg.classifier[3].bias)
    for layer in (net.upscore2, net.upscore_pool4, net.upscore8):
        _bilinear_deconv(torch, layer)
    return net, vgg.state_dict()


def jax_fcn8s(torch, *, dtype):
    """Returns `(model, variables)`: torch_fcn8s's weights in jaxseg's FCN-8s.

    The VGG16 state dict goes through `jaxseg.convert`; the three 1x1 score layers are
    copied with its conv layout.
    """
    import jax
    import jax.numpy as jnp

    from jaxseg.convert import convert_state_dict
    from jaxseg.convert.layout import conv_kernel
    from jaxseg.models import build_model

    net, vgg_state = torch_fcn8s(torch)
    params = {"backbone": convert_state_dict(vgg_state, "vgg16").variables["params"]}
    for name in ("score_fr", "score_pool4", "score_pool3"):
        layer = getattr(net, name)
        params[name] = {
            "kernel": jnp.asarray(conv_kernel(layer.weight.detach().numpy())),
            "bias": jnp.asarray(layer.bias.detach().numpy()),
        }
    model = build_model("fcn8s", num_classes=fcn_benchmark.NUM_CLASSES, dtype=dtype)
    example = jnp.zeros((1, 64, 64, 3), jnp.float32)
    want = jax.eval_shape(lambda: model.init(jax.random.key(0), example))["params"]
    shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), (want, params))
    if shapes[0] != shapes[1]:
        raise ValueError("the converted FCN-8s parameters do not fit jaxseg's FCN-8s")
    return model, {"params": params}


def _mask_rcnn_data(size, batch):
    """Returns `(images [B, S, S, 3], boxes [B, N, 4], classes [B, N])`: random, seeded.

    benchmarks/mask_rcnn.py's `_data` (two images) repeated to `batch` images; the repeats
    get fresh pixels (the same objects).
    """
    import numpy as np

    images, boxes, classes = mask_rcnn_benchmark._data(size)
    index = np.arange(batch) % len(images)  # [B]
    images = images[index]
    images[len(boxes) :] = np.random.default_rng(1).normal(size=images[len(boxes) :].shape)
    return images, boxes[index], classes[index]


# ------------------------------------------------------------------------------ the runs


def _device_info(jax=None, torch=None):
    info = {"python": platform.python_version(), "cpus": os.cpu_count()}
    if jax is not None:
        device = jax.devices()[0]
        info.update(jax=jax.__version__, jax_backend=device.platform, device=device.device_kind)
    if torch is not None:
        import torchvision

        info.update(torch=torch.__version__, torchvision=torchvision.__version__)
        if torch.cuda.is_available():
            info.update(device=torch.cuda.get_device_name(0), torch_cuda=torch.version.cuda)
        else:
            info.setdefault("device", platform.processor() or platform.machine())
    return info


def _peak_gib(device):
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return (stats or {}).get("peak_bytes_in_use", 0) / 2**30 or None


def run_jax(model_name, dtype_name, args):
    """Times jaxseg's training step; returns a dict of the run's figures."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch

    from jaxseg.detection import Instances, total_loss
    from jaxseg.models import softmax_cross_entropy
    from jaxseg.models.settings import get_setting

    size, batch = _shape(model_name, args)
    dtype = jnp.dtype(dtype_name)
    device = jax.devices()[0]
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    if model_name == "fcn":
        model, variables = jax_fcn8s(torch, dtype=dtype)
        images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
        labels = rng.integers(0, fcn_benchmark.NUM_CLASSES, (batch, size, size)).astype(np.int32)
        data = (images, labels)

        def loss_fn(params, state, data, key):
            images, labels = data
            logits = model.apply({"params": params}, images, train=True, rngs={"dropout": key})
            return softmax_cross_entropy(logits, labels), state

    else:
        model, variables = jax_mask_rcnn(
            torch,
            size=size,
            setup=args.mask_rcnn_setup,
            tiny=args.tiny,
            dtype=dtype,
            mask_rois=args.mask_rois,
        )
        images, boxes, classes = _mask_rcnn_data(size, batch)
        objects = boxes.shape[1]
        gt = Instances(
            boxes=jnp.asarray(boxes),
            classes=jnp.asarray(classes, jnp.int32),
            masks=jnp.ones((batch, objects, 112, 112), jnp.uint8),  # the loader's crop format
            valid=jnp.ones((batch, objects), bool),
        )
        data = (images, gt)

        def loss_fn(params, state, data, key):
            images, gt = data
            (_, losses), updates = model.apply(
                {"params": params, **state},
                images,
                gt,
                train=True,
                rngs={"sampling": key},
                mutable=list(state),
            )
            return total_loss(losses), {**state, **updates}

    setup_s = time.perf_counter() - t
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    optimizer = optax.sgd(mask_rcnn_benchmark.LR, momentum=0.9)

    def step(params, state, opt_state, count, data):
        key = jax.random.fold_in(jax.random.key(1), count)
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, data, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, count + 1, loss

    params, state, data = jax.device_put((params, state, data), device)
    opt_state = jax.jit(optimizer.init)(params)
    count = jax.device_put(jnp.zeros((), jnp.int32), device)
    t = time.perf_counter()
    lowered = jax.jit(step, donate_argnums=(0, 1, 2, 3)).lower(
        params, state, opt_state, count, data
    )
    trace_s = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    first = None
    for _ in range(args.warmup):
        t = time.perf_counter()
        params, state, opt_state, count, loss = compiled(params, state, opt_state, count, data)
        loss.block_until_ready()
        first = first if first is not None else time.perf_counter() - t
    t = time.perf_counter()
    losses = []
    for _ in range(args.steps):
        params, state, opt_state, count, loss = compiled(params, state, opt_state, count, data)
        losses.append(loss)
    jax.block_until_ready(losses)
    elapsed = time.perf_counter() - t
    return {
        "images_per_s": args.steps * batch / elapsed,
        "step_ms": 1000 * elapsed / args.steps,
        "setup_s": setup_s,
        "trace_s": trace_s,
        "compile_s": compile_s,
        "first_step_s": first,
        "peak_gib": _peak_gib(device),
        "loss_first": float(losses[0]),
        "loss_last": float(losses[-1]),
        "mask_rois_per_image": (
            get_setting(model, "roi_heads.mask_rois_per_image")
            if model_name == "mask_rcnn"
            else None
        ),
        "env": _device_info(jax=jax),
    }


def run_torch(model_name, args):
    """Times torchvision's (torch's) training step with AMP; returns the run's figures."""
    import numpy as np
    import torch

    size, batch = _shape(model_name, args)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    # float16 + GradScaler is torchvision's --amp; CPU autocast (the dry run) takes bfloat16.
    amp_dtype = torch.float16 if cuda else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    positives = []
    t = time.perf_counter()
    if model_name == "fcn":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
        net, _ = torch_fcn8s(torch)
        rng = np.random.default_rng(0)
        images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
        labels = rng.integers(0, fcn_benchmark.NUM_CLASSES, (batch, size, size))
        images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
        labels = torch.from_numpy(labels).long().to(device)
        criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
        net = net.to(device)

        def loss_fn():
            return criterion(net(images), labels)

    else:
        net, _ = torch_mask_rcnn(torch, size=size, setup=args.mask_rcnn_setup, tiny=args.tiny)
        images, boxes, classes = _mask_rcnn_data(size, batch)
        net = net.to(device)
        inputs = [torch.from_numpy(im).permute(2, 0, 1).contiguous().to(device) for im in images]
        targets = []
        for b in range(batch):
            masks = np.zeros((len(boxes[b]), size, size), np.uint8)
            for n, (x1, y1, x2, y2) in enumerate(boxes[b].astype(int)):
                masks[n, y1:y2, x1:x2] = 1
            targets.append(
                {
                    "boxes": torch.from_numpy(boxes[b]).to(device),
                    "labels": torch.from_numpy(classes[b]).long().to(device),
                    "masks": torch.from_numpy(masks).to(device),
                }
            )
        # The mask head runs on the sampled positives, a data-dependent count: record it.
        select = net.roi_heads.select_training_samples

        def counting_select(proposals, targets):
            out = select(proposals, targets)
            positives.extend(int((labels > 0).sum()) for labels in out[2])
            return out

        net.roi_heads.select_training_samples = counting_select

        def loss_fn():
            return sum(net(inputs, targets).values())

    setup_s = time.perf_counter() - t
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=mask_rcnn_benchmark.LR, momentum=0.9)

    def step():
        with torch.autocast(device.type, dtype=amp_dtype):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    first = None
    for _ in range(args.warmup):
        t = time.perf_counter()
        step()
        sync()
        first = first if first is not None else time.perf_counter() - t
    positives.clear()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    sync()
    elapsed = time.perf_counter() - t
    return {
        "images_per_s": args.steps * batch / elapsed,
        "step_ms": 1000 * elapsed / args.steps,
        "setup_s": setup_s,
        "first_step_s": first,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "loss_first": float(losses[0]),
        "loss_last": float(losses[-1]),
        "amp_dtype": str(amp_dtype).replace("torch.", ""),
        "mask_rois_per_image": float(np.mean(positives)) if positives else None,
        "env": _device_info(torch=torch),
    }


def _relative(got, want):
    import numpy as np

    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def _compare_detections(gpu, cpu):
    """Returns the differences of two `Detections` of one image, matched by nearest box."""
    import numpy as np

    count_gpu, count_cpu = int(gpu.valid[0].sum()), int(cpu.valid[0].sum())
    result = {"detections_gpu": count_gpu, "detections_cpu": count_cpu}
    if count_gpu != count_cpu or count_gpu == 0:
        return result
    boxes_gpu = np.asarray(gpu.boxes[0, :count_gpu], np.float64)
    boxes_cpu = np.asarray(cpu.boxes[0, :count_cpu], np.float64)
    # The order may differ between entries of (float32-)equal score: match each box.
    distance = np.abs(boxes_gpu[:, None] - boxes_cpu[None]).max(-1)  # [D, D]
    match = distance.argmin(1)
    result["box_px"] = float(distance[np.arange(count_gpu), match].max())
    result["score"] = float(
        np.abs(np.asarray(gpu.scores[0, :count_gpu]) - np.asarray(cpu.scores[0])[match]).max()
    )
    result["mask"] = float(
        np.abs(np.asarray(gpu.masks[0, :count_gpu]) - np.asarray(cpu.masks[0])[match]).max()
    )
    result["classes_equal"] = bool(
        (np.asarray(gpu.classes[0, :count_gpu]) == np.asarray(cpu.classes[0])[match]).all()
    )
    result["one_to_one"] = len(set(match.tolist())) == count_gpu
    return result


def run_correctness(args):
    """jaxseg float32 inference on the default device and on the CPU: returns the errors."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    accelerator, cpu = jax.devices()[0], jax.devices("cpu")[0]
    rng = np.random.default_rng(2)
    result = {"accelerator": str(accelerator), "cpu": str(cpu), "precision": "highest"}
    on = lambda tree, device: jax.device_put(tree, device)  # noqa: E731
    with jax.default_matmul_precision("highest"):
        if args.only in (None, "fcn"):
            size = CHECK_SIZES["fcn"][args.tiny]
            model, variables = jax_fcn8s(torch, dtype=jnp.float32)
            x = rng.normal(size=(1, size, size, 3)).astype(np.float32)
            infer = jax.jit(lambda v, x: model.apply(v, x, train=False))
            got = infer(on(variables, accelerator), on(x, accelerator))
            want = infer(on(variables, cpu), on(x, cpu))
            result["fcn"] = {"size": size, "logits": _relative(got, want)}
        if args.only in (None, "mask_rcnn"):
            size = CHECK_SIZES["mask_rcnn"][args.tiny]
            model, variables = jax_mask_rcnn(
                torch,
                size=size,
                setup=args.mask_rcnn_setup,
                tiny=args.tiny,
                dtype=jnp.float32,
                check=True,
            )
            x = rng.normal(size=(1, size, size, 3)).astype(np.float32)

            def forward(variables, x):
                detections, state = model.apply(
                    variables,
                    x,
                    train=False,
                    capture_intermediates=lambda module, _: module.name == "fpn",
                    mutable=["intermediates"],
                )
                return state["intermediates"]["fpn"]["__call__"][0], detections

            infer = jax.jit(forward)
            fpn_gpu, det_gpu = infer(on(variables, accelerator), on(x, accelerator))
            fpn_cpu, det_cpu = infer(on(variables, cpu), on(x, cpu))
            fpn = max(_relative(g, c) for g, c in zip(fpn_gpu, fpn_cpu, strict=True))
            result["mask_rcnn"] = {
                "size": size,
                "fpn": fpn,
                **_compare_detections(det_gpu, det_cpu),
            }
    result["env"] = _device_info(jax=jax)
    return result


def _shape(model_name, args):
    """Returns `(image size, batch)` of a model's training runs."""
    spec = MODELS[model_name]
    batch = {"fcn": args.fcn_batch, "mask_rcnn": args.mask_rcnn_batch}[model_name]
    if args.tiny:
        return spec["tiny_size"], batch or spec["tiny_batch"]
    return spec["size"], batch or spec["batch"]


def child(model_name, kind, args):
    if kind == "correctness":
        result = run_correctness(args)
    elif kind == "torch_amp":
        result = run_torch(model_name, args)
    else:
        result = run_jax(model_name, kind.removeprefix("jax_"), args)
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------- the report


def _correctness_line(c):
    """Returns the correctness line and whether every figure is within its tolerance."""
    if c.get("status", "ok") != "ok":
        return f"correctness: {c['status']}", False
    tol = TOLERANCE
    parts, ok = [], True
    if "fcn" in c:
        f = c["fcn"]
        ok &= f["logits"] <= tol["dense"]
        parts.append(
            f"FCN-8s {f['size']}px logits rel. err {f['logits']:.1e} (tol {tol['dense']:.0e})"
        )
    if "mask_rcnn" in c:
        m = c["mask_rcnn"]
        ok &= m["fpn"] <= tol["dense"]
        text = f"Mask R-CNN {m['size']}px FPN rel. err {m['fpn']:.1e} (tol {tol['dense']:.0e})"
        if m["detections_gpu"] != m["detections_cpu"] or m["detections_gpu"] == 0:
            ok = False
            text += f", detections {m['detections_gpu']} vs {m['detections_cpu']}"
        else:
            ok &= m["box_px"] <= tol["box_px"] and m["score"] <= tol["score"]
            ok &= m["mask"] <= tol["mask"] and m["classes_equal"] and m["one_to_one"]
            text += (
                f", {m['detections_gpu']} = {m['detections_cpu']} detections"
                f"{'' if m['classes_equal'] else ', CLASSES DIFFER'}, boxes {m['box_px']:.1e} px "
                f"(tol {tol['box_px']:.0e}), scores {m['score']:.1e} (tol {tol['score']:.0e}), "
                f"masks {m['mask']:.1e} (tol {tol['mask']:.0e})"
            )
        parts.append(text)
    where = f"{c['accelerator']} vs {c['cpu']}, float32, matmul precision {c['precision']}"
    if not c["accelerator"].lower().startswith(("cuda", "gpu", "rocm")):
        where += "; both on the CPU: a dry run of the check, not a check"
    verdict = "PASS" if ok else "FAIL"
    return f"correctness ({where}): {'; '.join(parts)}: {verdict}", ok


def _speed(value):
    """Returns images/s with one decimal, or two below 10 (the dry run): always a decimal point."""
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _cell(run, key="images_per_s", fmt=_speed):
    """Returns a table cell: the figure, or why there is none (failed, timeout, skipped)."""
    if run is None:
        return "-"
    if run.get("status", "ok") != "ok":
        return run["status"].split(" ")[0]
    value = run.get(key)
    return "-" if value is None else fmt(value)


def report(results, args, elapsed):
    """Prints the side-by-side table, the details, the correctness line and the goals."""
    env = {}
    for r in results.values():
        env.update(r.get("env", {}))
    print()
    print(
        f"GPU check{' (--tiny: CPU dry run sizes)' if args.tiny else ''}: "
        f"{env.get('device', '?')}; "
        f"jax {env.get('jax', '?')} ({env.get('jax_backend', '?')}), torch {env.get('torch', '?')} "
        f"(CUDA {env.get('torch_cuda', '-')}), torchvision {env.get('torchvision', '?')}, "
        f"Python {env.get('python', '?')}, {env.get('cpus', '?')} CPUs; {elapsed:.0f} s in all"
    )
    print(
        f"training step images/s: {args.warmup} warm-up + {args.steps} timed steps; "
        f"Mask R-CNN set-up {args.mask_rcnn_setup!r}; jaxseg f32 = XLA's default precision "
        "(it allows TF32); torch AMP = float16 autocast + GradScaler (bfloat16 on CPU)"
    )
    header = (
        f"{'model':<34}{'batch':>6}{'jaxseg f32':>12}{'jaxseg bf16':>13}{'torch AMP':>11}"
        f"{'bf16/AMP':>10}{'f32/AMP':>9}{'compile f32/bf16 s':>20}"
    )
    print(header)
    print("-" * len(header))
    models = [m for m in MODELS if args.only in (None, m)]
    for m in models:
        size, batch = _shape(m, args)
        f32, bf16, amp = (results.get((m, k)) for k in ("jax_float32", "jax_bfloat16", "torch_amp"))
        ratios = []
        for jx in (bf16, f32):
            ok = all(r and r.get("status", "ok") == "ok" for r in (jx, amp))
            ratios.append(f"{jx['images_per_s'] / amp['images_per_s']:.2f}x" if ok else "-")
        label = f"{MODELS[m]['label']} {size}x{size}"
        seconds = "{:.0f}".format
        compiles = f"{_cell(f32, 'compile_s', seconds)}/{_cell(bf16, 'compile_s', seconds)}"
        print(
            f"{label:<34}{batch:>6}{_cell(f32):>12}{_cell(bf16):>13}{_cell(amp):>11}"
            f"{ratios[0]:>10}{ratios[1]:>9}{compiles:>20}"
        )
    print()
    for (m, kind), r in results.items():
        if kind == "correctness":
            continue
        name = f"  {m} {KIND_LABELS[kind]}:"
        if r.get("status", "ok") != "ok":
            print(f"{name} {r['status']}")
            continue
        extra = ""
        if r.get("mask_rois_per_image") is not None:
            extra = f", mask RoIs/image {r['mask_rois_per_image']:.1f}"
        if "compile_s" in r:
            extra += f", trace {r['trace_s']:.1f} s, compile {r['compile_s']:.1f} s"
        peak = "-" if r.get("peak_gib") is None else f"{r['peak_gib']:.1f}"
        print(
            f"{name} {r['step_ms']:.1f} ms/step, first step {r['first_step_s'] or 0:.2f} s, "
            f"set-up {r['setup_s']:.1f} s, peak {peak} GiB, loss {r['loss_first']:.3f} -> "
            f"{r['loss_last']:.3f}{extra}"
        )
    correctness = results.get(("both", "correctness"))
    ok = None
    if correctness is not None:
        line, ok = _correctness_line(correctness)
        print(line)
    goals = {}
    if not args.tiny and args.only in (None, "mask_rcnn"):
        bf16, amp = (
            results.get(("mask_rcnn", "jax_bfloat16")),
            results.get(("mask_rcnn", "torch_amp")),
        )
        have = bf16 is not None and bf16.get("status", "ok") == "ok"
        speed = bf16["images_per_s"] if have else None
        both = have and amp is not None and amp.get("status", "ok") == "ok"
        ratio = speed / amp["images_per_s"] if both else None
        goals = {
            "mask_rcnn_bf16_images_per_s": speed,
            "mask_rcnn_bf16_over_torch_amp": ratio,
            "met": bool(speed and ratio and speed >= GOAL_MASK_RCNN_BF16 and ratio >= GOAL_RATIO),
        }
        print(
            f"goals: Mask R-CNN bf16 >= {GOAL_MASK_RCNN_BF16:.0f} img/s: "
            f"{'-' if speed is None else f'{speed:.1f}'}; >= {GOAL_RATIO}x torchvision AMP: "
            f"{'-' if ratio is None else f'{ratio:.2f}x'}: {'MET' if goals['met'] else 'NOT MET'}"
        )
    else:
        print("goals: not judged (--tiny or --only fcn)")
    return {"correctness_ok": ok, "goals": goals}


def _run_child(model, kind, args, timeout):
    argv = [sys.executable, os.path.abspath(__file__), "--child", model, kind]
    argv += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    argv += ["--mask-rcnn-setup", args.mask_rcnn_setup, "--mask-rois", str(args.mask_rois)]
    for name in ("fcn_batch", "mask_rcnn_batch"):
        if getattr(args, name):
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    argv += (["--tiny"] if args.tiny else []) + (["--block-missing"] if args.block_missing else [])
    argv += ["--only", args.only] if args.only else []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if kind == "torch_amp":  # jax is imported there (for a kernel), never given the GPU
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    start = time.perf_counter()
    try:
        out = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout after {timeout:.0f} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        return {"status": f"failed (exit {out.returncode}; its traceback is above)"}
    result = json.loads(lines[-1][len("RESULT ") :])
    result["wall_s"] = time.perf_counter() - start
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: the CPU dry run")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (10; tiny 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (3; tiny 1)")
    parser.add_argument("--only", choices=sorted(MODELS), default=None)
    parser.add_argument("--json", default=None, metavar="OUT", help="write the results here")
    parser.add_argument(
        "--deadline", type=float, default=None, help="seconds for all runs (420; tiny 1800)"
    )
    parser.add_argument(
        "--mask-rcnn-setup",
        choices=("frozen", "batch"),
        default="frozen",
        help="frozen BatchNorm, stem and layer1 frozen; or every stage trained with BatchNorm",
    )
    parser.add_argument(
        "--mask-rois", type=int, default=None, help="jaxseg's fixed mask RoIs per image (128)"
    )
    parser.add_argument(
        "--mask-rcnn-batch", type=int, default=None, help="Mask R-CNN training batch (8; tiny 1)"
    )
    parser.add_argument(
        "--fcn-batch", type=int, default=None, help="FCN-8s training batch (16; tiny 1)"
    )
    parser.add_argument(
        "--block-missing", action="store_true", help=f"make {', '.join(MISSING)} unimportable"
    )
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = [("steps", 10, 2), ("warmup", 3, 1), ("deadline", 420.0, 1800.0)]
    for name, full, tiny in [*defaults, ("mask_rois", 128, TINY_MASK_ROIS)]:
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    for name in ("steps", "warmup", "mask_rois", "fcn_batch", "mask_rcnn_batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.block_missing:
        block_missing()
    if args.child:
        child(*args.child, args)
        return 0

    start = time.perf_counter()
    results = {}
    for model, kind, cap in RUNS:
        if args.only not in (None, model) and model != "both":
            continue
        left = args.deadline - (time.perf_counter() - start)
        if left < 5:
            results[(model, kind)] = {"status": "skipped (deadline)"}
            continue
        timeout = left if args.tiny else min(cap, left)
        print(f"[gpu_check] {model} {kind}: up to {timeout:.0f} s", file=sys.stderr, flush=True)
        r = results[(model, kind)] = _run_child(model, kind, args, timeout)
        summary = {k: v for k, v in r.items() if k != "env"}
        print(f"[gpu_check] {model} {kind}: {json.dumps(summary)}", file=sys.stderr, flush=True)
    summary = report(results, args, time.perf_counter() - start)
    if args.json:
        with open(args.json, "w") as f:
            runs = [{"model": m, "kind": k, **r} for (m, k), r in results.items()]
            json.dump({"args": vars(args), "runs": runs, **summary}, f, indent=1)
    return 0 if summary["correctness_ok"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
