"""Real images on a CPU: `vitlab.train --dataset folder` against a plain PyTorch loop, same model, budget, augmentation.

    python docs/real_data_cpu.py vitlab --data_dir ../shared/data/cifar10-train-subset
    python docs/real_data_cpu.py plain --data_dir ../shared/data/cifar10-train-subset

Both train the same small patch-4 ViT (vitlab's ViT-CIFAR-3M preset narrowed to width 128, depth 4)
from scratch on 80% of the images with random crop (4 px, reflected borders) + flip, AdamW with
warm-up and cosine decay, label smoothing 0.1, clipping at 1, and report top-1 on the same held-out
20%. The plain loop uses only torch and torchvision (ImageFolder, DataLoader, a LambdaLR schedule);
it borrows vitlab's model so that the comparison is of the training code alone. docs/real_data_cpu.md
records the figures.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

MODEL = dict(hidden_size=128, num_layers=4, num_heads=4, mlp_dim=256)
RECIPE = dict(
    model_type="ViT-CIFAR-3M", img_size=32, train_batch_size=64, learning_rate=1e-3, weight_decay=0.05,
    num_steps=300, warmup_steps=30, label_smoothing=0.1, max_grad_norm=1.0, val_split=0.2, seed=0,
)  # fmt: skip


def run_vitlab(data_dir: str, steps: int, seed: int) -> float:
    import vitlab

    cfg = vitlab.VITConfig(
        dataset="folder", data_dir=data_dir, optimizer="adamw", decay_type="cosine", augment="basic",
        precision="fp32", num_workers=0, eval_every=steps, eval_batch_size=256, TB_log=False, progress=False,
        model_overrides=MODEL, name=f"real_data_cpu_{int(time.time())}", save_dir="/tmp/vitlab-real-data",
        **{**RECIPE, "num_steps": steps, "seed": seed},
    )  # fmt: skip
    return vitlab.train.train(cfg)["best_val_accuracy"]


def run_plain(data_dir: str, steps: int, seed: int) -> float:
    from vitlab import create_model

    torch.manual_seed(seed)
    normalize = [transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)]
    augment = [transforms.RandomCrop(32, padding=4, padding_mode="reflect"), transforms.RandomHorizontalFlip()]
    train_images = datasets.ImageFolder(data_dir, transforms.Compose(augment + normalize))
    test_images = datasets.ImageFolder(data_dir, transforms.Compose(normalize))
    # The held-out 20%: the same seeded permutation as vitlab.data.split_indices.
    order = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed)).tolist()
    num_val = round(RECIPE["val_split"] * len(order))
    train_set = torch.utils.data.Subset(train_images, order[num_val:])
    val_set = torch.utils.data.Subset(test_images, order[:num_val])
    model = create_model("ViT-CIFAR-3M", num_classes=10, **MODEL)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n not in ("pos_embed", "cls_token")]
    rest = [p for p in model.parameters() if all(p is not q for q in decay)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": RECIPE["weight_decay"]}, {"params": rest, "weight_decay": 0.0}],
        lr=RECIPE["learning_rate"],
    )
    warmup = RECIPE["warmup_steps"]
    schedule = lambda s: s / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    loader = torch.utils.data.DataLoader(train_set, batch_size=RECIPE["train_batch_size"], shuffle=True)
    step = 0
    model.train()
    while step < steps:
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels, label_smoothing=RECIPE["label_smoothing"])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), RECIPE["max_grad_norm"])
            optimizer.step()
            scheduler.step()
            step += 1
            if step == steps:
                break
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in torch.utils.data.DataLoader(val_set, batch_size=256):
            correct += (model(images).argmax(1) == labels).sum().item()
    return correct / len(val_set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("vitlab", "plain"))
    parser.add_argument("--data_dir", default="../shared/data/cifar10-train-subset")
    parser.add_argument("--num_steps", type=int, default=RECIPE["num_steps"])
    parser.add_argument("--seed", type=int, default=RECIPE["seed"], help="also picks the held-out 20%")
    args = parser.parse_args()
    start = time.perf_counter()
    accuracy = (run_vitlab if args.which == "vitlab" else run_plain)(args.data_dir, args.num_steps, args.seed)
    minutes = (time.perf_counter() - start) / 60
    result = f"held-out top-1 {100 * accuracy:.2f}% after {args.num_steps} steps, {minutes:.1f} min"
    print(f"{args.which}, seed {args.seed}: {result}")


if __name__ == "__main__":
    main()
