"""The Vision Transformer (Dosovitskiy et al., arXiv 2010.11929), top to bottom in paper order.

    image (B, C, H, W)
      -> PatchEmbedding          cut into P x P patches, flatten, project to D   (B, N, D)
      -> [CLS] + position emb.   prepend a learned token, add learned positions   (B, 1 + N, D)
      -> Encoder                 L x EncoderBlock (pre-LayerNorm attention + MLP), final LayerNorm
      -> pool                    the CLS token ("token"), the mean of patch tokens ("gap") or both ("token_gap")
      -> head                    optional pre-logits (Linear + tanh), then Linear to classes

Names follow the paper: N = (H / P) * (W / P) patches, D = hidden_size, T = tokens per image.
The file needs torch and einops only: copied alone, `VisionTransformer(ModelConfig())` is a ViT-B/16.

Two details decide whether the logits equal those of a given reference, not only the shapes:
- GELU: Google's JAX ViT uses flax's default `gelu`, the tanh approximation
  0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); timm, torchvision and MAE use the exact
  x Phi(x) with the error function. The two differ by at most 4.7e-4 (at |x| = 2.7), which moves a
  ViT-B/16's logits by about 3e-4 relative. `ModelConfig.gelu_approximate` picks one: "tanh" for
  the paper's presets and Google's `.npz` weights, "none" (exact) for timm / torchvision / MAE
  weights; `vitlab.load_pretrained` sets what the file's source computes.
- Resizing position embeddings for a new image size (`resize_pos_embed`): Google's fine-tuning code
  samples the grid with aligned corners, timm without; the tables differ by a few percent.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import nn

LAYER_NORM_EPS = 1e-6  # the value of Google's implementation; PyTorch's default 1e-5 changes logits
# "token": the CLS token; "gap": the mean of the patch tokens; "token_gap": both concatenated, as DINOv2's linear
# evaluation reads its backbone (Oquab et al. 2023).
CLASSIFIERS = ("token", "gap", "token_gap")
GELU_APPROXIMATIONS = ("none", "tanh")  # torch.nn.GELU(approximate=...): exact erf, or Google's tanh form


@dataclass
class ModelConfig:
    """Everything that fixes a ViT's layers; the defaults are ViT-B/16 (86 M parameters with 1000 classes).

    `vitlab.configs.ModelConfig` extends it with what the package needs around the model (the input
    normalisation, the hybrid's ResNet stem, the CNN of the comparison) and names the presets.
    """

    img_size: int = 224  # input height = width in pixels; must be a multiple of patch_size
    patch_size: int = 16  # P: each P x P patch becomes one token (16 -> "ViT-B_16")
    in_chans: int = 3  # input channels (RGB)
    hidden_size: int = 768  # D: token width throughout the encoder
    num_layers: int = 12  # L: number of encoder blocks
    num_heads: int = 12  # attention heads; hidden_size must divide evenly among them
    mlp_dim: int = 3072  # MLP hidden width, 4 * D in the paper's models
    num_classes: int = 1000  # output classes; 0 removes the head and the model returns features
    classifier: str = "token"  # "token": the CLS token; "gap": mean of the patch tokens; "token_gap": both
    class_token: bool = True  # prepend a learned CLS token (Google's "gap" models have none)
    fc_norm: bool = False  # MAE style: final LayerNorm on the pooled vector instead of on every token
    representation_size: int | None = None  # width of the pre-logits layer (Linear + tanh); None = none
    dropout_rate: float = 0.0  # dropout after position embeddings, attention output and MLP layers
    attention_dropout_rate: float = 0.0  # dropout on the attention probabilities
    drop_path_rate: float = 0.0  # stochastic depth at the last block (linearly less before it)
    gelu_approximate: str = "none"  # MLP GELU: "none" = exact erf (timm, torchvision, MAE), "tanh" = Google's JAX ViT
    layer_scale_init: float | None = None  # LayerScale (DINOv2): per-channel gammas on each residual branch, from this
    num_register_tokens: int = 0  # DINOv2's "_reg" models: 4 learned tokens after CLS, without positions

    def __post_init__(self):
        # Refused here in one line each, before any layer is built.
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {self.classifier!r}: choose one of {', '.join(CLASSIFIERS)}")
        if self.classifier == "token_gap" and not self.class_token:
            raise ValueError("classifier 'token_gap' reads the CLS token, but class_token is False: use 'gap'")
        if self.gelu_approximate not in GELU_APPROXIMATIONS:
            choices = ", ".join(GELU_APPROXIMATIONS)
            raise ValueError(f"unknown gelu_approximate {self.gelu_approximate!r}: choose one of {choices}")
        if self.img_size % self.patch_size != 0:
            raise ValueError(
                f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}: choose an image size "
                f"that is a multiple of {self.patch_size} (e.g. {self.img_size // self.patch_size * self.patch_size})"
            )
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}: choose a number of "
                "heads that divides the width"
            )

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2


class PatchGrid(nn.Module):
    """What every patch embedding shares: the image size it accepts and the grid of patches it makes.

    `PatchEmbedding` below cuts pixels into patches; the hybrid's `vitlab.hybrid.HybridEmbedding` makes
    its tokens from ResNet features on the same grid.
    """

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int):
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2

    def check_input(self, x: torch.Tensor) -> None:
        """A clear error, before any computation, for images the model was not built for."""
        if x.ndim != 4 or x.shape[1] != self.in_chans or x.shape[2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"expected images of shape (B, {self.in_chans}, {self.img_size}, {self.img_size}), got "
                f"{tuple(x.shape)}: resize the input, or build the model with img_size={x.shape[-1]} "
                f"/ in_chans={x.shape[1] if x.ndim == 4 else '?'} (position embeddings are resized "
                "when a checkpoint is loaded)"
            )


class PatchEmbedding(PatchGrid):
    """Split an image into non-overlapping P x P patches and project each to D dimensions.

    A Conv2d with kernel = stride = P is exactly "flatten each patch, multiply by one matrix":
    `forward_einops` computes the same thing the way the paper describes it.
    """

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, hidden_size: int):
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans)
        self.proj = nn.Conv2d(in_chans, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.to_patches = Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.proj(x)  # (B, D, H/P, W/P)
        return rearrange(x, "b d gh gw -> b (gh gw) d")  # (B, N, D)

    def linear_weight(self) -> torch.Tensor:
        """The conv kernel as the (D, P*P*C) matrix that multiplies flattened patches."""
        return rearrange(self.proj.weight, "d c p1 p2 -> d (p1 p2 c)")

    def forward_einops(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's view: flatten patches, then one linear projection. Equal to `forward`."""
        self.check_input(x)
        patches = self.to_patches(x)  # (B, N, P*P*C)
        return F.linear(patches, self.linear_weight(), self.proj.bias)  # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention: softmax(Q K^T / sqrt(d_head)) V, per head, then one projection."""

    def __init__(self, *, hidden_size: int, num_heads: int, attention_dropout: float = 0.0, dropout: float = 0.0):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scale = self.head_dim**-0.5
        self.to_qkv = nn.Linear(hidden_size, 3 * hidden_size)  # q, k and v in one matmul
        self.attn_drop = nn.Dropout(attention_dropout)
        self.to_out = nn.Linear(hidden_size, hidden_size)
        self.out_drop = nn.Dropout(dropout)
        # The fused kernel (flash / memory-efficient) never materialises the T x T matrix.
        self.fused_attn = hasattr(F, "scaled_dot_product_attention")

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        qkv = self.to_qkv(x)  # (B, T, 3D)
        q, k, v = rearrange(qkv, "b t (three h d) -> three b h t d", three=3, h=self.num_heads)  # (B, h, T, d)
        probs = None
        if self.fused_attn and not return_attention:
            dropout_p = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, h, T, d)
        else:
            scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, h, T, T)
            probs = scores.float().softmax(dim=-1).to(v.dtype)  # in float32 under autocast too, as fused kernels do
            out = self.attn_drop(probs) @ v  # (B, h, T, d)
        out = rearrange(out, "b h t d -> b t (h d)")  # (B, T, D)
        out = self.out_drop(self.to_out(out))
        return (out, probs) if return_attention else out


