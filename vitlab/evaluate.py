"""Evaluate a model on a dataset: top-1, top-5 and cross-entropy loss. Also `python -m vitlab.evaluate`.

python -m vitlab.evaluate --checkpoint Model/<run>/best.pt --dataset cifar10 --data_dir ./data
python -m vitlab.evaluate --checkpoint Model/<run>/best.pt --dataset folder --data_dir photos/
python -m vitlab.evaluate --checkpoint Pretrained/vit_b_32-d86f8d99.pth --model_type vit_b_32 --data_dir imagenet/
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from vitlab import commands
from vitlab.configs import DATASET_NAMES, PRECISIONS, VITConfig
from vitlab.errors import BadValue
from vitlab.precision import autocast_context, model_width, resolve_precision


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    precision: str = "auto",
    num_workers: int = 0,
) -> dict:
    """Top-1 and top-5 accuracy (fractions) and mean cross-entropy of `model` over `dataset`.

    `precision` "auto" computes under bfloat16 autocast where the device has native bfloat16 (as training does),
    "fp32" in float32 throughout.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    precision, _ = resolve_precision(precision, device, model_width(model))
    was_training = model.training
    model.eval().to(device)
    # Its own generator: creating the loader must not draw from the global RNG that dropout uses.
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, generator=torch.Generator().manual_seed(0)
    )
    correct1 = torch.zeros((), device=device, dtype=torch.long)
    correct5 = torch.zeros((), device=device, dtype=torch.long)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    seen = 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = torch.as_tensor(labels)
        with autocast_context(device, precision):
            logits = model(images)
        logits = logits.float()  # (B, num_classes)
        check_batch_labels(
            labels, logits.shape[1], seen
        )  # before .to(device): a loader's CPU labels, no wait for the device
        seen += len(labels)
        labels = labels.to(device, non_blocking=True)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, k)
        hits = top == labels[:, None]  # (B, k)
        correct1 += hits[:, 0].sum()
        correct5 += hits.any(dim=1).sum()
    model.train(was_training)
    num = len(dataset)
    if num == 0:
        raise BadValue("cannot evaluate on an empty dataset")
    return {
        "top1": correct1.item() / num,
        "top5": correct5.item() / num,
        "loss": loss_sum.item() / num,
        "num_samples": num,
    }


def check_batch_labels(labels: torch.Tensor, num_classes: int, first: int) -> None:
    """A batch's labels (samples first, first + 1, ...) are class indices of a model with `num_classes` outputs."""
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.ndim != 1:
        raise BadValue(
            f"the labels of samples {first}-{first + len(labels) - 1} are {labels.dtype} of shape "
            f"{tuple(labels.shape)}: evaluate needs one class index (an int) per sample"
        )
    bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
    if len(bad):
        index = int(bad[0])
        raise BadValue(
            f"sample {first + index} of the dataset has label {int(labels[index])}, but the model has {num_classes} "
            f"classes (labels 0 to {num_classes - 1}): the dataset's labels must be the model's class indices"
        )


def main(argv: list[str] | None = None) -> dict:
    """Command line: evaluate a run checkpoint or published weights on a dataset's test split or an image folder."""
    parser = commands.ArgumentParser(
        prog="python -m vitlab.evaluate",
        description=__doc__.splitlines()[0],
        epilog="Image folders: DIR/test, else DIR/val, else DIR itself, one folder per class, matched to the "
        "model's class names by name (ImageNet's WordNet-id folders by their sorted order). The folder a run "
        "trained on gives that run's held-out validation images, not the ones it trained on.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="best.pt or last.pt of python -m vitlab.train, or published weights (.npz, .pth, .bin, .safetensors)",
    )
    parser.add_argument("--model_type", help="published weights: the architecture (e.g. vit_b_32); a run's "
                        "checkpoint records its own")  # fmt: skip
    parser.add_argument(
        "--dataset", choices=DATASET_NAMES, help="default: the run's dataset; 'folder' for published weights"
    )
    parser.add_argument("--data_dir", help="CIFAR's folder or the image folder (default: the run's)")
    parser.add_argument(
        "--img_size",
        type=commands.at_least(1),
        help="default: the model's img_size; another size resizes the position embeddings",
    )
    parser.add_argument(
        "--crop_pct", type=float, help="image folders: centre crop of the resized image (default: the run's; 0.875)"
    )
    parser.add_argument("--labels", help="text file of the model's class names, one per line")
    parser.add_argument(
        "--batch_size", type=commands.at_least(1), default=256,
        help="images per forward pass; lower it when memory runs out (the result is the same) [default: 256]",
    )  # fmt: skip
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu",
        help="where to compute: cpu, cuda or cuda:N [default: cuda when a GPU is visible, else cpu]",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="auto: bfloat16 autocast where the device has it natively, as training does [default: auto]",
    )  # fmt: skip
    args = parser.parse_args(argv)
    device = commands.check_device(args.device)

    model, class_names, cfg, step, held_out = _load(args)
    if cfg.img_size != model.cfg.img_size and hasattr(model, "resize_pos_embed_"):  # a CNN takes any size as it is
        model.cfg.replace(img_size=cfg.img_size)  # an --img_size the patches do not divide: refused in one line
        model.resize_pos_embed_(cfg.img_size)  # evaluate at another resolution, as when fine-tuning at 384
    warning = None
    if cfg.dataset == "folder":
        test_set, where, warning = folder_test_set(cfg, model, class_names, held_out)
    else:
        from vitlab.data import build_test_set

        test_set, _ = build_test_set(cfg)
        where = f"{cfg.dataset} test split, {len(test_set)} images"
    metrics = evaluate(model, test_set, batch_size=args.batch_size, device=device, precision=args.precision)
    print(f"checkpoint {args.checkpoint}" + (f" (step {step})" if step is not None else "") + f" on {where}")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    seen = "  (images the model trained on)" if warning else ""
    print(f"top-1 {100 * metrics['top1']:.2f}%  top-5 {100 * metrics['top5']:.2f}%  loss {metrics['loss']:.4f}{seen}")
    return metrics


