"""The command line of `python -m vitlab.train`: the original train.py's flags, `--config`, `--set`, and `--help`
that shows each field's comment, default and valid values."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from vitlab import commands
from vitlab.configs import (
    AUGMENTATIONS,
    DATASET_NAMES,
    DECAY_TYPES,
    EXPERIMENTS,
    OPTIMIZERS,
    PRECISIONS,
    PRESETS,
    ConfigError,
    VITConfig,
    field_comments,
    get_experiment,
    load_config,
    scaled_warmup,
)
from vitlab.configs.checks import unknown_names
from vitlab.errors import BadValue

VIT_PYTORCH_FLAGS = {  # the flags of the original ViT-pytorch train.py -> VITConfig fields
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
            raise BadValue(f"--{field.name} expects JSON such as '{{\"num_layers\": 2}}', got {text!r}") from error
        if not isinstance(value, dict):
            raise BadValue(f"--{field.name} expects a JSON object, got {text!r}")
        return value
    if "None" in kind and text.lower() in ("", "none", "null"):
        return None
    if kind == "bool":
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise BadValue(f"--{field.name} expects true or false, got {text!r}")
        return text.lower() in ("1", "true", "yes")
    for name, convert, what in (("int", int, "an integer"), ("float", float, "a number")):
        if kind.startswith(name):
            try:
                return convert(text)
            except ValueError:
                raise BadValue(f"--{field.name} expects {what}, got {text!r}") from None
    return text


FLAG_CHOICES = {  # fields with a fixed set of values, shown in --help (VITConfig enforces them)
    "dataset": DATASET_NAMES,
    "optimizer": OPTIMIZERS,
    "decay_type": DECAY_TYPES,
    "precision": PRECISIONS,
    "augment": AUGMENTATIONS,
}


def flag_help(field: dataclasses.Field, comment: str) -> tuple[str, str]:
    """(help text, metavar) of the flag of VITConfig field `field`: its comment, valid values and default."""
    kind = str(field.type)
    notes = []
    if field.name in FLAG_CHOICES:
        notes.append("choices: " + ", ".join(FLAG_CHOICES[field.name]))
        metavar = "NAME"
    elif field.name == "model_type":
        notes.append("presets: " + ", ".join(PRESETS) + "; aliases: python -m vitlab.factory")
        metavar = "MODEL"
    elif kind == "bool":
        metavar = "true|false"
    elif "dict" in kind:
        metavar = "JSON"
    elif kind.startswith("int"):
        metavar = "N"
    elif kind.startswith("float"):
        metavar = "X"
    else:
        metavar = "PATH" if field.name.endswith("_dir") else "TEXT"
    if field.name == "name":  # the automatic name, shown rather than described in field names
        notes.append("default: e.g. scratch_ViT-CIFAR-3M_cifar10_20261121_080312")
    elif field.default is not dataclasses.MISSING:
        default = field.default
        notes.append(f"default: {str(default).lower() if isinstance(default, bool) or default is None else default}")
    elif field.name == "test_cycles":
        notes.append("default: the start time")
    elif field.default_factory is not dataclasses.MISSING:
        notes.append(f"default: {json.dumps(field.default_factory())}")
    text = comment + (f" [{'; '.join(notes)}]" if notes else "")
    return text.replace("%", "%%"), metavar  # argparse %-formats help strings


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help texts wrapped at spaces only, so that names such as R50-ViT-B_16 stay whole."""

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(text, width, break_on_hyphens=False)


