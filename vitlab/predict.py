"""Classify images with a trained or pre-trained ViT: top-k labels with probabilities.

    python -m vitlab.predict cat.png --model_type ViT-B_16 --checkpoint Model/<run>/best.pt
    python -m vitlab.predict cat.png --model_type ViT-B_16 --checkpoint Pretrained/imagenet21k+imagenet2012_ViT-B_16.npz
    python -m vitlab.predict photos/ --model_type vit_b_32 --checkpoint Pretrained/vit_b_32-d86f8d99.pth

`.pt` files are vitlab run checkpoints (they carry the architecture and the class names);
`.npz` files are Google's checkpoints and `.pth` / `.bin` / `.safetensors` files PyTorch state dicts
(timm's, torchvision's): image size, class count and pooling are read from the file; class names
come from `--labels` (one name per line), are ImageNet-1k's for a 1000-class head (torchvision's list),
or are class indices otherwise. Folders are searched for images.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vitlab import commands
from vitlab.configs import GOOGLE_MEAN, GOOGLE_STD, PRECISIONS
from vitlab.errors import BadValue, FileError, MissingFile
from vitlab.images import read_image, to_rgb
from vitlab.model import VisionTransformer
from vitlab.precision import autocast_context, model_width, resolve_precision


def load_image(
    image: str | os.PathLike | Image.Image | torch.Tensor,
    img_size: int,
    mean: Sequence[float] = GOOGLE_MEAN,
    std: Sequence[float] = GOOGLE_STD,
) -> torch.Tensor:
    """An image as the model's input: (3, img_size, img_size), resized bilinearly, (pixel - mean) / std.

    Tensors are (3, H, W), float in [0, 1] or uint8. The default mean and std of 0.5 scale pixels to
    [-1, 1], the preprocessing of Google's ViT training and fine-tuning (pixel / 127.5 - 1); pass the
    model's `cfg.image_mean` / `cfg.image_std` (as `predict` does) for weights trained otherwise.
    """
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)  # a file that is not a whole image is an error naming it
    if isinstance(image, Image.Image):
        image = to_rgb(image).resize((img_size, img_size), Image.BILINEAR)  # 16-bit grey scaled, not clipped
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, H, W)
        return _normalize(pixels, mean, std)
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise BadValue(f"expected an image path, a PIL image or a (3, H, W) tensor, got {shape}")
    pixels = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    if pixels.shape[1:] != (img_size, img_size):
        pixels = F.interpolate(pixels[None], size=(img_size, img_size), mode="bilinear", antialias=True)[0]
    return _normalize(pixels, mean, std)


def _normalize(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(pixels - mean) / std per channel of a (3, H, W) tensor in [0, 1]."""
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)  # (3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    return (pixels - mean) / std


@torch.no_grad()
def predict(
    model: VisionTransformer,
    image: str | os.PathLike | Image.Image | torch.Tensor,
    top_k: int = 3,
    class_names: list[str] | tuple[str, ...] | None = None,
    precision: str = "auto",
) -> list[tuple[str, float]]:
    """The `top_k` most probable classes of one image: [(label, probability), ...], best first.

    The image is normalised with the model's `cfg.image_mean` and `cfg.image_std`.
    Labels are `class_names[i]` when given, else the class index as a string. `precision` as for
    `vitlab.evaluate.evaluate`: "auto" is bfloat16 autocast where the device has it natively.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise BadValue(f"top_k must be a positive integer, got {top_k!r}")
    parameter = next(model.parameters())
    cfg = model.cfg
    x = load_image(image, cfg.img_size, cfg.image_mean, cfg.image_std)[None]  # (1, 3, S, S)
    x = x.to(parameter.device, parameter.dtype)
    was_training = model.training
    model.eval()
    try:
        with autocast_context(x.device, resolve_precision(precision, x.device, model_width(model))[0]):
            logits = model(x)
        probabilities = logits.float().softmax(dim=-1)[0]  # (num_classes,)
    finally:
        model.train(was_training)
    if class_names is not None and len(class_names) != probabilities.shape[0]:
        raise BadValue(f"{len(class_names)} class names for a model with {probabilities.shape[0]} classes")
    values, indices = probabilities.topk(min(top_k, probabilities.shape[0]))
    labels = [class_names[i] if class_names is not None else str(i) for i in indices.tolist()]
    return list(zip(labels, values.tolist()))


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line (e.g. ImageNet's `ilsvrc2012_wordnet_lemmas.txt`)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise MissingFile(f"label file {path} {what}: give a text file with one class name per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadValue(f"label file {path} is not UTF-8 text: give a text file with one class name per line") from None
    except OSError as error:  # the system's refusal (permissions)
        raise FileError(error.errno, error.strerror, str(path)) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def npz_shape(arrays: dict) -> tuple | None:
    """(width, encoder blocks, MLP width, patch size or None for a hybrid) of Google's arrays; None if unsure."""
    try:
        kernel = arrays["embedding/kernel"]  # (p, p, C, D)
        mlp_dim = arrays["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"].shape[1]  # (D, mlp)
    except KeyError:
        return None
    blocks = {key.split("/")[1] for key in arrays if key.startswith("Transformer/encoderblock_")}
    patch = None if "conv_root/kernel" in arrays else int(kernel.shape[0])
    return int(kernel.shape[-1]), len(blocks), int(mlp_dim), patch


