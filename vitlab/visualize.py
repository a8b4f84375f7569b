"""Pictures of a ViT: patches, position embeddings, attention, embedding filters and training runs.

Every analysis function returns plain arrays or tensors, and every `plot_*` / `show_*` function
returns its matplotlib Figure, so notebooks can show them and tests can check the numbers.
The three analyses of the paper's Figure 7 are here: the principal components of the patch
embedding filters (left), the cosine similarity of position embeddings (centre) and the mean
attention distance per head and layer (right); plus attention rollout (Abnar & Zuidema, 2020).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from matplotlib.ticker import MaxNLocator

__all__ = [
    "attention_rollout",
    "confusion_matrix",
    "embedding_filters_pca",
    "mean_attention_distance",
    "plot_attention_distance",
    "plot_confusion_matrix",
    "plot_embedding_filters",
    "plot_position_embedding_similarity",
    "plot_rollout",
    "plot_runs",
    "position_embedding_similarity",
    "read_scalars",
    "rollout_to_grid",
    "show_misclassified",
    "show_patches",
    "to_display",
    "uniform_attention_distance",
]

HEAD_FUSIONS = ("mean", "max", "min")
# Figures are sized in inches for about 100 dpi (the notebooks' `figure.dpi`): 6-9 inches is 600-900 pixels,
# readable on a laptop screen and on GitHub without zooming.
FIGURE_WIDTH = 8.0


# --- images ---------------------------------------------------------------------------------------
def to_display(image, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Any image (tensor or array, CHW or HWC) as HWC floats in [0, 1] for `imshow`.

    `value_range` is the range of the input, e.g. (-1, 1) for vitlab's data; None guesses it from the
    values: [0, 1], then [-1, 1], then [0, 255], else the image's own min and max.
    """
    array = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    array = array.astype(np.float32)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"expected one image with 2 or 3 dimensions, got shape {array.shape}")
    if array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    low, high = float(array.min()), float(array.max())
    if value_range is not None:
        array = np.clip((array - value_range[0]) / (value_range[1] - value_range[0]), 0.0, 1.0)
    elif low >= 0.0 and high <= 1.0:
        pass
    elif low >= -1.0 and high <= 1.0:
        array = (array + 1.0) / 2.0  # the paper's inputs are scaled to [-1, 1]
    elif low >= 0.0 and high <= 255.0 and high > 1.0:
        array = array / 255.0
    else:
        array = (array - low) / max(high - low, 1e-12)  # e.g. mean/std-normalised inputs
    return array[..., 0] if array.shape[-1] == 1 else array


def show_patches(
    image, patch_size: int, gap: float = 0.04, value_range: tuple[float, float] | None = None
) -> plt.Figure:
    """The image cut into a grid of `patch_size` x `patch_size` patches, drawn slightly apart (paper Fig. 1)."""
    array = to_display(image, value_range)
    height, width = array.shape[:2]
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image of {height} x {width} pixels does not split into {patch_size} x {patch_size} patches: "
            f"resize or crop it to a multiple of {patch_size}"
        )
    rows, cols = height // patch_size, width // patch_size
    cell = 6.5 / max(rows, cols)  # inches per patch: the grid is 6.5 inches on its longer side
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * cell), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            patch = array[r * patch_size : (r + 1) * patch_size, c * patch_size : (c + 1) * patch_size]
            axes[r, c].imshow(patch, cmap="gray" if patch.ndim == 2 else None, vmin=0, vmax=1)
            axes[r, c].axis("off")
    fig.subplots_adjust(wspace=gap, hspace=gap, left=0, right=1, top=1, bottom=0)
    return fig


def vit_only(model, what: str, instead: str) -> None:
    """A TypeError for a model without `what` (the CNN of the comparison), saying what it has instead."""
    if getattr(getattr(model, "cfg", None), "architecture", "vit") == "resnet" or not hasattr(model, "patch_embed"):
        raise TypeError(f"a CNN has no {what}: {instead}; this figure is for the ViT models")