def folder_test_set(cfg: VITConfig, model, class_names, held_out: dict | None) -> tuple[Dataset, str, str | None]:
    """(the images to score in cfg.data_dir, what they are, a warning when the model trained on them).

    DIR/test, else DIR/val, else DIR itself. When that is the folder a run trained on (`held_out`, its
    checkpoint's record), the run's held-out validation split is rebuilt from its seed and scored instead;
    a folder that changed since, or a run that held nothing out, scores training images, and says so.
    """
    from pathlib import Path

    from vitlab import data

    mean, std = model.cfg.image_mean, model.cfg.image_std  # the inputs these weights expect
    splits = data.folder_splits(cfg.data_dir)
    trained_here = (
        held_out is not None
        and not {"val", "test"} & set(splits)
        and str(Path(splits.get("train", cfg.data_dir)).resolve()) == held_out["folder"]
    )
    if not trained_here:
        test_set = data.build_folder_eval_set(cfg.data_dir, cfg.img_size, cfg.crop_pct, mean, std, class_names)
        return test_set, f"{data.folder_eval_split(cfg.data_dir)}, {len(test_set)} images", None
    folder = Path(held_out["folder"])
    every = data.build_folder_eval_set(folder, cfg.img_size, cfg.crop_pct, mean, std, class_names)
    where, other = f"{folder}, all {len(every):,} images", "Evaluate on a folder of other images"
    unchecked = held_out["files"] is None  # an older checkpoint: the folder is assumed unchanged
    if not unchecked and data.folder_fingerprint(every.base) != held_out["files"]:
        then = f"{held_out['images']:,} images then, {len(every):,} now"
        return every, where, (
            f"{folder} has changed since the run trained on it ({then}), so its held-out split cannot be rebuilt: "
            f"most of these images are ones the model trained on, not unseen ones. {other}"
        )  # fmt: skip
    _, val_indices = data.split_indices(len(every), cfg.val_split, cfg.seed)
    if not val_indices:
        return every, where, (
            f"the run trained on every image in {folder} (val_split {cfg.val_split:g}): this accuracy is on images "
            f"the model trained on, not on unseen ones. {other}"
        )  # fmt: skip
    held = data.TransformedSubset(every.base, val_indices, every.transform)
    held.classes = every.classes
    share = f"{100 * cfg.val_split:g}%"
    where = f"{folder}: the run's held-out {share}, {len(held):,} of {len(every):,} images (not trained on)"
    if unchecked:
        where += "; the checkpoint does not record the folder's files, so this assumes the folder is unchanged"
    return held, where, None


def _load(args) -> tuple[torch.nn.Module, list[str] | None, VITConfig, int | None, dict | None]:
    """(model, its class names, the config to evaluate with, the run's step, the run's held-out record)."""
    from pathlib import Path

    from vitlab.predict import WEIGHT_SUFFIXES, default_class_names, model_from_weights, read_labels

    overrides = {k: getattr(args, k) for k in ("dataset", "data_dir", "img_size", "crop_pct")}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if Path(args.checkpoint).suffix.lower() in WEIGHT_SUFFIXES:
        if args.model_type is None:
            raise BadValue(f"{args.checkpoint} holds weights only: name the architecture with --model_type")
        if args.data_dir is None:
            raise BadValue("published weights carry no dataset: give --data_dir (an image folder, e.g. ImageNet's)")
        from vitlab.training.inputs import missing_checkpoint, missing_data, report_missing
        from vitlab.weights.fetch import known_checkpoint

        # Both missing (offline): one message. A file of a known name is fetched when the network allows.
        weights = missing_checkpoint(args.checkpoint) if known_checkpoint(Path(args.checkpoint).name) else None
        report_missing([weights, missing_data(VITConfig(dataset="folder", data_dir=args.data_dir))])
        model = model_from_weights(args.model_type, args.checkpoint)
        class_names = read_labels(args.labels) if args.labels else default_class_names(model)
        # torchvision's and timm's ImageNet evaluation: resize to 256, centre crop 224.
        base = dict(dataset="folder", model_type=args.model_type, img_size=model.cfg.img_size, crop_pct=0.875)
        return model, class_names, VITConfig(**{**base, **overrides}), None, None
    from vitlab.weights.checkpoint import check_model_type, load_checkpoint, model_from_state

    state = load_checkpoint(args.checkpoint)  # read once: a ViT-B last.pt with its optimiser is about 1 GB
    check_model_type(state, args.checkpoint, args.model_type)
    cfg = VITConfig.from_dict(state.get("config", {})).replace(**overrides)
    model, class_names = model_from_state(state, args.checkpoint), state.get("class_names")
    if args.labels:
        class_names = read_labels(args.labels)
    held_out = state.get("held_out")
    run = state.get("config") or {}
    if held_out is None and run.get("dataset") == "folder" and run.get("data_dir"):
        # A checkpoint older than the record: its folder, without the files' fingerprint to check it against.
        held_out = {"folder": str(Path(run["data_dir"]).resolve()), "images": None, "files": None}
    return model, class_names, cfg, state.get("step"), held_out


commands.callable_module(__name__, "evaluate")  # vitlab.evaluate(...) calls evaluate(...)

if __name__ == "__main__":
    sys.exit(commands.run(main))
