"""FCN train-step time, compile time and peak memory: jaxseg vs the same network in torch.

    python benchmarks/fcn.py [--steps 3] [--models fcn8s,fcn_resnet50]

FCN-8s (VGG16, 500 x 500, batch 1) against the reference Caffe net written in torch, and
FCN-ResNet50 (520 x 520, batch 2, auxiliary head) against torchvision's `fcn_resnet50`,
both with 21 classes, random weights, SGD with momentum and per-pixel cross-entropy with
ignore label 255. Each side runs in its own process, so that peak memory (max RSS) is its
own. Compile time is jaxseg's first step minus a steady step; torch has none.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

NUM_CLASSES = 21
SETTINGS = {"fcn8s": dict(size=500, batch=1), "fcn_resnet50": dict(size=520, batch=2)}


def run_jax(model_name, steps):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxseg import compiler_options
    from jaxseg.models import build_model, softmax_cross_entropy

    size, batch = SETTINGS[model_name]["size"], SETTINGS[model_name]["batch"]
    kwargs = {"aux_loss": True} if model_name == "fcn_resnet50" else {}
    model = build_model(model_name, num_classes=NUM_CLASSES, **kwargs)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(batch, size, size, 3)).astype(np.float32))
    labels = jnp.asarray(rng.integers(0, NUM_CLASSES, size=(batch, size, size)).astype(np.int32))
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), images[:1])
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    tx = optax.sgd(1e-3, momentum=0.9)
    opt_state = tx.init(params)

    def loss_fn(params, state, key):
        out, updates = model.apply(
            {"params": params, **state},
            images,
            train=True,
            rngs={"dropout": key},
            mutable=list(state),
        )
        if isinstance(out, dict):
            loss = softmax_cross_entropy(out["out"], labels)
            loss += 0.5 * softmax_cross_entropy(out["aux"], labels)
        else:
            loss = softmax_cross_entropy(out, labels)
        return loss, updates

    @jax.jit
    def step(params, state, opt_state, key):
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss

    step = compiler_options.jit(step.__wrapped__, donate_argnums=(0, 1, 2))  # as train.py's
    key = jax.random.key(1)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        params, state, opt_state, loss = step(params, state, opt_state, key)
        loss.block_until_ready()
        times.append(time.perf_counter() - start)
    steady = statistics.median(times[1:])
    return {"step_s": steady, "compile_s": times[0] - steady, "loss": float(loss)}


def torch_fcn8s(torch):
    """The reference FCN-8s (voc-fcn8s/net.py) in torch: conv1_1 padded 100, ceil pooling."""
    nn = torch.nn

    class FCN8s(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256),
                      (256, 256), (256, 512), (512, 512), (512, 512), (512, 512), (512, 512),
                      (512, 512)]  # fmt: skip
            self.convs = nn.ModuleList(
                nn.Conv2d(i, o, 3, padding=100 if n == 0 else 1) for n, (i, o) in enumerate(widths)
            )
            self.fc6 = nn.Conv2d(512, 4096, 7)
            self.fc7 = nn.Conv2d(4096, 4096, 1)
            self.drop = nn.Dropout2d(0.5)
            self.score_fr = nn.Conv2d(4096, NUM_CLASSES, 1)
            self.score_pool4 = nn.Conv2d(512, NUM_CLASSES, 1)
            self.score_pool3 = nn.Conv2d(256, NUM_CLASSES, 1)
            self.upscore2 = nn.ConvTranspose2d(NUM_CLASSES, NUM_CLASSES, 4, 2, bias=False)
            self.upscore_pool4 = nn.ConvTranspose2d(NUM_CLASSES, NUM_CLASSES, 4, 2, bias=False)
            self.upscore8 = nn.ConvTranspose2d(NUM_CLASSES, NUM_CLASSES, 16, 8, bias=False)
            for up in (self.upscore2, self.upscore_pool4, self.upscore8):
                up.weight.requires_grad_(False)  # fixed bilinear upsampling, as jaxseg's default
            self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)

        def forward(self, x):
            h, pooled, i = x, [], 0
            for n in (2, 2, 3, 3, 3):
                for _ in range(n):
                    h = torch.relu(self.convs[i](h))
                    i += 1
                h = self.pool(h)
                pooled.append(h)
            h = self.drop(torch.relu(self.fc6(h)))
            h = self.drop(torch.relu(self.fc7(h)))
            h = self.upscore2(self.score_fr(h))
            p4 = self.score_pool4(pooled[3])[:, :, 5 : 5 + h.shape[2], 5 : 5 + h.shape[3]]
            h = self.upscore_pool4(h + p4)
            p3 = self.score_pool3(pooled[2])[:, :, 9 : 9 + h.shape[2], 9 : 9 + h.shape[3]]
            h = self.upscore8(h + p3)
            return h[:, :, 31 : 31 + x.shape[2], 31 : 31 + x.shape[3]]

    return FCN8s()


def run_torch(model_name, steps):
    import torch
    import torchvision

    size, batch = SETTINGS[model_name]["size"], SETTINGS[model_name]["batch"]
    torch.manual_seed(0)
    if model_name == "fcn8s":
        model = torch_fcn8s(torch)
    else:
        model = torchvision.models.segmentation.fcn_resnet50(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=True
        )
    model.train()
    images = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, NUM_CLASSES, (batch, size, size))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        out = model(images)
        if isinstance(out, dict):
            loss = criterion(out["out"], labels) + 0.5 * criterion(out["aux"], labels)
        else:
            loss = criterion(out, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times[1:]), "compile_s": 0.0, "loss": float(loss)}


def child(side, model_name, steps):
    result = (run_jax if side == "jax" else run_torch)(model_name, steps)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--models", default="fcn8s,fcn_resnet50")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.steps)
        return
    import jax
    import torch

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; jax {jax.__version__} "
        f"({jax.default_backend()}), torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    header = f"{'model':<34} {'side':<6} {'step s':>8} {'compile s':>10} {'peak GiB':>9}"
    print(header)
    for name in args.models.split(","):
        results = {}
        for side in ("jax", "torch"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", side, name, "--steps", str(args.steps)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[side] = json.loads(out.strip().splitlines()[-1])
        s = SETTINGS[name]
        label = f"{name} {s['size']}x{s['size']} batch {s['batch']}"
        for side, r in results.items():
            print(
                f"{label:<34} {side:<6} {r['step_s']:>8.2f} {r['compile_s']:>10.1f} "
                f"{r['peak_rss_gib']:>9.2f}"
            )
        ratio = results["jax"]["step_s"] / results["torch"]["step_s"]
        print(f"{label:<34} ratio jaxseg / torch step time: {ratio:.2f}")


if __name__ == "__main__":
    main()
