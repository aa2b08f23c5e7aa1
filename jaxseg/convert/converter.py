"""torchvision state dict -> jaxseg module and variables, with every key accounted for.

Each jaxseg variable is looked up under its torchvision key (`jaxseg.convert.naming`) and
brought into jaxseg's layout (`jaxseg.convert.layout`). A key the model needs and the file
lacks, a key the file has and the model cannot use, or a shape that does not fit is an error
listing all of them: nothing is loaded partially and silently. The exceptions, each
reported in `Conversion.dropped` / `reinitialised` and logged:

- the arch's ignored keys (an ImageNet classifier's `fc`, VGG16's `classifier.6`) and
  BatchNorm's `num_batches_tracked` counters;
- another `num_classes` than the checkpoint's: the class-dependent layers (e.g. FCN's last
  1x1 convs) are initialised afresh, everything else is kept;
- an optional head switched off (`aux_loss=False` on a checkpoint with `aux_classifier`):
  its keys are dropped; switched on without one in the file: initialised afresh.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxseg.convert.archs import get_arch, guess_arch
from jaxseg.convert.layout import convert_tensor
from jaxseg.convert.naming import torch_key
from jaxseg.convert.reading import to_numpy

__all__ = ["Conversion", "convert_state_dict", "from_torchvision"]

_log = logging.getLogger(__name__)
_EXAMPLE = (1, 64, 64, 3)  # any image size builds the same variables
_LISTED = 30  # keys shown per list in an error


@dataclasses.dataclass(frozen=True)
class Conversion:
    """The result of a conversion.

    Attributes:
      arch: the torchvision architecture name.
      model: the jaxseg module.
      settings: its attributes besides the arch's fixed ones (given, else read from the
        state dict, e.g. `num_classes`), enough to rebuild it with `ARCHS[arch].build`.
      variables: `{'params': ..., 'batch_stats': ...}` of jax arrays.
      dropped: torchvision key -> why it was not used.
      reinitialised: jaxseg variable paths ('params/classifier/score/kernel') initialised
        afresh rather than converted.
    """

    arch: str
    model: nn.Module
    settings: dict[str, Any]
    variables: dict[str, Any]
    dropped: dict[str, str]
    reinitialised: tuple[str, ...]


def _under(path: str, modules: set[str]) -> bool:
    """Returns whether the slash path lies inside one of the module paths."""
    return any(path == m or path.startswith(m + "/") for m in modules)


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_LISTED]
    more = f"\n    ... and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return f"  {title} ({len(items)}):\n    " + "\n    ".join(shown) + more


def convert_state_dict(
    state_dict: Mapping[str, Any], arch: str, *, seed: int = 0, **settings: Any
) -> Conversion:
    """Returns the `Conversion` of a torchvision `state_dict` of `arch` into jaxseg.

    Args:
      state_dict: key -> torch tensor or array, as `model.state_dict()` or a file gives it.
      arch: a name in `jaxseg.convert.ARCHS` (torchvision's builder name).
      seed: PRNG seed of the layers initialised afresh (another `num_classes`, ...).
      **settings: attributes of the jaxseg module (e.g. `num_classes=5`, `norm='frozen'`);
        the class count and optional heads default to the checkpoint's.

    Raises:
      ValueError: an unknown arch or attribute, or a state dict that does not fit the model:
        the message lists the missing keys, the unexpected keys and the shape mismatches.
    """
    spec = get_arch(arch)
    tensors, original = {}, {}  # canonical key -> tensor, canonical key -> the file's key
    for key, value in to_numpy(state_dict).items():
        canonical = spec.canonical_key(key)
        if canonical in tensors:
            raise ValueError(f"{arch}: the state dict has both {original[canonical]} and {key}")
        tensors[canonical], original[canonical] = value, key
    found = spec.infer(tensors)
    settings = {**found, **settings}
    # Without the class count (no classifier in the file) the key check still runs, so that
    # the error lists the keys; it cannot pass, as the classifier's keys are missing.
    model = spec.build(**{**spec.placeholders, **settings})
    example = jnp.zeros(_EXAMPLE, jnp.float32)
    init_kwargs = dict(spec.init_kwargs)
    abstract = jax.eval_shape(
        lambda key: model.init(key, example, **init_kwargs), jax.random.key(0)
    )
    targets = traverse_util.flatten_dict(dict(abstract), sep="/")

    fresh: set[str] = set()  # jaxseg module paths initialised afresh
    reasons: dict[str, str] = {}  # jaxseg module path or torch key prefix -> why dropped
    if "num_classes" in found and settings.get("num_classes") != found["num_classes"]:
        for layer in spec.class_layers:
            fresh.add(layer)
            reasons[layer] = (
                f"{found['num_classes']} classes in the checkpoint, "
                f"{settings.get('num_classes')} requested: initialised afresh"
            )
    dropped_prefixes = {}
    for attribute, (head, prefix) in spec.optional_heads.items():
        if settings.get(attribute) and not found.get(attribute):
            fresh.add(head)
        elif found.get(attribute) and not settings.get(attribute):
            dropped_prefixes[prefix] = f"{attribute}=False: the head is not built"

    converted, used, dropped = {}, set(), {}
    missing, mismatched = [], []
    for path, target in targets.items():
        collection, *names = path.split("/")
        module_path = "/".join(names[:-1])
        key, kind = torch_key(collection, tuple(names), spec.module, kernel_kinds=spec.kernel_kinds)
        if _under(module_path, fresh):
            if key in tensors:
                used.add(key)
                layer = next(m for m in fresh if _under(module_path, {m}))
                dropped[original[key]] = reasons.get(layer, "initialised afresh")
            continue
        if key not in tensors:
            missing.append(f"{key} (for {path} {tuple(target.shape)})")
            continue
        used.add(key)
        try:
            value = convert_tensor(tensors[key], tuple(target.shape), kind)
        except ValueError as e:
            mismatched.append(f"{original[key]}: {e}")
            continue
        if value.shape != tuple(target.shape):
            mismatched.append(
                f"{original[key]}: file {tuple(tensors[key].shape)} -> {value.shape}, "
                f"model {path} {tuple(target.shape)}"
            )
            continue
        converted[path] = value.astype(target.dtype)

    unexpected = []
    for key in sorted(set(tensors) - used):
        prefix = next((p for p in dropped_prefixes if key.startswith(p)), None)
        if key.endswith(".num_batches_tracked"):
            continue  # BatchNorm's step counter: nothing in jaxseg uses it
        if prefix is not None:
            dropped[original[key]] = dropped_prefixes[prefix]
        elif key.startswith(spec.ignored):
            dropped[original[key]] = f"no counterpart in jaxseg's {spec.module_class.__name__}"
        else:
            unexpected.append(original[key])
    if missing or unexpected or mismatched:
        guess = guess_arch(set(original.values()))
        hint = (
            f" (the file looks like a torchvision {guess!r} state dict)"
            if guess and guess != arch
            else ""
        )
        parts = [
            _listing(title, items)
            for title, items in (
                ("missing keys", sorted(missing)),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            )
            if items
        ]
        raise ValueError(
            f"the state dict does not fit {arch} with {settings or 'default settings'}"
            + hint
            + ":\n"
            + "\n".join(parts)
        )

    reinitialised = tuple(sorted(set(targets) - set(converted)))
    if reinitialised:

        def initialise(key: jax.Array) -> dict[str, jax.Array]:
            # Only the fresh leaves are returned, so XLA drops the rest of the network.
            initial = model.init(key, example, **init_kwargs)
            initial = traverse_util.flatten_dict(dict(initial), sep="/")
            return {path: initial[path] for path in reinitialised}

        converted.update(jax.jit(initialise)(jax.random.key(seed)))
        _log.warning("%s: initialised afresh: %s", arch, ", ".join(reinitialised))
    for key, reason in sorted(dropped.items()):
        _log.info("%s: dropped %s (%s)", arch, key, reason)
    variables = traverse_util.unflatten_dict(
        {path: jnp.asarray(value) for path, value in converted.items()}, sep="/"
    )
    return Conversion(
        arch=arch,
        model=model,
        settings=settings,
        variables=variables,
        dropped=dropped,
        reinitialised=reinitialised,
    )


def from_torchvision(
    state_dict: Mapping[str, Any], arch: str, *, seed: int = 0, **model_kwargs: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Returns `(model, variables)`: a torchvision `state_dict` of `arch` as a jaxseg module.

    `model.apply(variables, images)` then computes what torchvision's model computes in
    eval mode, on images `[B, H, W, 3]` instead of `[B, 3, H, W]` (see `preprocessing(arch)`
    for the input normalisation). See `convert_state_dict` for the arguments and errors;
    it also reports the dropped keys and re-initialised layers, which this logs.

    Example:
      >>> net = torchvision.models.segmentation.fcn_resnet50(weights="DEFAULT")
      >>> model, variables = from_torchvision(net.state_dict(), "fcn_resnet50")
      >>> logits = model.apply(variables, images)["out"]  # [B, H, W, 21]
    """
    conversion = convert_state_dict(state_dict, arch, seed=seed, **model_kwargs)
    return conversion.model, conversion.variables
