"""Evaluate a model on a dataset: top-1, top-5 and cross-entropy loss. Also `python -m vitlab.evaluate`.

python -m vitlab.evaluate --checkpoint Model/<run>/best.pt --dataset cifar10 --data_dir ./data
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from vitlab.configs import DATASET_NAMES, VITConfig


def autocast_context(device: torch.device, precision: str):
    """`torch.autocast` for bf16 / fp16, a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    num_workers: int = 0,
) -> dict:
    """Top-1 and top-5 accuracy (fractions) and mean cross-entropy of `model` over `dataset`."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval().to(device)
    # Its own generator: creating the loader must not draw from the global RNG that dropout uses.
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, generator=torch.Generator().manual_seed(0)
    )
    correct1 = torch.zeros((), device=device, dtype=torch.long)
    correct5 = torch.zeros((), device=device, dtype=torch.long)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = torch.as_tensor(labels).to(device, non_blocking=True)
        with autocast_context(device, precision):
            logits = model(images)
        logits = logits.float()  # (B, num_classes)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, k)
        hits = top == labels[:, None]  # (B, k)
        correct1 += hits[:, 0].sum()
        correct5 += hits.any(dim=1).sum()
    model.train(was_training)
    num = len(dataset)
    if num == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    return {
        "top1": correct1.item() / num,
        "top5": correct5.item() / num,
        "loss": loss_sum.item() / num,
        "num_samples": num,
    }


def main(argv: list[str] | None = None) -> dict:
    """Command line: evaluate a trainer checkpoint on the test split of a dataset."""
    from vitlab.data import build_test_set
    from vitlab.weights.checkpoint import load_checkpoint, model_from_checkpoint

    parser = argparse.ArgumentParser(prog="python -m vitlab.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="best.pt or last.pt written by python -m vitlab.train")
    parser.add_argument("--dataset", choices=DATASET_NAMES, help="default: the dataset the run was trained on")
    parser.add_argument("--data_dir", help="where CIFAR is found or downloaded to (default: the run's)")
    parser.add_argument(
        "--img_size", type=int, help="default: the run's img_size; another size resizes the position embeddings"
    )
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    state = load_checkpoint(args.checkpoint)
    cfg = VITConfig.from_dict(state.get("config", {}))
    overrides = {k: getattr(args, k) for k in ("dataset", "data_dir", "img_size") if getattr(args, k) is not None}
    cfg = cfg.replace(**overrides)
    model, _ = model_from_checkpoint(args.checkpoint)
    if cfg.img_size != model.cfg.img_size:
        model.resize_pos_embed_(cfg.img_size)  # evaluate at another resolution, as when fine-tuning at 384
    test_set, _ = build_test_set(cfg)
    metrics = evaluate(model, test_set, batch_size=args.batch_size, device=args.device)
    where = f"{cfg.dataset} test split, {metrics['num_samples']} images"
    print(f"checkpoint {args.checkpoint} (step {state.get('step')}) on {where}")
    print(f"top-1 {100 * metrics['top1']:.2f}%  top-5 {100 * metrics['top5']:.2f}%  loss {metrics['loss']:.4f}")
    return metrics


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)  # bad input: the message says what is wrong and what to do
        sys.exit(1)