# --- position embeddings (Figure 7, centre) -------------------------------------------------------
@torch.no_grad()
def position_embedding_similarity(model) -> np.ndarray:
    """Cosine similarity of each patch's position embedding with every other: (g, g, g, g).

    `sim[i, j]` is the (g, g) map of similarities between the patch at row i, column j and all
    patches; the CLS token's embedding is left out.
    """
    vit_only(model, "position embeddings", "a convolution knows where it is only through its neighbours")
    grid = model.patch_embed.grid_size
    pos = model.pos_embed[0, model.num_prefix_tokens :].float().cpu()  # (N, D)
    if pos.shape[0] != grid * grid:
        raise ValueError(f"position embedding has {pos.shape[0]} patch positions, expected {grid}x{grid}")
    pos = F.normalize(pos, dim=-1)
    sim = pos @ pos.T  # (N, N)
    return sim.reshape(grid, grid, grid, grid).numpy()


def plot_position_embedding_similarity(
    similarity: np.ndarray, title: str | None = None, vmin: float | None = -1.0, every: int = 1
) -> plt.Figure:
    """The (g, g, g, g) similarity as one g x g mosaic of g x g tiles, as in the paper's Figure 7.

    The colour scale runs from `vmin` (the paper's -1; None: the smallest value) to 1; keep the default
    -1 to compare several plots by their colours. `every` > 1 draws the tiles of every so many rows and
    columns of patches only (each tile still the full g x g map), so that a large grid such as DINOv2's
    37 x 37 stays legible.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    grid = similarity.shape[0]
    shown_patches = list(range(0, grid, every))  # the patch rows (and columns) that get a tile
    tiles, pad = len(shown_patches), 1
    mosaic = np.full((tiles * (grid + pad), tiles * (grid + pad)), np.nan)  # NaN gaps show as white
    for i, r in enumerate(shown_patches):
        for j, c in enumerate(shown_patches):
            top, left = i * (grid + pad), j * (grid + pad)
            mosaic[top : top + grid, left : left + grid] = similarity[r, c]
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, FIGURE_WIDTH * 0.85))
    low = np.nanmin(mosaic) if vmin is None else vmin
    shown = ax.imshow(mosaic, cmap="viridis", vmin=low, vmax=1, interpolation="nearest")  # one square per position
    centres = [i * (grid + pad) + (grid - 1) / 2 for i in range(tiles)]
    labels = [r + 1 for r in shown_patches]
    ax.set_xticks(centres, labels, fontsize=8)
    ax.set_yticks(centres, labels, fontsize=8)
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    fig.colorbar(shown, ax=ax, label="cosine similarity", fraction=0.046, pad=0.03)
    ax.set_title(title or "Position embedding similarity")
    return fig


# --- attention rollout ----------------------------------------------------------------------------
def _fuse_heads(attention: torch.Tensor, head_fusion: str) -> torch.Tensor:
    if head_fusion == "mean":
        return attention.mean(dim=1)
    if head_fusion == "max":
        return attention.amax(dim=1)
    if head_fusion == "min":
        return attention.amin(dim=1)
    raise ValueError(f"unknown head_fusion {head_fusion!r}: choose one of {', '.join(HEAD_FUSIONS)}")


@torch.no_grad()
def attention_rollout(
    attention_maps: Sequence[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0
) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): how much each token draws on each input token, (B, T, T).

    Per layer the heads are fused, the identity is added for the residual connection, rows are
    renormalised, and the layers are multiplied: R = A_L ... A_2 A_1. Rows of R sum to 1.
    `discard_ratio` zeroes that fraction of the smallest fused weights per image first (never the
    CLS-to-CLS weight), which sharpens the maps.
    """
    if len(attention_maps) == 0:
        raise ValueError("attention_maps is empty: pass model.get_attention_maps(images)")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    rollout = None
    for attention in attention_maps:
        if attention.ndim != 4 or attention.shape[-1] != attention.shape[-2]:
            raise ValueError(f"expected attention maps of shape (B, heads, T, T), got {tuple(attention.shape)}")
        fused = _fuse_heads(attention.float(), head_fusion)  # (B, T, T)
        if discard_ratio > 0:
            fused = _discard_smallest(fused, discard_ratio)
        eye = torch.eye(fused.shape[-1], device=fused.device)
        layer = fused + eye  # the residual path carries each token through unchanged
        layer = layer / layer.sum(dim=-1, keepdim=True)  # (B, T, T), rows sum to 1
        rollout = layer if rollout is None else layer @ rollout
    return rollout


