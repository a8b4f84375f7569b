"""What a model is: `ModelConfig`, the named presets (the paper's Table 1, DeiT's and AugReg's small ones,
the CIFAR patch-4 models, Meta's DINOv2) and the other names they go by (`ALIASES`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from vitlab import model
from vitlab.configs.checks import check_range, check_types, closest, unknown_names
from vitlab.errors import BadType, BadValue
from vitlab.model import CLASSIFIERS as CLASSIFIERS  # the pooling choices, public here too
from vitlab.model import GELU_APPROXIMATIONS as GELU_APPROXIMATIONS

ARCHITECTURES = ("vit", "resnet")  # a Vision Transformer, or the CIFAR ResNet it is compared with (vitlab.cnn)
# The input normalisations, (pixel / 255 - mean) / std per RGB channel. Google's checkpoints take pixels
# scaled to [-1, 1]; torchvision's, MAE's and DINOv2's weights ImageNet's per-channel statistics.
GOOGLE_MEAN = GOOGLE_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelConfig(model.ModelConfig):
    """Everything that fixes a model: the ViT's layers (`vitlab.model.ModelConfig`, whose fields come first)
    and what vitlab adds around them; a preset is one of these with a name. Made with a field of the wrong
    type, out of range or that does not fit the others, it is refused in one line.

    `architecture="resnet"` describes the CNN of the comparison instead (`vitlab.cnn.CifarResNet`): there
    `hidden_size` is the first stage's width and `num_layers` the basic blocks per stage; patch, attention and
    MLP fields are unused.
    """

    resnet_layers: tuple[int, ...] | None = None  # hybrid: ResNet units per stage feeding 1x1 patches; None = pixels
    image_mean: tuple[float, float, float] = GOOGLE_MEAN  # inputs the weights expect: (pixel/255 - mean) / std
    image_std: tuple[float, float, float] = GOOGLE_STD  # Google's [-1, 1] unless the weights say otherwise
    architecture: str = "vit"  # "vit", or "resnet": the CNN of the comparison (vitlab.cnn), same config, same trainer

    def __post_init__(self):
        check_types(self)
        if self.resnet_layers is not None:
            self.resnet_layers = tuple(self.resnet_layers)  # JSON gives a list
        for name in ("img_size", "patch_size", "in_chans", "hidden_size", "num_layers", "num_heads", "mlp_dim"):
            check_range(self, name, low=1)
        check_range(self, "num_classes", low=0)
        check_range(self, "num_register_tokens", low=0)
        if self.representation_size is not None:
            check_range(self, "representation_size", low=1)
        for name in ("dropout_rate", "attention_dropout_rate", "drop_path_rate"):
            check_range(self, name, low=0, high=1)
        # JSON round trips give lists; tuples of floats compare equal to the presets' values.
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            try:
                value = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise BadType(f"{name} must be a sequence of per-channel numbers, got {value!r}") from None
            setattr(self, name, value)
        if not self.image_std or min(self.image_std) <= 0:
            raise BadValue(f"image_std must hold positive numbers, got {self.image_std}")
        if self.architecture not in ARCHITECTURES:
            raise BadValue(f"unknown architecture {self.architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
        if self.architecture == "vit":
            try:
                super().__post_init__()  # the choices and sizes the ViT's layers need, checked by vitlab/model.py
            except ValueError as error:
                raise BadValue(str(error)) from None
            self._check_hybrid()

    def _check_hybrid(self) -> None:
        """The ResNet stem's stride is the patch size (vitlab/hybrid.py)."""
        if self.resnet_layers:  # () builds the plain ViT, as None does
            if min(self.resnet_layers) < 1:
                raise BadValue(f"resnet_layers must be a non-empty tuple of unit counts >= 1, got {self.resnet_layers}")
            stride = 4 * 2 ** (len(self.resnet_layers) - 1)  # vitlab.hybrid: the stem divides by 4, each stage by 2
            if self.patch_size != stride:
                raise BadValue(
                    f"patch_size {self.patch_size} does not match the ResNet's stride {stride} for "
                    f"resnet_layers={self.resnet_layers}: use patch_size={stride}"
                )

    def replace(self, **overrides) -> ModelConfig:
        """A copy with some fields changed; unknown field names are an error that lists the valid ones."""
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise BadType(unknown_names("ModelConfig field", unknown, valid))
        return dataclasses.replace(self, **overrides)