class MLP(nn.Module):
    """The position-wise feed-forward block: Linear -> GELU -> Dropout -> Linear -> Dropout.

    `gelu_approximate="tanh"` is Google's GELU, "none" the exact erf form (see the module docstring).
    """

    def __init__(self, *, hidden_size: int, mlp_dim: int, dropout: float = 0.0, gelu_approximate: str = "none"):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_dim)
        self.act = nn.GELU(approximate=gelu_approximate)
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(mlp_dim, hidden_size)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class LayerScale(nn.Module):
    """Multiply each channel of a residual branch by a learned gamma (CaiT; DINOv2's `ls1` / `ls2`).

    Starting the gammas small (DINOv2: 1e-5) starts every block close to the identity.
    """

    def __init__(self, hidden_size: int, init_value: float):
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((hidden_size,), float(init_value)))  # (D,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma  # (B, T, D)


class EncoderBlock(nn.Module):
    """x + MSA(LN(x)), then x + MLP(LN(x)): the paper's equations (2) and (3).

    LayerNorm comes *before* each sub-block (pre-norm), which keeps the residual path an identity
    and lets deep stacks train without warm-up tricks. With `layer_scale_init` (DINOv2) each branch
    is scaled per channel before it is added: x + gamma * MSA(LN(x)).
    """

    def __init__(self, cfg: ModelConfig, drop_path: float = 0.0):
        super().__init__()
        scale = cfg.layer_scale_init
        self.ls1 = LayerScale(cfg.hidden_size, scale) if scale is not None else nn.Identity()
        self.ls2 = LayerScale(cfg.hidden_size, scale) if scale is not None else nn.Identity()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=LAYER_NORM_EPS)
        self.attn = Attention(
            hidden_size=cfg.hidden_size,
            num_heads=cfg.num_heads,
            attention_dropout=cfg.attention_dropout_rate,
            dropout=cfg.dropout_rate,
        )
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=LAYER_NORM_EPS)
        self.mlp = MLP(
            hidden_size=cfg.hidden_size,
            mlp_dim=cfg.mlp_dim,
            dropout=cfg.dropout_rate,
            gelu_approximate=cfg.gelu_approximate,
        )
        self.drop_path = drop_path  # stochastic depth: drop the whole residual branch per sample

    def _residual(self, branch: torch.Tensor) -> torch.Tensor:
        if self.drop_path == 0.0 or not self.training:
            return branch
        # Keep each sample's branch with probability 1 - p, scaled to keep its mean (torchvision's
        # `stochastic_depth(mode="row")`, computed the same way).
        survival = 1.0 - self.drop_path
        keep = torch.empty((branch.shape[0], 1, 1), dtype=branch.dtype, device=branch.device).bernoulli_(survival)
        return branch * (keep / survival if survival > 0.0 else keep)  # (B, T, D)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if return_attention:
            attn_out, probs = self.attn(self.norm1(x), return_attention=True)
        else:
            attn_out, probs = self.attn(self.norm1(x)), None
        x = x + self._residual(self.ls1(attn_out))  # (B, T, D)
        x = x + self._residual(self.ls2(self.mlp(self.norm2(x))))  # (B, T, D)
        return (x, probs) if return_attention else x


