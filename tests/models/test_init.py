"""Initial weight scale of every layer at size1m against the official DreamerV3 initialiser.

The official initialiser (embodied/jax/nets.py, `Initializer('trunc_normal', 'in')`) draws a truncated
normal with std sqrt(1 / fan_in), then multiplies by the layer's `outscale`. fan_in is the product of all
kernel dimensions but the last: a dense layer's input width, a block layer's WHOLE input width (blocks x
per-block input), a convolution's kernel area x input channels. The expected fan-ins below are written
out from the official network definitions (dreamerv3/rssm.py), not read from this package's layers.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.tiny import TINY_AGENT
from worldmodels.agent.agent import Agent

SIZE1M = {"deter": 512, "hidden": 64, "stoch": 32, "classes": 4, "blocks": 8, "units": 64, "depth": 4,
          "enc_layers": 3, "dec_layers": 3, "head_layers": 1, "actor_layers": 3, "critic_layers": 3}


def expected_std(name: str, shape: tuple[int, ...], m: dict[str, int], embed: int, feat: int) -> float:
    """std = outscale * sqrt(1 / fan_in) of the official layer that `name` stands for."""
    deter, hidden, blocks = m["deter"], m["hidden"], m["blocks"]
    official_fan = {
        # dynhid0: BlockLinear over concat(deter block, dynin0..2 outputs) in each of the 8 blocks.
        "wm.dynamics.gru_hidden.weight": deter + blocks * 3 * hidden,
        "wm.dynamics.gru_hidden_shared.weight": deter + blocks * 3 * hidden,
        # dyngru: BlockLinear over the deter-wide hidden layer.
        "wm.dynamics.gru_gates.weight": deter,
        # obs0: Linear over concat(deter, tokens).
        "wm.dynamics.post_deter.weight": deter + embed,
        "wm.dynamics.post_embed.weight": deter + embed,
        "wm.dynamics.in_deter.0.weight": deter,
        "wm.dynamics.in_stoch.0.weight": m["stoch"] * m["classes"],
        "wm.dynamics.prior_net.0.0.weight": deter,
        "wm.dynamics.prior_net.1.0.weight": hidden,
        "wm.dynamics.post_out.weight": hidden,
        "wm.dynamics.prior_out.weight": hidden,
    }
    if name in official_fan:
        return math.sqrt(1.0 / official_fan[name])
    if name.startswith(("wm.reward.out.", "critic.out.", "slow_critic.out.")):
        return 0.0  # outscale 0.0: rewhead and value start at exactly zero
    if len(shape) == 4:  # convolutions: kernel area x input channels, transposed ones too (official Conv2D)
        in_channels = shape[1] if ".encoder." in name else shape[0]
        return math.sqrt(1.0 / (in_channels * shape[2] * shape[3]))
    fan_in = shape[1]  # dense layers: the input width
    if name == "actor.out.weight":
        return 0.01 * math.sqrt(1.0 / fan_in)  # policy outscale 0.01 multiplies the weights
    return math.sqrt(1.0 / fan_in)


def test_every_layer_at_size1m_has_the_official_initial_std():
    obs = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (17,), np.float32),
                           "image": gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)})
    act = gym.spaces.Box(-1, 1, (6,), np.float32)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        agent = Agent(obs, act, SIZE1M, {**TINY_AGENT, "bins": 255})
    embed, feat = agent.wm.encoder.out_dim, agent.wm.dynamics.feat_dim
    checked = 0
    for name, param in agent.named_parameters(remove_duplicate=False):
        if param.dim() < 2:  # biases (zero) and norm scales (one)
            expected = 1.0 if name.endswith(".scale") else 0.0
            assert torch.all(param == expected), name
            continue
        want = expected_std(name, tuple(param.shape), SIZE1M, embed, feat)
        got = param.float().std().item()
        if want == 0.0:
            assert got == 0.0, name
        else:
            # A sample std over n weights has a relative error of about 1 / sqrt(2n).
            tol = max(0.03, 5.0 / math.sqrt(2 * param.numel()))
            assert got == pytest.approx(want, rel=tol), f"{name}: std {got:.5f}, official {want:.5f}"
            bound = 2 * want / 0.8796 * 1.0001  # truncated at 2 std of the normal before truncation
            assert param.abs().max().item() <= bound, f"{name}: not truncated at 2 std"
        checked += 1
    assert checked > 30
    # The figure the review measured: gru_gates 0.044 (was 0.125).
    assert agent.wm.dynamics.gru_gates.weight.std().item() == pytest.approx(0.0442, rel=0.03)