def build_parser() -> argparse.ArgumentParser:
    """The flags of the original train.py, `--config`, `--set`, and one flag per other VITConfig field."""
    parser = commands.ArgumentParser(
        prog="python -m vitlab.train",
        usage="%(prog)s [--config NAME|FILE] [--FIELD VALUE ...] [--set FIELD=VALUE] [--resume [PATH]]",
        description="Train a Vision Transformer on CIFAR-10/100, image folders or synthetic data,\n"
        "fine-tuning or from scratch.\n"
        "Each --FIELD sets the VITConfig field of that name. The defaults shown are VITConfig's;\n"
        f"--config EXPERIMENT starts from an experiment's values instead ({', '.join(EXPERIMENTS)}).",
        epilog="examples:\n"
        "  python -m vitlab.train --config finetune\n"
        "  python -m vitlab.train --config scratch --dataset synthetic --num_steps 200 --warmup_steps 20\n"
        "  python -m vitlab.train --name my-run --resume",
        formatter_class=HelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags given on the command line override the config
        allow_abbrev=False,  # --num_step is an error, not --num_steps
    )
    run = parser.add_argument_group("the run")
    run.add_argument(
        "--config", metavar="NAME|FILE",
        help=f"an experiment ({', '.join(EXPERIMENTS)}) or a config file (.yaml, .yml, .json)",
    )  # fmt: skip
    run.add_argument(
        "--print_config",
        nargs="?",
        const="yaml",
        choices=("yaml", "json"),
        help="print the configuration the command line describes (YAML by default) and exit; "
        "redirect it to a file to edit and pass to --config",
    )
    run.add_argument("--resume", nargs="?", const="last", metavar="PATH",
                     help="continue from last.pt of --name, or from checkpoint PATH")  # fmt: skip
    run.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override any VITConfig field")
    fields = {f.name: f for f in dataclasses.fields(VITConfig)}
    comments = field_comments()
    seed = parser.add_argument_group("the flags of ViT-pytorch's train.py")
    for flag, field_name in VIT_PYTORCH_FLAGS.items():
        aliases = {"local_rank": ["--local-rank"], "output_dir": ["--save_dir"]}.get(flag, [])
        text, metavar = flag_help(fields[field_name], comments.get(field_name, f"VITConfig.{field_name}"))
        seed.add_argument(f"--{flag}", *aliases, dest=field_name, metavar=metavar, help=text)
    seed.add_argument("--fp16", action="store_true", help="mixed precision: the same as --precision fp16")
    seed.add_argument("--fp16_opt_level", metavar="LEVEL",
                      help="accepted for compatibility and ignored: native AMP replaces apex")  # fmt: skip
    more = parser.add_argument_group("the other VITConfig fields")
    for name, field in fields.items():
        if name not in VIT_PYTORCH_FLAGS.values() and name != "resume":
            text, metavar = flag_help(field, comments.get(name, f"VITConfig.{name}"))
            more.add_argument(f"--{name}", dest=name, metavar=metavar, help=text)
    return parser


def config_from_args(argv: list[str] | None = None) -> VITConfig:
    """The VITConfig that a command line describes: --config first, then the flags, then --set."""
    return parse_command_line(argv)[0]


def parse_command_line(argv: list[str] | None = None) -> tuple[VITConfig, str | None, list[str]]:
    """(the VITConfig of `config_from_args`, the format --print_config asks for or None, and notes on what
    it adjusted: a scaled warm-up). The config's `fields_set` are those --config, a flag or --set gave."""
    args = vars(build_parser().parse_args(argv))
    source = args.pop("config", None)
    print_format = args.pop("print_config", None)
    if source is None:
        cfg, recipe = VITConfig(), "VITConfig's"
    elif source in EXPERIMENTS:
        cfg, recipe = get_experiment(source), f"the {source} experiment's"
    elif Path(source).is_file():
        cfg, recipe = load_config(source), f"{source}'s"
    else:
        what = "a directory, not" if Path(source).is_dir() else "neither"
        raise ConfigError(f"--config {source!r} is {what} an experiment ({', '.join(EXPERIMENTS)}) nor a file")
    if args.pop("fp16", False):
        args["precision"] = "fp16"
    if args.pop("fp16_opt_level", None) is not None:
        print("note: --fp16_opt_level is ignored (apex levels); vitlab uses torch.autocast (see --precision)")
    for item in args.pop("set", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
        args[key.strip()] = value
    fields = {f.name: f for f in dataclasses.fields(VITConfig)}
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise ConfigError(unknown_names("VITConfig field", unknown, fields))
    overrides = {k: parse_value(fields[k], v) if isinstance(v, str) else v for k, v in args.items()}
    base, cfg, notes = cfg, cfg.replace(**overrides), []
    if "num_steps" in overrides and "warmup_steps" not in overrides and not cfg.resume:  # a resumed run keeps its own
        cfg, note = scale_warmup(base, cfg, recipe)
        if note:
            notes.append(note)
    return cfg, print_format, notes


def scale_warmup(base: VITConfig, cfg: VITConfig, recipe: str) -> tuple[VITConfig, str | None]:
    """`cfg` with the warm-up of `base` (the recipe) as the same fraction of `cfg.num_steps`, and a note saying so."""
    if cfg.num_steps == base.num_steps or cfg.warmup_steps != base.warmup_steps or base.warmup_steps == 0:
        return cfg, None
    warmup = scaled_warmup(base, cfg.num_steps)
    note = (
        f"warm-up of {warmup} step{'s' * (warmup != 1)}, {recipe} {base.warmup_steps:,} of {base.num_steps:,} "
        f"scaled to these {cfg.num_steps:,} steps (--warmup_steps sets it)"
    )
    return cfg.derive(warmup_steps=warmup), note