class Encoder(nn.Module):
    """L encoder blocks and the final LayerNorm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        # Stochastic depth grows linearly with depth, as in DeiT and timm.
        rates = [cfg.drop_path_rate * i / max(cfg.num_layers - 1, 1) for i in range(cfg.num_layers)]
        self.blocks = nn.ModuleList(EncoderBlock(cfg, drop_path=r) for r in rates)
        # With "fc_norm" the final LayerNorm is applied to the pooled vector instead (MAE style).
        self.norm = nn.Identity() if cfg.fc_norm else nn.LayerNorm(cfg.hidden_size, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class VisionTransformer(nn.Module):
    """ViT: patch embedding, CLS token, position embeddings, encoder, pooling and head."""

    def __init__(self, cfg: ModelConfig, patch_embed: nn.Module | None = None):
        super().__init__()
        if getattr(cfg, "resnet_layers", None) and patch_embed is None:  # vitlab's hybrid presets
            raise ValueError("a hybrid config (resnet_layers) needs its ResNet stem: build it with vitlab.create_model")
        self.cfg = cfg
        # Or another module with the same interface: the hybrid's ResNet stem (vitlab/hybrid.py), images -> (B, N, D).
        embed = dict(img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans)
        self.patch_embed = PatchEmbedding(**embed, hidden_size=cfg.hidden_size) if patch_embed is None else patch_embed
        # Tokens in front of the patches: CLS, then DINOv2's registers. Only CLS has a position.
        self.num_prefix_positions = 1 if cfg.class_token else 0
        self.num_prefix_tokens = self.num_prefix_positions + cfg.num_register_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size)) if cfg.class_token else None
        registers = cfg.num_register_tokens
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, cfg.hidden_size)) if registers else None
        num_positions = self.num_prefix_positions + self.patch_embed.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, cfg.hidden_size))  # (1, 1 + N, D)
        self.pos_drop = nn.Dropout(cfg.dropout_rate)
        self.encoder = Encoder(cfg)
        pooled = 2 * cfg.hidden_size if cfg.classifier == "token_gap" else cfg.hidden_size  # "token_gap": CLS, mean
        self.fc_norm = nn.LayerNorm(pooled, eps=LAYER_NORM_EPS) if cfg.fc_norm else nn.Identity()
        self.num_features = cfg.representation_size or pooled
        if cfg.representation_size:
            self.pre_logits = nn.Sequential(nn.Linear(pooled, cfg.representation_size), nn.Tanh())
        else:
            self.pre_logits = nn.Identity()
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.init_weights()

    # --- initialisation, as in Google's implementation and timm's "jax" scheme ---------------
    @torch.no_grad()
    def init_weights(self) -> None:
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                if module is self.head:
                    nn.init.zeros_(module.weight)  # a zero head starts fine-tuning from the features
                    nn.init.zeros_(module.bias)
                elif name.endswith("pre_logits.0"):
                    lecun_normal_(module.weight)
                    nn.init.zeros_(module.bias)
                else:
                    nn.init.xavier_uniform_(module.weight)
                    if ".mlp." in f".{name}.":
                        nn.init.normal_(module.bias, std=1e-6)
                    else:
                        nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.zeros_(self.cls_token)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)  # as DINOv2: distinct, yet almost zero

    # --- the forward pass ----------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images to the encoder's input tokens: patches, CLS token, position embeddings (and registers)."""
        x = self.patch_embed(x)  # (B, N, D)
        if self.cls_token is not None:
            cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
            x = torch.cat([cls, x], dim=1)  # (B, 1 + N, D)
        x = x + self.pos_embed  # (B, 1 + N, D)
        if self.register_tokens is not None:
            # DINOv2's registers (Darcet et al., 2023) go after CLS and carry no position.
            first = self.num_prefix_positions
            registers = self.register_tokens.expand(x.shape[0], -1, -1)  # (B, R, D)
            x = torch.cat([x[:, :first], registers, x[:, first:]], dim=1)  # (B, 1 + R + N, D)
        return self.pos_drop(x)  # (B, T, D)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the encoder and its final LayerNorm: (B, T, D)."""
        return self.encoder(self.embed(x))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """One vector per image: the CLS token, the mean over patch tokens (no prefix), or both side by side."""
        if self.cfg.classifier == "token":
            return tokens[:, 0]  # (B, D)
        patches = tokens[:, self.num_prefix_tokens :].mean(dim=1)  # (B, D)
        return torch.cat([tokens[:, 0], patches], dim=1) if self.cfg.classifier == "token_gap" else patches

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens and classify; `pre_logits=True` stops before the final Linear."""
        x = self.pre_logits(self.fc_norm(self.pool(tokens)))  # (B, num_features)
        return x if pre_logits else self.head(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def get_attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Attention probabilities of every layer: a list of L tensors (B, heads, T, T), rows sum to 1."""
        x = self.embed(x)
        maps = []
        for block in self.encoder.blocks:
            x, probs = block(x, return_attention=True)
            maps.append(probs)
        return maps

    def set_fused_attention(self, enabled: bool) -> None:
        """Choose the fused kernel or the readable manual path in every layer."""
        for block in self.encoder.blocks:
            block.attn.fused_attn = enabled

    def set_gelu_approximate(self, approximate: str) -> None:
        """Switch every MLP between the exact GELU ("none") and Google's tanh approximation ("tanh")."""
        self.cfg = dataclasses.replace(self.cfg, gelu_approximate=approximate)  # the copy checks the value
        for block in self.encoder.blocks:
            block.mlp.act.approximate = approximate

    def get_num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a zero-initialised one for `num_classes` (0 removes it)."""
        self.cfg.num_classes = num_classes
        device = self.pos_embed.device
        self.head = nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def resize_pos_embed_(
        self,
        img_size: int,
        mode: str = "bilinear",
        antialias: bool = False,
        align_corners: bool = False,
        scale_offset: float = 0.0,
    ) -> None:
        """Rebuild the model for a new image size in place, interpolating the position grid."""
        patch_embed = self.patch_embed
        if img_size % patch_embed.patch_size != 0:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_embed.patch_size}")
        new_grid = img_size // patch_embed.patch_size
        with torch.no_grad():
            resized = resize_pos_embed(
                self.pos_embed, new_grid, self.num_prefix_positions, mode, antialias, align_corners, scale_offset
            )
        self.pos_embed = nn.Parameter(resized)
        patch_embed.img_size, patch_embed.grid_size, patch_embed.num_patches = img_size, new_grid, new_grid**2
        self.cfg.img_size = img_size


def resize_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: int,
    num_prefix_tokens: int = 1,
    mode: str = "bilinear",
    antialias: bool = False,
    align_corners: bool = False,
    scale_offset: float = 0.0,
) -> torch.Tensor:
    """Interpolate learned position embeddings (1, prefix + g*g, D) to a new grid (1, prefix + G*G, D).

    The prefix (CLS) position is kept as it is; the g x g grid of patch positions is treated as a
    D-channel image and resized with `torch.nn.functional.interpolate` (the paper's Section 3.2).
    Where the new grid samples the old one is the only difference between the two common ways:
    - `align_corners=True`: the corner positions of both grids coincide, so new position i reads
      old position i * (g - 1) / (G - 1). This is Google's way (`scipy.ndimage.zoom(order=1)` in
      its fine-tuning code, and so in the paper's 384 px results).
    - `align_corners=False` (the default): both grids cover the same square of pixels, so new
      position i reads old position (i + 0.5) * g / G - 0.5. This is timm's way for `.npz` files.
    At 224 -> 384 px (14 -> 24 positions a side) the two tables differ by a few percent (relative
    RMS), more the less smooth the table is.
    DINOv2's tables (37 x 37, learned at 518 px) are resized bicubically. Meta's hub code passes a
    scale factor of (G + 0.1) / g instead of the size G (`scale_offset=0.1`), so new position i reads
    old position (i + 0.5) * g / (G + 0.1) - 0.5: about 1% away from the plain bicubic resize.
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old_grid = math.isqrt(grid.shape[1])
    if old_grid * old_grid != grid.shape[1]:
        raise ValueError(f"position embedding has {grid.shape[1]} patch positions, which is not a square grid")
    if old_grid == new_grid:
        return pos_embed
    grid = rearrange(grid, "1 (h w) d -> 1 d h w", h=old_grid)  # (1, D, g, g)
    if scale_offset:
        factor = (new_grid + scale_offset) / old_grid
        where = dict(scale_factor=(factor, factor))  # F.interpolate's output: floor(g * factor) = G
    else:
        where = dict(size=(new_grid, new_grid))
    grid = F.interpolate(grid.float(), mode=mode, antialias=antialias, align_corners=align_corners, **where)
    grid = rearrange(grid, "1 d h w -> 1 (h w) d").to(pos_embed.dtype)  # (1, G*G, D)
    return torch.cat([prefix, grid], dim=1)


def lecun_normal_(tensor: torch.Tensor) -> torch.Tensor:
    """LeCun normal (JAX's default for kernels): truncated normal with variance 1 / fan_in."""
    fan_in = tensor[0].numel()
    # The factor corrects the variance lost by truncating at two standard deviations.
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    return nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)
