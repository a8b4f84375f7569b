"""The command line of `python -m vitlab.train`: the original train.py's flags, `--config`, `--set`."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from vitlab.configs import EXPERIMENTS, VITConfig, get_experiment, load_config

SEED_FLAGS = {  # the flags of the original ViT-pytorch train.py -> VITConfig fields
    "name": "name",
    "dataset": "dataset",
    "model_type": "model_type",
    "pretrained_dir": "pretrained_dir",
    "output_dir": "save_dir",
    "img_size": "img_size",
    "train_batch_size": "train_batch_size",
    "eval_batch_size": "eval_batch_size",
    "eval_every": "eval_every",
    "learning_rate": "learning_rate",
    "weight_decay": "weight_decay",
    "num_steps": "num_steps",
    "decay_type": "decay_type",
    "warmup_steps": "warmup_steps",
    "max_grad_norm": "max_grad_norm",
    "local_rank": "local_rank",
    "seed": "seed",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
}


def parse_value(field: dataclasses.Field, text: str):
    """A command-line string as the type of VITConfig field `field`."""
    kind = str(field.type)
    if "dict" in kind:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--{field.name} expects JSON such as '{{\"num_layers\": 2}}', got {text!r}") from error
        if not isinstance(value, dict):
            raise ValueError(f"--{field.name} expects a JSON object, got {text!r}")
        return value
    if "None" in kind and text.lower() in ("", "none", "null"):
        return None
    if kind == "bool":
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"--{field.name} expects true or false, got {text!r}")
        return text.lower() in ("1", "true", "yes")
    for name, convert in (("int", int), ("float", float)):
        if kind.startswith(name):
            return convert(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    """The flags of the original train.py, `--config`, `--set`, and one flag per other VITConfig field."""
    parser = argparse.ArgumentParser(
        prog="python -m vitlab.train",
        description="Train a Vision Transformer on CIFAR-10/100 or image folders (fine-tuning or from scratch).",
        argument_default=argparse.SUPPRESS,  # only flags given on the command line override the config
    )
    parser.add_argument(
        "--config", help=f"an experiment ({', '.join(EXPERIMENTS)}) or a config file (.yaml, .yml, .json)"
    )
    parser.add_argument(
        "--print_config",
        nargs="?",
        const="yaml",
        choices=("yaml", "json"),
        help="print the configuration the command line describes (YAML by default) and exit; "
        "redirect it to a file to edit and pass to --config",
    )
    fields = {f.name: f for f in dataclasses.fields(VITConfig)}
    for flag, field_name in SEED_FLAGS.items():
        aliases = {"local_rank": ["--local-rank"], "output_dir": ["--save_dir"]}.get(flag, [])
        names = [f"--{flag}", *aliases]
        parser.add_argument(*names, dest=field_name, metavar=flag.upper(), help=f"VITConfig.{field_name}")
    for name, field in fields.items():
        if name not in SEED_FLAGS.values() and name != "resume":
            parser.add_argument(f"--{name}", dest=name, metavar="VALUE", help=f"VITConfig.{name} ({field.type})")
    parser.add_argument("--resume", nargs="?", const="last", help="continue from last.pt of --name, or from PATH")
    parser.add_argument("--fp16", action="store_true", help="mixed precision: same as --precision fp16")
    parser.add_argument("--fp16_opt_level", help="accepted for compatibility and ignored: native AMP replaces apex")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override any VITConfig field")
    return parser


def config_from_args(argv: list[str] | None = None) -> VITConfig:
    """The VITConfig that a command line describes: --config first, then the flags, then --set."""
    return parse_command_line(argv)[0]


def parse_command_line(argv: list[str] | None = None) -> tuple[VITConfig, str | None]:
    """(the VITConfig of `config_from_args`, the format --print_config asks for, or None)."""
    args = vars(build_parser().parse_args(argv))
    source = args.pop("config", None)
    print_format = args.pop("print_config", None)
    if source is None:
        cfg = VITConfig()
    elif source in EXPERIMENTS:
        cfg = get_experiment(source)
    elif Path(source).is_file():
        cfg = load_config(source)
    else:
        raise SystemExit(f"--config {source!r} is neither an experiment ({', '.join(EXPERIMENTS)}) nor a file")
    if args.pop("fp16", False):
        args["precision"] = "fp16"
    if args.pop("fp16_opt_level", None) is not None:
        print("note: --fp16_opt_level is ignored (apex levels); vitlab uses torch.autocast (see --precision)")
    for item in args.pop("set", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects FIELD=VALUE, got {item!r}")
        args[key.strip()] = value
    fields = {f.name: f for f in dataclasses.fields(VITConfig)}
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise SystemExit(f"unknown VITConfig field(s) {unknown}; valid fields: {', '.join(sorted(fields))}")
    try:
        overrides = {k: parse_value(fields[k], v) if isinstance(v, str) else v for k, v in args.items()}
    except ValueError as error:
        raise SystemExit(str(error)) from error
    return cfg.replace(**overrides), print_format