def _discard_smallest(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    flat = fused.flatten(1).clone()  # (B, T*T)
    count = int(flat.shape[1] * ratio)
    if count == 0:
        return fused
    smallest = flat.topk(count, dim=-1, largest=False).indices  # (B, count)
    keep_cls = flat[:, 0].clone()
    flat.scatter_(1, smallest, 0.0)
    flat[:, 0] = keep_cls
    return flat.view_as(fused)


def rollout_to_grid(rollout: torch.Tensor, grid_size: int) -> np.ndarray:
    """The CLS token's row of the rollout over patch tokens as an image grid: (B, g, g), or (g, g) for (T, T)."""
    single = rollout.ndim == 2
    rollout = rollout[None] if single else rollout
    num_prefix = rollout.shape[-1] - grid_size * grid_size
    if num_prefix < 1:
        raise ValueError(
            f"rollout over {rollout.shape[-1]} tokens has no CLS token in front of a {grid_size}x{grid_size} grid"
        )
    cls_to_patches = rollout[:, 0, num_prefix:]  # (B, N)
    grid = rearrange(cls_to_patches, "b (h w) -> b h w", h=grid_size).cpu().numpy()  # (B, g, g)
    return grid[0] if single else grid


def plot_rollout(
    images,
    masks: np.ndarray,
    titles: Sequence[str] | None = None,
    alpha: float = 0.6,
    title: str | None = None,
    value_range: tuple[float, float] | None = None,
    colorbar: bool = True,
) -> plt.Figure:
    """Each image above itself overlaid with its rollout mask, upsampled to the image size.

    Each mask is scaled to its own largest value, so colours compare patches within one image, not
    across images; `colorbar` draws that scale beside the overlays.
    """
    masks = np.asarray(masks)
    masks = masks[None] if masks.ndim == 2 else masks
    images = [images] if len(masks) == 1 and _is_single_image(images) else list(images)
    cell = min(2.0, 9.0 / len(masks))  # inches per image; at most 9 inches in all
    fig, axes = plt.subplots(2, len(masks), figsize=(cell * len(masks), 2 * cell + 0.6), squeeze=False)
    for i, (image, mask) in enumerate(zip(images, masks)):
        array = to_display(image, value_range)
        size = array.shape[:2]
        upsampled = F.interpolate(torch.as_tensor(mask, dtype=torch.float32)[None, None], size=size, mode="bilinear")
        upsampled = upsampled[0, 0].numpy()
        upsampled = upsampled / max(float(upsampled.max()), 1e-12)
        axes[0, i].imshow(array, cmap="gray" if array.ndim == 2 else None)
        axes[1, i].imshow(array, cmap="gray" if array.ndim == 2 else None)
        axes[1, i].imshow(upsampled, cmap="jet", alpha=alpha)
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=10)
        axes[0, i].axis("off")
        axes[1, i].axis("off")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    if colorbar:
        scale = plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap="jet")
        fig.colorbar(scale, ax=axes[1].tolist(), fraction=0.03, pad=0.02, label="weight (image's largest = 1)")
    return fig


def _is_single_image(images) -> bool:
    return getattr(images, "ndim", None) == 3 or isinstance(images, np.ndarray) and images.ndim == 3


