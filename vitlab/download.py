"""Fetch pre-trained ViT checkpoints (Google's, MAE's, Meta's DINOv2) into `Pretrained/`.

    python -m vitlab.download ViT-B_16                      # -> Pretrained/imagenet21k_ViT-B_16.npz
    python -m vitlab.download ViT-B_16 --variant imagenet21k+imagenet2012
    python -m vitlab.download R50+ViT-B_16                  # the hybrid (ResNet-50 stem + ViT-B/16)
    python -m vitlab.download mae_finetuned_vit_base        # MAE's ViT-B/16 (PyTorch, for vit_base_p16)
    python -m vitlab.download dinov2_vits14                 # -> Pretrained/dinov2_vits14_pretrain.pth (Meta's)
    python -m vitlab.download --list

The command line of `vitlab.weights.fetch`, where the list of checkpoints and `download` live.
"""

from __future__ import annotations

import sys

from vitlab import commands
from vitlab.weights.fetch import CHECKPOINTS, VARIANTS, download, list_checkpoints


def main(argv: list[str] | None = None) -> int:
    """Command line: download one checkpoint or list them; returns the exit status (1: it failed)."""
    return commands.run(_main, argv)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        import argparse

        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _main(argv: list[str] | None) -> int:
    parser = commands.ArgumentParser(prog="python -m vitlab.download", description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="checkpoint name, e.g. ViT-B_16 (see --list)")
    parser.add_argument("--variant", choices=VARIANTS, help="which pre-training (default: the first that has name)")
    parser.add_argument("--dest", default="Pretrained", help="folder to download into")
    parser.add_argument("--timeout", type=_positive, default=10.0, help="seconds to wait for the server")
    parser.add_argument("--list", action="store_true", help="print every known checkpoint and exit")
    args = parser.parse_args(argv)
    if args.list:
        print(list_checkpoints())
        return 0
    if args.name is None:
        parser.error("give a checkpoint name (e.g. ViT-B_16) or --list")
    variant = args.variant or next((v for v, names in CHECKPOINTS.items() if args.name in names), "imagenet21k")
    path = download(args.name, variant, args.dest, timeout=args.timeout)
    print(path)
    return 0


commands.callable_module(__name__, "download")  # vitlab.download(...) calls download(...)

if __name__ == "__main__":
    sys.exit(main())
