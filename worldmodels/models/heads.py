"""Prediction heads: vector encoder/decoder, two-hot regression, Bernoulli continue, policy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worldmodels.models.conv import ConvDecoder, ConvEncoder
from worldmodels.models.distributions import DiscretePolicy, NormalPolicy
from worldmodels.models.nets import MLP, Linear
from worldmodels.models.transforms import symexp, symlog, twohot_loss, twohot_mean


class VectorEncoder(nn.Module):
    """symlog, then an MLP over the concatenation of every vector observation key."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], units: int, layers: int):
        super().__init__()
        self.keys = sorted(shapes)
        inp = sum(int(torch.Size(shapes[k]).numel()) for k in self.keys)
        self.net = MLP(inp, units, layers)
        self.out_dim = self.net.out_dim

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([obs[k].reshape(*obs[k].shape[:2], -1).float() for k in self.keys], -1)
        return self.net(symlog(x))


class VectorDecoder(nn.Module):
    """Reconstructs every vector key in symlog space; the loss is the squared error summed over dims."""

    def __init__(self, feat_dim: int, shapes: dict[str, tuple[int, ...]], units: int, layers: int):
        super().__init__()
        self.shapes = {k: tuple(shapes[k]) for k in sorted(shapes)}
        self.sizes = [int(torch.Size(s).numel()) for s in self.shapes.values()]
        self.net = MLP(feat_dim, units, layers)
        self.out = Linear(self.net.out_dim, sum(self.sizes))

    def forward(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predictions in symlog space, each (B, T, *shape)."""
        parts = self.out(self.net(feat)).split(self.sizes, -1)
        return {k: p.reshape(*feat.shape[:-1], *s) for (k, s), p in zip(self.shapes.items(), parts)}

    def loss(self, feat: torch.Tensor, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T) summed symlog-MSE over every key and dimension."""
        total = 0.0
        for key, pred in self.forward(feat).items():
            err = (pred - symlog(obs[key].float())).square()
            total = total + err.reshape(*err.shape[:2], -1).sum(-1)
        return total


def split_keys(shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Vector keys (1-D) and image keys (H, W, C)."""
    vectors = {k: tuple(v) for k, v in shapes.items() if len(v) == 1}
    images = {k: tuple(v) for k, v in shapes.items() if len(v) == 3}
    return vectors, images


class ObsEncoder(nn.Module):
    """Vector keys through one MLP, each image key through a CNN; the embeddings are concatenated."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], units: int, layers: int, depth: int):
        super().__init__()
        vectors, images = split_keys(shapes)
        self.vector = VectorEncoder(vectors, units, layers) if vectors else None
        self.images = nn.ModuleDict({k: ConvEncoder(s, depth) for k, s in sorted(images.items())})
        self.out_dim = (self.vector.out_dim if self.vector else 0) + sum(e.out_dim for e in self.images.values())

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.vector(obs)] if self.vector is not None else []
        parts += [enc(obs[k]) for k, enc in self.images.items()]
        return torch.cat(parts, -1)


class ObsDecoder(nn.Module):
    """Reconstructs every observation key: symlog MSE for vectors, MSE for images (summed per step)."""

    def __init__(self, feat_dim: int, shapes: dict[str, tuple[int, ...]], units: int, layers: int, depth: int):
        super().__init__()
        vectors, images = split_keys(shapes)
        self.vector = VectorDecoder(feat_dim, vectors, units, layers) if vectors else None
        self.images = nn.ModuleDict({k: ConvDecoder(feat_dim, s, depth) for k, s in sorted(images.items())})

    def loss(self, feat: torch.Tensor, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        total = self.vector.loss(feat, obs) if self.vector is not None else 0.0
        for key, dec in self.images.items():
            total = total + dec.loss(feat, obs[key])
        return total

    def predict(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predictions in observation units: vectors symexp'd back, images as 0..255 pixel values."""
        out = {k: symexp(v) for k, v in self.vector(feat).items()} if self.vector is not None else {}
        out.update({k: dec.to_pixels(dec(feat)) for k, dec in self.images.items()})
        return out


class TwoHotHead(nn.Module):
    """Scalar regression by classification over symexp-spaced bins (reward and critic heads)."""

    def __init__(self, inp: int, units: int, layers: int, bins: torch.Tensor):
        super().__init__()
        self.net = MLP(inp, units, layers)
        self.out = Linear(self.net.out_dim, bins.shape[0], zero=True)  # zero-init: predictions start at 0
        self.register_buffer("bins", bins, persistent=False)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """Logits (..., bins), float32 also under bf16 autocast: the two-hot losses and means take them."""
        return self.out(self.net(feat)).float()

    def mean(self, feat: torch.Tensor) -> torch.Tensor:
        return twohot_mean(self(feat), self.bins)

    def loss(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return twohot_loss(self(feat), target, self.bins)


class BinaryHead(nn.Module):
    """Bernoulli head for the continue flag."""

    def __init__(self, inp: int, units: int, layers: int):
        super().__init__()
        self.net = MLP(inp, units, layers)
        self.out = Linear(self.net.out_dim, 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(feat)).squeeze(-1).float()

    def prob(self, feat: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(feat))

    def loss(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self(feat), target, reduction="none")


class Actor(nn.Module):
    """Policy head: a categorical over one-hot actions (discrete) or a bounded-std normal (continuous)."""

    def __init__(self, inp: int, action_dim: int, discrete: bool, units: int, layers: int):
        super().__init__()
        self.discrete = discrete
        self.net = MLP(inp, units, layers)
        # Small output init (official `outscale: 0.01`): the first policy is near uniform / near zero mean.
        self.out = Linear(self.net.out_dim, action_dim if discrete else 2 * action_dim, scale=0.01)

    def forward(self, feat: torch.Tensor) -> DiscretePolicy | NormalPolicy:
        return self.dist(self.params(feat))

    def params(self, feat: torch.Tensor) -> torch.Tensor:
        """Raw policy outputs (logits, or mean and std pre-activations): small enough to keep and stack;
        float32 also under bf16 autocast, so the distributions and actions are float32."""
        return self.out(self.net(feat)).float()

    def dist(self, params: torch.Tensor) -> DiscretePolicy | NormalPolicy:
        return DiscretePolicy(params) if self.discrete else NormalPolicy(params)