# --- mean attention distance (Figure 7, right) ----------------------------------------------------
def patch_distances(grid_size: int, patch_size: int) -> np.ndarray:
    """Euclidean distance in pixels between the centres of every pair of patches: (N, N)."""
    rows, cols = np.divmod(np.arange(grid_size * grid_size), grid_size)
    coords = np.stack([rows, cols], axis=-1).astype(np.float64) * patch_size  # (N, 2)
    return np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1))  # (N, N)


@torch.no_grad()
def mean_attention_distance(attention_maps: Sequence[torch.Tensor], grid_size: int, patch_size: int) -> np.ndarray:
    """Mean attention distance in pixels per layer and head, (layers, heads): the paper's Figure 7 (right).

    For every query patch, the pixel distances to all key patches are averaged with the attention
    weights as weights; then averaged over query patches and images. The CLS token is left out and
    each query's weights over patches are renormalised to sum to 1, so the value is a distance in
    image space regardless of how much attention went to CLS.
    """
    distances = torch.as_tensor(patch_distances(grid_size, patch_size), dtype=torch.float64)  # (N, N)
    num_patches = grid_size * grid_size
    result = []
    for attention in attention_maps:
        tokens = attention.shape[-1]
        if tokens < num_patches:
            raise ValueError(f"attention over {tokens} tokens cannot hold a {grid_size}x{grid_size} patch grid")
        prefix = tokens - num_patches
        patches = attention[..., prefix:, prefix:].double().cpu()  # (B, heads, N, N)
        patches = patches / patches.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        per_query = (patches * distances).sum(dim=-1)  # (B, heads, N)
        result.append(per_query.mean(dim=(0, 2)))  # (heads,)
    return torch.stack(result).numpy()  # (layers, heads)


def uniform_attention_distance(grid_size: int, patch_size: int) -> float:
    """The mean attention distance of a head that attends equally to every patch: the mean pairwise distance."""
    return float(patch_distances(grid_size, patch_size).mean())