def state_dict_shape(state: dict) -> tuple | None:
    """`npz_shape` for weights in vitlab's key names (`patch_embed.proj.weight`, `encoder.blocks.N...`)."""
    try:
        kernel = state["patch_embed.proj.weight"]  # (D, C, p, p)
        mlp_dim = state["encoder.blocks.0.mlp.fc1.weight"].shape[0]  # (mlp, D)
    except KeyError:
        return None
    blocks = {key.split(".")[2] for key in state if key.startswith("encoder.blocks.")}
    hybrid = any(key.startswith("patch_embed.backbone.") for key in state)
    return int(kernel.shape[0]), len(blocks), int(mlp_dim), None if hybrid else int(kernel.shape[-1])


def check_preset_fits(model_type: str, shape: tuple | None, path, assumed: bool = False) -> None:
    """Refuse weights whose sizes are not those of preset `model_type`, naming the presets they fit.

    Compared before any model is built: a ViT-S file given to the default ViT-B_16 is named as such,
    with ViT-S_16 (or whichever preset has its width, depth, MLP and patch) as the fix.
    """
    from vitlab.configs import get_model_config, presets_of_shape
    from vitlab.weights.errors import CheckpointError

    preset = get_model_config(model_type)
    ours = (preset.hidden_size, preset.num_layers, preset.mlp_dim, None if preset.resnet_layers else preset.patch_size)
    if shape is None or preset.architecture != "vit" or shape == ours:
        return

    def sizes(width, blocks, mlp_dim, patch):
        return f"width {width}, {blocks} blocks, MLP {mlp_dim}, " + (
            "a ResNet stem" if patch is None else f"patch {patch}"
        )

    which = f"{model_type} (assumed: no --model_type was given)" if assumed else model_type
    fits = presets_of_shape(*shape)
    fix = (f"it fits {', '.join(fits)}: give --model_type {fits[0]}" if fits
           else "no preset has its sizes: build the model in Python with vitlab.create_model(name, hidden_size=..., "
                "num_layers=..., mlp_dim=...) and load the file with vitlab.load_pretrained")  # fmt: skip
    raise CheckpointError(
        f"checkpoint {path} does not fit the preset {which}: its weights have {sizes(*shape)}, the preset "
        f"{sizes(*ours)}; {fix}"
    )


def model_from_npz(
    model_type: str,
    path: str | os.PathLike,
    num_classes: int | None = None,
    img_size: int | None = None,
    assumed: bool = False,
) -> VisionTransformer:
    """Build `model_type` shaped like Google's checkpoint at `path` (grid, classes, pooling) and load it.

    `assumed`: the caller chose `model_type` as a default, not the user; an error then says so.
    """
    from vitlab.factory import create_model
    from vitlab.weights.fetch import fetch_if_missing
    from vitlab.weights.load import load_pretrained
    from vitlab.weights.npz import read_npz

    arrays = read_npz(fetch_if_missing(path))  # the file's shapes decide the model, so fetch it first
    needed = ("embedding/kernel", "Transformer/posembed_input/pos_embedding")
    if any(key not in arrays for key in needed):
        found = ", ".join(sorted(arrays)[:6]) or "none"
        raise BadValue(
            f"checkpoint {path} is not a Google ViT .npz: it lacks {', '.join(k for k in needed if k not in arrays)} "
            f"(its arrays: {found}); give one of the files `python -m vitlab.download --list` names"
        )
    check_preset_fits(model_type, npz_shape(arrays), path, assumed)
    overrides = {}
    if "cls" not in arrays:  # Google's "gap" models: mean of the patch tokens, no class token
        overrides.update(classifier="gap", class_token=False)
    if "pre_logits/bias" in arrays:
        overrides["representation_size"] = int(arrays["pre_logits/bias"].shape[0])
    if num_classes is None and "head/bias" in arrays:
        num_classes = int(arrays["head/bias"].shape[0])
    if img_size is None:
        patch_size = int(arrays["embedding/kernel"].shape[0])
        num_patches = arrays["Transformer/posembed_input/pos_embedding"].shape[1] - (1 if "cls" in arrays else 0)
        img_size = int(round(num_patches**0.5)) * patch_size
    del arrays
    model = create_model(model_type, num_classes=num_classes, img_size=img_size, **overrides)
    load_pretrained(model, path, verbose=False)
    return model.eval()


WEIGHT_SUFFIXES = (".npz", ".pth", ".bin", ".safetensors")  # published weights; ".pt" is a vitlab run checkpoint


def imagenet_class_names() -> list[str]:
    """ImageNet-1k's 1000 class names in index order ("tench", "goldfish", ...), from torchvision's weights' `meta`."""
    from torchvision.models import ViT_B_32_Weights

    return list(ViT_B_32_Weights.IMAGENET1K_V1.meta["categories"])


