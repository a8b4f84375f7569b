"""Accuracy against the size of the labelled set: each approach trained on shares of the same photos.

    python -m vitlab.sweep --data_dir PHOTOS --pretrained_dir Pretrained/dinov2-small-hf.safetensors

runs every approach (`APPROACHES`: the linear probe, fine-tuning, the small ViT from scratch, the CNN from
scratch) at every `--fractions` share of the training part, one `vitlab.train` run each, and scores all of
them on the same held-out photos (`--val_split 0.1 --seed 42` of the folder, whatever the fraction). Each run
keeps its recipe's number of steps at every fraction, so a smaller share is seen more often, not trained for
less. One line per run; every finished run is added to `results.json` at once, so a stopped sweep started
again skips what is done and continues the run it was stopped in from that run's last.pt. `results.csv` and
`accuracy_vs_photos.png` (log x, one line per approach, error bars of one standard error) are rewritten from
it after each run.

The controls of the comparison run through the same command at the full share: `--approaches
finetune_random vits14_scratch --fractions 1` (the fine-tuning recipe on random weights, and the same
ViT-S/14 from random weights with a from-scratch recipe).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from pathlib import Path

from vitlab import commands
from vitlab.configs import PRECISIONS, VITConfig, get_experiment
from vitlab.errors import BadValue, MissingFile
from vitlab.files import atomic_write

# The small ViT of docs/results.md: patch 4, width 128, depth 4, 4 heads (0.55 M parameters) at 32 px.
SMALL_VIT = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 256}

# approach: (what the figure calls it, the experiment, its changes). Every one holds out the same photos.
APPROACHES: dict[str, tuple[str, str, dict]] = {
    "probe": ("DINOv2 ViT-S/14, linear probe", "probe", {}),
    "finetune": ("DINOv2 ViT-S/14, fine-tuned", "transfer", {}),
    "scratch": ("small ViT (0.55 M) from scratch, 32 px", "scratch", dict(
        dataset="folder", val_split=0.1, model_overrides=SMALL_VIT, img_size=32, augment="basic",
        train_batch_size=64, num_steps=1500, warmup_steps=100, eval_every=250,
    )),
    "cnn": ("ResNet-20 (0.27 M) from scratch, 32 px", "cnn", {}),
    # The controls: the fine-tuning recipe exactly, from random weights; and ViT-S/14 from random weights with a
    # from-scratch recipe (AdamW 1e-3 for every layer, a longer warm-up, twice the steps: 20 minutes on 2 cores).
    "finetune_random": ("ViT-S/14 from random weights, fine-tuning recipe", "transfer", dict(init="random")),
    "vits14_scratch": ("ViT-S/14 from random weights, from-scratch recipe", "transfer", dict(
        init="random", learning_rate=1e-3, head_learning_rate=None, num_steps=300, warmup_steps=30, eval_every=100,
    )),
}  # fmt: skip
MAIN_APPROACHES = ("probe", "finetune", "scratch", "cnn")
FRACTIONS = (1.0, 0.5, 0.25, 0.1)
PRETRAINED = ("probe", "finetune")  # the approaches that read the pre-trained weights


def run_config(approach: str, fraction: float, args) -> VITConfig:
    """The `vitlab.train` config of one run of the sweep."""
    label, experiment, changes = APPROACHES[approach]
    changes = {
        **changes,
        "data_dir": str(args.data_dir),
        "train_fraction": fraction,
        "name": run_name(approach, fraction, args.prefix),
    }
    changes.update(save_dir=str(args.save_dir), log_dir=str(args.log_dir), progress=False, seed=args.seed)
    changes["precision"] = getattr(args, "precision", "auto")
    if approach in PRETRAINED or "init" in changes:
        changes["pretrained_dir"] = str(args.pretrained_dir)
    if (Path(args.save_dir) / changes["name"] / "last.pt").is_file():
        changes["resume"] = "last"  # a run the sweep was stopped in: it continues where its last.pt is
    return get_experiment(experiment, **changes)


def run_name(approach: str, fraction: float, prefix: str = "sweep") -> str:
    return f"{prefix}_{approach}_f{fraction:g}"


def standard_error(accuracy: float, count: int) -> float:
    """One standard error of an accuracy measured on `count` images (binomial): sqrt(p (1 - p) / n)."""
    return math.sqrt(accuracy * (1 - accuracy) / count) if count else float("nan")


def one_run(approach: str, fraction: float, args) -> dict:
    """Train one run of the sweep and return its row of the results."""
    from vitlab.measure import forward_flops  # imported here: the run's first lines come before torch's import time
    from vitlab.train import train

    cfg = run_config(approach, fraction, args)
    start = time.perf_counter()
    result = train(cfg)
    model = result["model"]
    accuracy, held_out = result["best_val_accuracy"], result["val_images"]  # a fraction of the held-out photos
    return {
        "approach": approach, "label": APPROACHES[approach][0], "fraction": fraction,
        "train_images": result["train_images"], "val_images": held_out, "accuracy": accuracy,
        "standard_error": standard_error(accuracy, held_out), "best_step": result["best_step"],
        "steps": result["steps"], "parameters": sum(p.numel() for p in model.parameters()),
        "flops_per_image": forward_flops(model, cfg.img_size), "img_size": cfg.img_size,
        "wall_time_s": round(time.perf_counter() - start, 1), "run": cfg.run_name,
        "command": command_line(approach, fraction, args),
    }  # fmt: skip


def command_line(approach: str, fraction: float, args) -> str:
    """The `python -m vitlab.train` line that repeats one run of the sweep."""
    _, experiment, changes = APPROACHES[approach]
    flags = [f"--config {experiment}", f"--data_dir {args.data_dir}", f"--train_fraction {fraction:g}"]
    if approach in PRETRAINED or "init" in changes:
        flags.append(f"--pretrained_dir {args.pretrained_dir}")
    for key, value in changes.items():
        text = f"'{json.dumps(value)}'" if isinstance(value, dict) else ("''" if value is None else value)
        flags.append(f"--{key} {text}")
    if getattr(args, "precision", "auto") != "auto":
        flags.append(f"--precision {args.precision}")
    return " ".join(
        ["python -m vitlab.train", *flags, f"--name {run_name(approach, fraction, args.prefix)} --progress false"]
    )


def read_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BadValue(f"{path} is not a sweep's results file ({error}): move it away to start afresh") from None
    if not isinstance(rows, list):
        raise BadValue(f"{path} is not a sweep's results file (a list of runs): move it away to start afresh")
    return rows


def write_results(out: Path, rows: list[dict]) -> None:
    """results.json (what a re-run reads), results.csv and the figure, each written whole."""
    with atomic_write(out / "results.json", "w") as f:
        f.write(json.dumps(rows, indent=2) + "\n")
    columns = [k for k in rows[0] if k != "command"] + ["command"] if rows else []
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(out / "results.csv", "w") as f:
        f.write(text.getvalue())
    plot_results(rows, out / "accuracy_vs_photos.png")


def plot_results(rows: list[dict], path: Path | None = None):
    """Held-out accuracy against the number of training photos (log x), one line per approach, +- 1 SE."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for approach in dict.fromkeys(row["approach"] for row in rows):
        points = sorted((r for r in rows if r["approach"] == approach), key=lambda r: r["train_images"])
        if len(points) < 2:
            continue  # a control at one share is a point of the table, not a line
        ax.errorbar([r["train_images"] for r in points], [100 * r["accuracy"] for r in points],
                    yerr=[100 * r["standard_error"] for r in points], marker="o", capsize=3,
                    label=points[0]["label"])  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("labelled training photos (log scale)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.axhline(10, color="grey", linestyle=":", linewidth=1, label="chance (10 classes)")
    held = {r["val_images"] for r in rows}
    ax.set_title(f"Accuracy on the same {', '.join(map(str, sorted(held)))} held-out photos; bars: one standard error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=120)
        plt.close(fig)
    return fig


def sweep(args) -> list[dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_results(out / "results.json")
    todo = [(approach, fraction) for fraction in args.fractions for approach in args.approaches]
    for number, (approach, fraction) in enumerate(todo, start=1):
        head = f"[{number}/{len(todo)}] {approach} at {fraction:g} of the training photos"
        done = next((r for r in rows if r["approach"] == approach and r["fraction"] == fraction), None)
        if done is not None:
            print(f"{head}: done before ({100 * done['accuracy']:.2f}%), skipped", flush=True)
            continue
        print(f"{head}: training ({run_name(approach, fraction, args.prefix)})", flush=True)
        row = one_run(approach, fraction, args)
        rows.append(row)
        write_results(out, rows)
        accuracy, error = 100 * row["accuracy"], 100 * row["standard_error"]
        print(
            f"{head}: {accuracy:.2f}% +- {error:.2f} on {row['val_images']} held-out photos, trained on "
            f"{row['train_images']:,}, {row['wall_time_s'] / 60:.1f} min",
            flush=True,
        )
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = commands.ArgumentParser(
        prog="python -m vitlab.sweep",
        description=__doc__.split("\n\n")[0],
        epilog="one standard error is the binomial sqrt(p (1 - p) / n) of the n held-out photos",
        allow_abbrev=False,
    )
    parser.add_argument("--data_dir", required=True, type=Path, help="a folder of class folders (the photos)")
    parser.add_argument("--pretrained_dir", type=Path, default=Path("Pretrained/dinov2-small-hf.safetensors"),
                        help="the DINOv2 ViT-S/14 weights of the probe and the fine-tuning")  # fmt: skip
    parser.add_argument("--approaches", nargs="+", choices=list(APPROACHES), default=list(MAIN_APPROACHES))
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS), metavar="F",
                        help="shares of the training part, each in (0, 1]")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("docs/data_size"), help="results.json, .csv and the figure")
    parser.add_argument("--save_dir", type=Path, default=Path("Model"))
    parser.add_argument("--log_dir", type=Path, default=Path("TB_log"))
    parser.add_argument("--prefix", default="sweep", help="the runs' names: PREFIX_<approach>_f<fraction>")
    parser.add_argument("--seed", type=int, default=42, help="the held-out split, the subsets and the runs")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="every run's --precision (docs/data_size was measured with fp32)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bad = [f for f in args.fractions if not 0 < f <= 1]
    if bad:
        raise BadValue(f"--fractions must each be in (0, 1], got {bad[0]:g}: e.g. --fractions 1 0.5 0.25 0.1")
    if not args.data_dir.is_dir():
        raise MissingFile(f"--data_dir {args.data_dir} is not a folder of class folders")
    if set(args.approaches) & set(PRETRAINED) and not args.pretrained_dir.is_file():
        raise MissingFile(
            f"--pretrained_dir {args.pretrained_dir} does not exist: the probe and the fine-tuning need the DINOv2 "
            "ViT-S/14 weights (Pretrained/README.md says how to get them), or leave them out with --approaches"
        )
    start = time.perf_counter()
    rows = sweep(args)
    print(
        f"{len(rows)} runs in {args.out / 'results.json'}; this sweep took {(time.perf_counter() - start) / 60:.1f} min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(commands.run(main))
