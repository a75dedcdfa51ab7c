"""`Linear` with the CPU products: oneDNN for big float32 layers (matmul.py) and the one-hot gather for imagined
features (onehot_feat.py). The CPU strategy (worldmodels/strategies/cpu.py) turns every `Linear` of a model into one."""

from __future__ import annotations

import torch

from worldmodels.cpu.matmul import linear
from worldmodels.cpu.onehot_feat import OneHotFeat, onehot_feat_linear
from worldmodels.models.nets import Linear


class CpuLinear(Linear):
    """The same parameters and function as `Linear`; it also takes `OneHotFeat` features."""

    def forward(self, x: torch.Tensor | OneHotFeat) -> torch.Tensor:
        if isinstance(x, OneHotFeat):  # imagined features: gather the one-hot half's weights
            return onehot_feat_linear(x, self.weight, self.bias)
        return linear(x, self.weight, self.bias)


def use_cpu_linears(module: torch.nn.Module) -> torch.nn.Module:
    """Turn every plain `Linear` inside `module` into a `CpuLinear`, in place (the same parameter tensors)."""
    for sub in module.modules():
        if type(sub) is Linear:
            sub.__class__ = CpuLinear
    return module
