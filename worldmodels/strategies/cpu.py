"""The CPU strategy: products that keep the model's math but run faster on a CPU, swapped into a plain agent.

    every `Linear`              -> `CpuLinear`: big float32 layers through oneDNN, the one-hot gather on imagined features
    the RSSM                    -> `CpuRSSM`: deferred weight gradients, packed weights, the gather in the GRU's input
    the agent's imagined feats  -> `OneHotFeat` (deter, one-hot stoch, hot columns), which CpuLinear gathers from

Each swap changes the class (or one method) of the module that is there, so the parameters, and an optimiser built
on them, stay the same. tests/strategies/ (test_cpu_strategy.py) checks the swapped agent computes what the plain
one does. Not for `run.compile=update`: the deferred gradients keep Python lists that a whole-update graph cannot
hold (worldmodels/strategies/compile.py uses the plain agent there).
"""

from __future__ import annotations

from typing import Any

import torch

from worldmodels.cpu.linear import use_cpu_linears
from worldmodels.cpu.onehot_feat import OneHotFeat
from worldmodels.cpu.rssm import CpuRSSM
from worldmodels.dynamics.rssm import RSSM


def onehot_features(state: dict[str, torch.Tensor]) -> OneHotFeat:
    """An imagined state's features as deter, one-hot stoch and the sampled classes (Agent.imagined_features)."""
    return OneHotFeat.from_state(state["deter"], state["stoch"], state["classes"])


def use_cpu_speedups(agent: Any, defer_grads: bool = True) -> Any:
    """Apply the swaps above to `agent` in place (on a CPU; elsewhere it is left as it is) and return it.
    `defer_grads` (run.defer_grads): the RSSM's observe loop defers its weight gradients (cpu/deferred_grad.py)."""
    if agent.device.type != "cpu":
        return agent
    use_cpu_linears(agent)
    if type(agent.wm.dynamics) is RSSM:
        CpuRSSM.adopt(agent.wm.dynamics, defer_grads)
    agent.imagined_features = onehot_features
    return agent
