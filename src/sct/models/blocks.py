"""Building blocks shared by every model: MLP, DropPath, the pre-norm transformer layer, patch embedding."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from sct.models.attention.rollout import RESIDUAL
from sct.models.checkpointing import checkpointed, recomputed_mlp


class Mlp(nn.Module):
    """Two-layer MLP with GELU: ``(..., C) -> (..., C_out)``."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample (per clip) with probability ``p``.

    ``x``: ``(R * S, ...)`` with the ``R = rows_per_sample`` rows of each of the S samples contiguous
    (frames ``(b t)``, chunks ``(b t k)``): one draw per sample, shared by all of its rows, so a clip
    loses a layer as a whole, never single frames or chunks.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, rows_per_sample: int = 1) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0] // rows_per_sample,) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.repeat_interleave(rows_per_sample, dim=0) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic-depth rate of each of ``depth`` layers: linear from 0 to ``rate`` (timm's schedule)."""
    return [rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer (ViT Eq. 2): ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``.

    ``attention`` is any module mapping ``(..., N, C)`` to ``(..., N, C)``; it decides what the
    leading dimensions mean (frames, chunks, clips). ``residual=False`` drops the attention residual,
    for layers whose output lives on other tokens than their input (stochastic depth then spares it).
    ``attn_norm=False`` hands the raw input to attention modules that normalise internally
    (TimeSformer's divided attention).
    ``grad_checkpointing`` (see ``models.checkpointing``) keeps only the layer's input for the backward
    pass and recomputes the rest there, when training with autograd.
    """

    def __init__(
        self,
        dim: int,
        attention: nn.Module,
        mlp_dim: int,
        drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        residual: bool = True,
        attn_norm: bool = True,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps) if attn_norm else nn.Identity()
        self.attn = attention
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_dim, drop=drop)
        self.drop_path = DropPath(drop_path)
        self.residual = residual
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, rows_per_sample: int = 1, **attn_kwargs) -> torch.Tensor:
        """``x``: ``(..., N, C)`` -> ``(..., N, C)``; ``attn_kwargs`` go to the attention module.

        ``rows_per_sample``: rows of dim 0 per sample, for the per-sample stochastic depth (``DropPath``).
        Without the attention residual, stochastic depth acts on the MLP branch only: dropping the
        attention output would zero the whole token stream.
        """
        if self._checkpointing():
            return checkpointed(self._forward, x, rows_per_sample, **attn_kwargs)
        return self._forward(x, rows_per_sample, **attn_kwargs)

    def _checkpointing(self) -> bool:
        """Whether this call keeps only the layer's input for backward (checkpointing on, and a gradient wanted)."""
        return self.grad_checkpointing and self.training and torch.is_grad_enabled()

    def _forward(self, x: torch.Tensor, rows_per_sample: int, **attn_kwargs) -> torch.Tensor:
        a = self.attn(self.norm1(x), **attn_kwargs)
        x = x + self.drop_path(a, rows_per_sample) if self.residual else a
        return x + self.drop_path(self._mlp(self.norm2(x)), rows_per_sample)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        # Only checkpointed layers are recomputed one at a time in backward, where the MLP's hidden activations
        # would be the largest thing held; dropout would need its masks replayed, so it keeps the plain path.
        if self._checkpointing() and self.mlp.drop.p == 0:
            return recomputed_mlp(self.mlp, x)
        return self.mlp(x)

    def residual_weight(self) -> float:
        """Rollout's share of the residual path: 0.5 with the attention residual, 0 without."""
        return RESIDUAL if self.residual else 0.0

    def relevance(self, r: torch.Tensor, reading: str = "keys") -> torch.Tensor:
        """Rollout relevance ``(T, N)`` of one clip back through this layer's attention (see its ``relevance``)."""
        return self.attn.relevance(r, self.residual_weight(), reading)


WEIGHT_INITS = ("xavier", "trunc_normal")


def parameters_named(module: nn.Module, leaf_names: tuple[str, ...]) -> set[str]:
    """Full names of the parameters of ``module`` whose last name component is one of ``leaf_names``.

    Models build their ``no_weight_decay()`` from it: the tokens and embeddings they own by name.
    """
    return {name for name, _ in module.named_parameters() if name.rsplit(".", 1)[-1] in leaf_names}


def init_weights(model: nn.Module, scheme: str) -> None:
    """Initialise every ``nn.Linear`` of ``model`` (biases to zero) and reset its LayerNorms.

    ``trunc_normal`` is timm's ViT/DeiT init, std 0.02 whatever the width: calibrated for 768-wide
    layers, it shrinks each residual branch of a 32-128-wide model to ~1-10% of its input, and a small
    model trained from scratch then sits at chance for hundreds of steps. ``xavier`` (uniform, as the
    original JAX ViT) scales with fan-in and fan-out.
    """
    if scheme not in WEIGHT_INITS:
        raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {scheme!r}")
    for module in model.modules():
        if isinstance(module, nn.Linear):
            if scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class PatchEmbed(nn.Module):
    """Non-overlapping ``p x p`` patches, linearly embedded (Eq. 1's ``E``), as a strided conv.

    ``(B, 3, H, W) -> (B, H/p, W/p, C)``; H and W must be multiples of ``p`` (callers pad).
    """

    def __init__(self, patch_size: int, dim: int, in_chans: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(x), "b c h w -> b h w c")
