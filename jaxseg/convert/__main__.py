"""Converts a torchvision state dict file into a jaxseg checkpoint folder.

    python -m jaxseg.convert --arch fcn_resnet50 --input fcn_resnet50_coco.pth --output DIR
    python -m jaxseg.convert --arch resnet50 --input resnet50.pth --output DIR --prefix backbone
    python -m jaxseg.convert --arch fcn_resnet50 --input f.pth --output DIR --num-classes 5

Then `train.py --config.init_from=DIR` starts from the weights (see
`jaxseg.convert.checkpoint` for the layout). Exit status 2 for bad arguments or a file that
does not fit the arch, 1 when torch is needed and missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import jax

from jaxseg.convert.archs import ARCHS
from jaxseg.convert.checkpoint import save_converted
from jaxseg.convert.converter import convert_state_dict
from jaxseg.convert.reading import read_state_dict
from jaxseg.models.settings import nest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxseg.convert",
        description="Convert torchvision weights (.pth state dict or .safetensors) into a "
        "jaxseg orbax checkpoint.",
    )
    parser.add_argument(
        "--arch",
        required=True,
        choices=sorted(ARCHS),
        metavar="ARCH",
        help=f"torchvision architecture: {', '.join(sorted(ARCHS))}",
    )
    parser.add_argument(
        "--input",
        required=True,
        metavar="FILE",
        help="torch.save(model.state_dict()) file, or .safetensors",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="folder to write (must not hold a checkpoint yet)",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="class count of the heads (default: the checkpoint's); another "
        "count re-initialises the class layers",
    )
    parser.add_argument(
        "--prefix",
        default="",
        help="nest the variables under this module path, e.g. 'backbone' for "
        "an ImageNet ResNet that an FCN-ResNet or Mask R-CNN starts from",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="another module attribute, e.g. norm='\"frozen\"' or aux_loss=false; a "
        "Mask R-CNN part's by its dotted name, e.g. roi_heads.score_threshold=0.01",
    )
    return parser


def _settings(args: argparse.Namespace) -> dict:
    settings = {}
    for item in args.setting:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--setting {item!r}: expected NAME=JSON")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value  # a bare string: --setting norm=frozen
        settings[name] = tuple(parsed) if isinstance(parsed, list) else parsed
    if args.num_classes is not None:
        settings["num_classes"] = args.num_classes
    return nest(settings)  # rpn.min_size=0 -> rpn={'min_size': 0}


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        state_dict = read_state_dict(args.input)
        conversion = convert_state_dict(state_dict, args.arch, **_settings(args))
        path = save_converted(args.output, conversion, source=args.input, prefix=args.prefix)
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key, reason in sorted(conversion.dropped.items()):
        print(f"dropped {key}: {reason}")
    for path_name in conversion.reinitialised:
        print(f"initialised afresh: {path_name}")
    count = sum(v.size for v in jax.tree.leaves(conversion.variables))
    print(f"wrote {args.arch} ({count:,} numbers, settings {conversion.settings}) to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