def plot_attention_distance(
    distances: Mapping[str, np.ndarray] | np.ndarray, uniform: Mapping[str, float] | float | None = None
) -> plt.Figure:
    """One dot per head against network depth, as the paper's Figure 7 (right); several models side by side.

    `uniform` (one value, or one per model) draws the distance of uniform attention as a dashed line.
    """
    named = {"model": distances} if isinstance(distances, np.ndarray) else dict(distances)
    if uniform is not None and not isinstance(uniform, Mapping):
        uniform = dict.fromkeys(named, uniform)
    width = min(4.5 * len(named), 9.0) if len(named) > 1 else 6.0
    fig, axes = plt.subplots(1, len(named), figsize=(width, 4.0), squeeze=False)
    for ax, (label, values) in zip(axes[0], named.items()):
        layers, heads = values.shape
        for head in range(heads):
            ax.scatter(np.arange(1, layers + 1), values[:, head], s=12, alpha=0.8)
        if uniform is not None and label in uniform:
            ax.axhline(uniform[label], color="gray", linestyle="--", linewidth=1, label="uniform attention")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_xlabel("network depth (layer)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("mean attention distance (pixels)")
        ax.set_title(label, fontsize=11)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    return fig


# --- patch embedding filters (Figure 7, left) -----------------------------------------------------
@torch.no_grad()
def embedding_filters_pca(model, n_components: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal components of the D patch-embedding filters: ((n, C, P, P) orthonormal, explained variance ratio).

    Each of the D output channels of the patch projection is a C x P x P filter; PCA over those D
    filters shows the basis the model uses to describe a patch (the paper's Figure 7, left).
    """
    vit_only(model, "patch-embedding filters", "its first 3x3 convolution's 16 filters are model.stem[0].weight")
    weight = model.patch_embed.proj.weight.detach().float().cpu()  # (D, C, P, P)
    filters = rearrange(weight, "d c p1 p2 -> d (c p1 p2)")  # (D, C*P*P)
    centred = filters - filters.mean(dim=0, keepdim=True)
    _, singular, components = torch.linalg.svd(centred, full_matrices=False)  # components: (k, C*P*P)
    n = min(n_components, components.shape[0])
    variance = singular**2
    ratio = variance / variance.sum().clamp_min(1e-12)
    _, channels, p1, p2 = weight.shape
    shaped = components[:n].reshape(n, channels, p1, p2)  # (n, C, P, P)
    return shaped, ratio[:n]


def plot_embedding_filters(components: torch.Tensor, columns: int = 7, title: str | None = None) -> plt.Figure:
    """Each principal component as a small RGB image, scaled to its own range."""
    n = components.shape[0]
    rows = math.ceil(n / columns)
    cell = 7.5 / columns  # inches per filter: 7.5 inches across
    fig, axes = plt.subplots(rows, columns, figsize=(columns * cell, rows * cell + 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            component = components[i].float().cpu().numpy()  # (C, P, P)
            low, high = component.min(), component.max()
            image = ((component - low) / max(high - low, 1e-12)).transpose(1, 2, 0)
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
    fig.suptitle(title or "RGB embedding filters (first principal components)", fontsize=11)
    fig.subplots_adjust(wspace=0.08, hspace=0.08)
    return fig


# --- training runs from TensorBoard event files ---------------------------------------------------
def read_scalars(run_dir: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every scalar of a TensorBoard run folder: {tag: (steps, wall_times, values)}, sorted by step."""
    return _read_run(run_dir)[0]


def _read_run(run_dir: str | os.PathLike) -> tuple[dict, float]:
    """(scalars as in `read_scalars`, wall time of the run's first event: when its writer was opened)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist: pass a folder under the log_dir of a run")
    if not any(path.name.startswith("events.out.tfevents") for path in run_dir.iterdir()):
        inner = sorted({p.parent for p in run_dir.rglob("events.out.tfevents*")})
        hint = f"; event files are in {', '.join(map(str, inner))}" if inner else ""
        raise FileNotFoundError(f"no TensorBoard event files in {run_dir}{hint}")
    accumulator = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})  # 0 = keep every point
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags()["scalars"]:
        events = accumulator.Scalars(tag)
        steps = np.array([e.step for e in events], dtype=np.int64)
        order = np.argsort(steps, kind="stable")
        wall_times = np.array([e.wall_time for e in events], dtype=np.float64)[order]
        values = np.array([e.value for e in events], dtype=np.float64)[order]
        scalars[tag] = (steps[order], wall_times, values)
    return scalars, accumulator.FirstEventTimestamp()


def plot_runs(
    run_dirs: Mapping[str, str | os.PathLike], tags: Sequence[str] | None = None
) -> tuple[plt.Figure, dict[str, dict]]:
    """Curves of several runs side by side: one row per tag, against steps (left) and wall-clock minutes (right).

    `tags=None` plots every tag that all runs share. Accuracies (tags with "accuracy", "top1" or "top5",
    stored as fractions) are drawn in percent. Returns the Figure and the scalars read, as stored,
    {label: {tag: (steps, wall_times, values)}}.
    """
    loaded = {label: _read_run(path) for label, path in run_dirs.items()}
    if not loaded:
        raise ValueError("run_dirs is empty: pass {label: run folder}")
    runs = {label: scalars for label, (scalars, _) in loaded.items()}
    available = sorted(set().union(*(set(s) for s in runs.values())))
    if tags is None:
        tags = sorted(set.intersection(*(set(s) for s in runs.values())))
    missing = [tag for tag in tags if not any(tag in scalars for scalars in runs.values())]
    if missing or not tags:
        raise ValueError(f"tags {missing or 'shared by all runs'} not found; the runs have {', '.join(available)}")
    fig, axes = plt.subplots(len(tags), 2, figsize=(9, 2.5 * len(tags)), squeeze=False)
    for row, tag in enumerate(tags):
        scale = 100.0 if is_accuracy(tag) else 1.0
        for label, (scalars, start) in loaded.items():
            if tag not in scalars:
                continue
            steps, wall_times, values = scalars[tag]
            marker = "." if len(steps) < 30 else None
            axes[row, 0].plot(steps, values * scale, marker=marker, label=label)
            axes[row, 1].plot((wall_times - start) / 60.0, values * scale, marker=marker, label=label)
        axes[row, 0].set_ylabel(f"{tag} (%)" if scale == 100.0 else tag)
        axes[row, 0].set_xlabel("step")
        axes[row, 1].set_xlabel("wall-clock time since the start (minutes)")
        axes[row, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig, runs


def is_accuracy(tag: str) -> bool:
    """Whether a scalar tag holds an accuracy (a fraction that plots show in percent)."""
    return any(word in tag for word in ("accuracy", "top1", "top5"))


# --- classification results -----------------------------------------------------------------------
def confusion_matrix(preds, labels, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    preds = torch.as_tensor(preds).flatten().long().cpu().numpy()
    labels = torch.as_tensor(labels).flatten().long().cpu().numpy()
    if preds.shape != labels.shape:
        raise ValueError(f"preds has {preds.size} entries but labels has {labels.size}")
    for name, values in (("preds", preds), ("labels", labels)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got values from {values.min()} to {values.max()}")
    counts = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str] | None = None) -> plt.Figure:
    """The confusion matrix with its counts written in each cell."""
    k = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    fig, ax = plt.subplots(figsize=(0.5 * k + 2, 0.5 * k + 1.5))
    ax.imshow(matrix, cmap="Blues")
    for (r, c), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(c, r, str(count), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"accuracy {accuracy:.1%}")
    fig.tight_layout()
    return fig


def describe_confusion(matrix: np.ndarray, class_names: Sequence[str], pairs: int = 4) -> str:
    """Two lines: each class's share of right answers, best first, and the pairs of classes most often confused.

    A pair counts both directions (cat taken for dog and dog for cat), the cells on either side of the diagonal.
    """
    matrix = np.asarray(matrix)
    right = matrix.diagonal() / matrix.sum(axis=1).clip(min=1)
    ranked = sorted(range(len(right)), key=lambda i: -right[i])
    mixed = sorted(
        ((int(matrix[a, b] + matrix[b, a]), a, b) for a in range(len(right)) for b in range(a + 1, len(right))),
        key=lambda pair: -pair[0],
    )[:pairs]
    return (
        "right per class: " + ", ".join(f"{class_names[i]} {right[i]:.0%}" for i in ranked) + "\n"
        "most confused pairs (both ways): " + ", ".join(f"{class_names[a]}/{class_names[b]} {n}" for n, a, b in mixed)
    )


def show_misclassified(
    images,
    preds,
    labels,
    class_names: Sequence[str] | None = None,
    max_images: int = 16,
    columns: int = 8,
    value_range: tuple[float, float] | None = None,
) -> plt.Figure:
    """Up to `max_images` images whose prediction is wrong, titled "true -> predicted" on two lines."""
    preds = torch.as_tensor(preds).flatten().cpu()
    labels = torch.as_tensor(labels).flatten().cpu()
    wrong = torch.nonzero(preds != labels).flatten()[:max_images].tolist()
    name = (lambda i: class_names[i]) if class_names is not None else str
    columns = max(1, min(columns, len(wrong)))
    rows = max(1, math.ceil(len(wrong) / columns))
    cell = 8.8 / max(columns, 6)  # inches per image: room for a 10-letter class name at 9 points
    fig, axes = plt.subplots(rows, columns, figsize=(cell * columns, (cell + 0.45) * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, wrong):
        array = to_display(images[index], value_range)
        ax.imshow(array, cmap="gray" if array.ndim == 2 else None)
        ax.set_title(f"{name(int(labels[index]))}\n-> {name(int(preds[index]))}", fontsize=9)
    if not wrong:
        axes[0, 0].set_title("no misclassified images")
    fig.tight_layout()
    return fig