def _imagenet(patch: int, width: int, depth: int, heads: int, mlp: int, **extra) -> ModelConfig:
    # Google's models compute the tanh GELU; loading timm / torchvision / MAE weights switches to the exact one.
    extra = {"gelu_approximate": "tanh", **extra}
    return ModelConfig(
        img_size=224, patch_size=patch, hidden_size=width, num_layers=depth, num_heads=heads, mlp_dim=mlp, **extra
    )


def _dinov2(width: int, depth: int, heads: int, registers: int) -> ModelConfig:
    return ModelConfig(
        img_size=518, patch_size=14, hidden_size=width, num_layers=depth, num_heads=heads, mlp_dim=4 * width,
        num_classes=0, layer_scale_init=1e-5, num_register_tokens=registers, image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )  # fmt: skip


def _cifar(width: int, depth: int, heads: int, mlp: int) -> ModelConfig:
    return ModelConfig(
        img_size=32, patch_size=4, hidden_size=width, num_layers=depth, num_heads=heads, mlp_dim=mlp, num_classes=10
    )


PRESETS: dict[str, ModelConfig] = {
    # The paper's models (Table 1); Ti and S as in DeiT and Google's AugReg release.
    "ViT-Ti_16": _imagenet(16, 192, 12, 3, 768),
    "ViT-S_16": _imagenet(16, 384, 12, 6, 1536),
    "ViT-S_32": _imagenet(32, 384, 12, 6, 1536),
    "ViT-B_16": _imagenet(16, 768, 12, 12, 3072),
    "ViT-B_32": _imagenet(32, 768, 12, 12, 3072),
    "ViT-L_16": _imagenet(16, 1024, 24, 16, 4096),
    "ViT-L_32": _imagenet(32, 1024, 24, 16, 4096),
    "ViT-H_14": _imagenet(14, 1280, 32, 16, 5120),
    # MAE-pre-trained ViT-B/16 fine-tuned on ImageNet-1k: global average pooling of the patch
    # tokens (the CLS token is kept but unused) and the final LayerNorm on the pooled vector.
    # MAE trained and fine-tuned on ImageNet-normalised inputs, not Google's [-1, 1], with the exact GELU.
    "ViT-B_16-MAE": _imagenet(
        16,
        768,
        12,
        12,
        3072,
        classifier="gap",
        fc_norm=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        gelu_approximate="none",
    ),
    # The hybrid: a ResNet-50 stem (its first three stages, the third with 9 units) makes a 14 x 14
    # feature map of 224px images; each position is a token (patch_size = the ResNet's stride 16).
    "R50-ViT-B_16": _imagenet(16, 768, 12, 12, 3072, resnet_layers=(3, 4, 9)),
    # From scratch on CIFAR (32 x 32, patch 4 -> 64 tokens).
    # 2.7 M parameters: the ViT of Lee et al., "Vision Transformer for Small-Size Datasets".
    "ViT-CIFAR-3M": _cifar(192, 9, 12, 384),
    # 6.3 M parameters: the width and depth of omihub777/ViT-CIFAR, whose 90.9% (200 epochs) used patch 8
    # (16 tokens) and was read off the test set it also validated on; patch 4 here (64 tokens, ~4x the compute).
    "ViT-CIFAR-6M": _cifar(384, 7, 12, 384),
    # DINOv2 (Oquab et al., 2023), self-supervised on 142 M images: patch 14, LayerScale, exact GELU,
    # ImageNet mean/std inputs, positions learned on a 37 x 37 grid at 518 px (resized when loaded for
    # another size). No head: the published weights are backbones. The "_reg" models add 4 registers.
    **{
        f"dinov2_vit{size}14{reg}": _dinov2(width, depth, heads, registers=4 if reg else 0)
        for size, width, depth, heads in (("s", 384, 12, 6), ("b", 768, 12, 12), ("l", 1024, 24, 16))
        for reg in ("", "_reg")
    },
    # The CNN a ViT from scratch is compared with (vitlab.cnn): ResNet-20 of He et al. (2016) for 32 x 32
    # images, 16/32/64 channels, 3 basic blocks per stage, 0.27 M parameters, close to the small ViT's 0.55 M.
    "ResNet-20": ModelConfig(
        architecture="resnet",
        img_size=32,
        patch_size=1,
        hidden_size=16,
        num_layers=3,
        num_heads=1,
        mlp_dim=1,
        num_classes=10,
        class_token=False,
        classifier="gap",
    ),  # fmt: skip
    # A few thousand parameters: for tests and the notebooks' smoke mode.
    "ViT-Test": ModelConfig(
        img_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, num_classes=10
    ),
}

