"""Convolutional encoder and decoder for image observations (DreamerV3's CNN, stride-2 variant).

Images are (..., H, W, C) uint8. The encoder halves the resolution with each stride-2 convolution
(RMS-normalised over channels, SiLU) down to 4x4; the decoder mirrors it with transposed convolutions.
Channel widths are `depth` times the multipliers, so the size presets scale both.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from worldmodels.models.nets import Linear, RMSNorm, init_linear_


def _stages(shape: tuple[int, int, int]) -> int:
    height, width, _ = shape
    if height != width or height < 8 or height & (height - 1):
        raise ValueError(f"image shape {shape} is not supported: use square images with a power-of-two side >= 8 (e.g. 64x64)")
    return int(math.log2(height // 4))


def _channels(depth: int, stages: int, mults: tuple[int, ...]) -> list[int]:
    mults = tuple(mults) + (mults[-1],) * max(0, stages - len(mults))
    return [depth * m for m in mults[:stages]]


class ChannelNorm(nn.Module):
    """RMSNorm over the channel axis of (N, C, H, W) maps."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = RMSNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _conv_init(conv: nn.Module) -> nn.Module:
    """The official fan-in, kernel area x input channels, for convolutions and transposed ones alike
    (the official transposed convolution is a convolution over a zero-stuffed input)."""
    weight = conv.weight  # Conv2d (out, in, k, k); ConvTranspose2d (in, out, k, k)
    in_channels = weight.shape[1] if isinstance(conv, nn.Conv2d) else weight.shape[0]
    init_linear_(weight, in_channels * weight[0, 0].numel())
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class ConvEncoder(nn.Module):
    """(..., H, W, C) uint8 -> (..., out_dim) features."""

    def __init__(self, shape: tuple[int, int, int], depth: int, mults: tuple[int, ...] = (2, 3, 4, 4)):
        super().__init__()
        self.shape = tuple(shape)
        stages = _stages(self.shape)
        layers, inp = [], self.shape[-1]
        for out in _channels(depth, stages, mults):
            layers += [_conv_init(nn.Conv2d(inp, out, 4, 2, 1)), ChannelNorm(out), nn.SiLU()]
            inp = out
        self.net = nn.Sequential(*layers)
        self.out_dim = inp * 4 * 4

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        lead = image.shape[:-3]
        x = image.reshape(-1, *self.shape).float() / 255.0 - 0.5
        x = self.net(x.permute(0, 3, 1, 2))
        return x.reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """(..., F) features -> (..., H, W, C) image predictions centred at 0 (pixel / 255 - 0.5)."""

    def __init__(self, feat_dim: int, shape: tuple[int, int, int], depth: int, mults: tuple[int, ...] = (2, 3, 4, 4)):
        super().__init__()
        self.shape = tuple(shape)
        stages = _stages(self.shape)
        channels = _channels(depth, stages, mults)[::-1]
        self.start = channels[0]
        self.inp = Linear(feat_dim, self.start * 4 * 4)
        layers = []
        for i in range(stages):
            last = i == stages - 1
            out = self.shape[-1] if last else channels[i + 1]
            layers.append(_conv_init(nn.ConvTranspose2d(channels[i], out, 4, 2, 1)))
            if not last:
                layers += [ChannelNorm(out), nn.SiLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        lead = feat.shape[:-1]
        x = self.inp(feat).reshape(-1, self.start, 4, 4)
        x = self.net(x).permute(0, 2, 3, 1)
        return x.reshape(*lead, *self.shape)

    def loss(self, feat: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Squared error summed over pixels and channels, per (B, T)."""
        target = image.float() / 255.0 - 0.5
        err = (self(feat) - target).square()
        return err.reshape(*err.shape[: feat.dim() - 1], -1).sum(-1)

    @staticmethod
    def to_pixels(pred: torch.Tensor) -> torch.Tensor:
        return ((pred + 0.5).clamp(0, 1) * 255.0).round()