def default_class_names(model: VisionTransformer) -> list[str] | None:
    """ImageNet-1k's names for a 1000-class model whose weights carry no names (Google's and torchvision's files)."""
    head = getattr(model, "head", None)
    return imagenet_class_names() if isinstance(head, torch.nn.Linear) and head.out_features == 1000 else None


def model_from_state_dict(
    model_type: str,
    path: str | os.PathLike,
    num_classes: int | None = None,
    img_size: int | None = None,
    assumed: bool = False,
) -> VisionTransformer:
    """Build `model_type` shaped like the PyTorch weights at `path` (timm's, torchvision's or vitlab's key names:
    image size from the position embeddings, classes from the head) and load them; `assumed` as for `model_from_npz`."""
    from vitlab.factory import create_model
    from vitlab.weights.convert import timm_to_vitlab, torchvision_to_vitlab
    from vitlab.weights.load import load_pretrained
    from vitlab.weights.state_dicts import detect_layout, read_torch_state_dict

    state = read_torch_state_dict(path)
    rename = {"timm": timm_to_vitlab, "torchvision": torchvision_to_vitlab, "vitlab": dict}[detect_layout(state)]
    state = rename(state)
    if num_classes is None and "head.weight" in state:
        num_classes = int(state["head.weight"].shape[0])
    if img_size is None and "pos_embed" in state and "patch_embed.proj.weight" in state:
        num_patches = state["pos_embed"].shape[1] - (1 if "cls_token" in state else 0)
        img_size = int(round(num_patches**0.5)) * int(state["patch_embed.proj.weight"].shape[-1])
    check_preset_fits(model_type, state_dict_shape(state), path, assumed)
    del state
    model = create_model(model_type, num_classes=num_classes, img_size=img_size)
    load_pretrained(model, path, verbose=False)
    return model.eval()


def model_from_weights(
    model_type: str,
    path: str | os.PathLike,
    num_classes: int | None = None,
    img_size: int | None = None,
    assumed: bool = False,
) -> VisionTransformer:
    """`model_type` with published weights: Google's `.npz` or a PyTorch state dict (`.pth`, `.bin`, `.safetensors`)."""
    if Path(path).suffix.lower() == ".npz":
        return model_from_npz(model_type, path, num_classes, img_size, assumed)
    return model_from_state_dict(model_type, path, num_classes, img_size, assumed)


def image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The images named by `paths`: files as given, folders searched (recursively, sorted) for image files."""
    from vitlab.data import IMAGE_EXTENSIONS

    found = []
    for path in map(Path, paths):
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))
            if not images:
                raise MissingFile(f"folder {path} holds no images ({' '.join(IMAGE_EXTENSIONS)})")
            found += images
        elif not path.is_file():  # found out before the model is loaded, and said once
            raise MissingFile(f"image {path} does not exist")
        else:
            found.append(path)
    return found


def main(argv: list[str] | None = None) -> int:
    """Command line: print the top-k classes of each image; returns the exit status (1: bad input)."""
    return commands.run(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = commands.ArgumentParser(prog="python -m vitlab.predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files (any format PIL reads) or folders of them")
    parser.add_argument("--model_type", help="preset name of published weights (see vitlab.list_models(); default "
                        "ViT-B_16); a run's checkpoint records its own")  # fmt: skip
    parser.add_argument(
        "--checkpoint", required=True, help="a vitlab run checkpoint (.pt), Google's .npz or a state dict (.pth, ...)"
    )
    parser.add_argument("--top_k", type=commands.at_least(1), default=3, help="how many classes to show per image")
    parser.add_argument("--labels", help="text file of class names, one per line (1000 classes: ImageNet-1k's)")
    parser.add_argument(
        "--num_classes", type=commands.at_least(1), help="weights only: classes of the head (default: the file's)"
    )
    parser.add_argument(
        "--img_size", type=commands.at_least(1), help="weights only: input size (default: the file's grid)"
    )
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
    images = image_files(args.images)
    model, class_names = _load(args)
    model.to(device)
    for image in images:
        top = predict(
            model, image, args.top_k, class_names, args.precision
        )  # before its name: an unreadable image is one line
        print(image)
        for rank, (label, probability) in enumerate(top, start=1):
            print(f"  {rank}. {label:<30} {100 * probability:6.2f}%")
    return 0


def _load(args) -> tuple[VisionTransformer, list[str] | None]:
    checkpoint = Path(args.checkpoint)
    if checkpoint.suffix.lower() in WEIGHT_SUFFIXES:
        assumed = args.model_type is None
        model = model_from_weights(args.model_type or "ViT-B_16", checkpoint, args.num_classes, args.img_size, assumed)
        class_names = None if args.labels else default_class_names(model)
    else:
        from vitlab.weights.checkpoint import check_model_type, load_checkpoint, model_from_state

        state = load_checkpoint(checkpoint)
        check_model_type(state, checkpoint, args.model_type)
        model, class_names = model_from_state(state, checkpoint), state.get("class_names")
    if args.labels:
        class_names = read_labels(args.labels)
    return model, class_names


commands.callable_module(__name__, "predict")  # vitlab.predict(...) calls predict(...)

if __name__ == "__main__":
    sys.exit(main())