ALIASES: dict[str, str] = {
    # MindCV's ImageNet-1k names
    "vit_b_32_224": "ViT-B_32",
    "vit_l_16_224": "ViT-L_16",
    "vit_l_32_224": "ViT-L_32",
    # MindFormers' MAE-fine-tuned ViT-B/16
    "vit_base_p16": "ViT-B_16-MAE",
    # Google's file name of the hybrid (imagenet21k/R50+ViT-B_16.npz)
    "R50+ViT-B_16": "R50-ViT-B_16",
    # torchvision's names
    "vit_b_16": "ViT-B_16",
    "vit_b_32": "ViT-B_32",
    "vit_l_16": "ViT-L_16",
    "vit_l_32": "ViT-L_32",
    "vit_h_14": "ViT-H_14",
    # timm's names of the DINOv2 backbones
    **{
        f"vit_{timm_size}_patch14{'_reg4' if reg else ''}_dinov2": f"dinov2_vit{size}14{reg}"
        for size, timm_size in (("s", "small"), ("b", "base"), ("l", "large"))
        for reg in ("", "_reg")
    },
}

# Published models that vitlab's ViT cannot compute, and why (named instead of "unknown model").
UNSUPPORTED = {
    name: "DINOv2's ViT-g/14 has a SwiGLU MLP (three matrices, not fc1/fc2), which vitlab's model does not "
    "implement: use dinov2_vitl14 (or timm's vit_giant_patch14_dinov2)"
    for name in ("dinov2_vitg14", "dinov2_vitg14_reg", "vit_giant_patch14_dinov2", "vit_giant_patch14_reg4_dinov2")
}


def resolve_model_name(name: str) -> str:
    """The preset name behind `name` (an alias or a preset); an unknown name lists the valid ones."""
    if name in PRESETS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    if name in UNSUPPORTED:
        raise BadValue(f"model {name!r} is not supported: {UNSUPPORTED[name]}")
    same_letters = [known for known in list_models() if known.lower() == name.lower()]
    if len(same_letters) == 1:  # "vit-b_16" is ViT-B_16: no two names differ only in case
        return resolve_model_name(same_letters[0])
    close = closest(name, list_models(), count=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise BadValue(f"unknown model {name!r}{hint}; valid names: {', '.join(list_models())}")


def presets_of_shape(hidden_size: int, num_layers: int, mlp_dim: int, patch_size: int | None) -> list[str]:
    """The ViT presets with these sizes, e.g. for weights that do not fit the preset a command assumed.

    `patch_size` None stands for a hybrid, whose tokens come from a ResNet rather than pixel patches.
    """
    return [
        name
        for name, cfg in PRESETS.items()
        if cfg.architecture == "vit"
        and (cfg.hidden_size, cfg.num_layers, cfg.mlp_dim) == (hidden_size, num_layers, mlp_dim)
        and (None if cfg.resnet_layers else cfg.patch_size) == patch_size
    ]


def list_models() -> list[str]:
    """Every preset name, then every alias."""
    return list(PRESETS) + list(ALIASES)


def get_model_config(name: str, **overrides) -> ModelConfig:
    """A fresh copy of preset `name` with `overrides` applied."""
    return model_config_from(overrides, preset=name)


def model_config_from(fields: Mapping, preset: str | None = None) -> ModelConfig:
    """The `ModelConfig` that a dict of its fields describes: a checkpoint's `model_config`, JSON, a run's
    `model_overrides` (then on `preset`, a preset name or alias).

    Without a preset, fields the dict lacks take ModelConfig's defaults, what a checkpoint written before the
    field existed computed (the exact GELU, Google's [-1, 1] inputs). Lists from JSON become tuples; an unknown
    field is an error that lists the valid ones.
    """
    if not isinstance(fields, Mapping):
        raise BadType(f"a ModelConfig is a dict of its fields, got {type(fields).__name__}")
    base = PRESETS[resolve_model_name(preset)] if preset is not None else ModelConfig()
    return base.replace(**fields)
