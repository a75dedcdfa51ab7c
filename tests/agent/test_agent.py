"""Agent-level behaviour: imagination's outputs and gradients, and torch.compile matching eager mode."""

from __future__ import annotations

import copy
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.tiny import TINY_AGENT, TINY_MODEL, make_batch
from worldmodels.agent.agent import Agent
from worldmodels.strategies.compile import compile_steps
from worldmodels.strategies.cpu import use_cpu_speedups

MODEL, AGENT = {**TINY_MODEL, "actor_layers": 2}, TINY_AGENT
OBS = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (3,), np.float32)})


@pytest.mark.parametrize("discrete", [False, True])
def test_imagination_is_time_major_and_only_the_actor_outputs_carry_gradients(discrete):
    torch.manual_seed(0)
    space = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1, 1, (2,), np.float32)
    agent = Agent(OBS, space, MODEL, AGENT)
    rssm = agent.wm.dynamics
    n, horizon = 7, 4
    start = {"deter": torch.randn(n, rssm.deter), "stoch": torch.nn.functional.one_hot(torch.randint(0, 4, (n, 4)), 4).float()}
    feats, actions, params = agent.imagine(start, horizon)
    assert feats.shape == (horizon + 1, n, rssm.feat_dim) and actions.shape[:2] == (horizon, n)
    assert params.shape == (horizon, n, 3 if discrete else 4)
    torch.testing.assert_close(feats[0], rssm.feat(start))  # step 0 is the start state itself
    # Every imagined state's stoch half is one-hot: one 1 per variable.
    stoch = feats[..., rssm.deter:].unflatten(-1, (rssm.stoch, rssm.classes))
    assert torch.equal(stoch.sum(-1), torch.ones(horizon + 1, n, rssm.stoch)) and set(stoch.unique().tolist()) == {0.0, 1.0}
    assert not feats.requires_grad and not actions.requires_grad and params.requires_grad
    # The stored outputs are the actor's outputs on the states acted in (the policy loss reuses them).
    torch.testing.assert_close(params, agent.actor.params(feats[:-1]))
    params.sum().backward()
    assert all(p.grad is not None for p in agent.actor.parameters())
    assert all(p.grad is None for p in agent.wm.parameters()) and all(p.grad is None for p in agent.critic.parameters())


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_steps_compute_the_same_update_as_eager():
    """compile_steps only changes how the step functions run: with inductor drawing its random numbers
    like eager mode, one update gives the same losses and the same new weights."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = use_cpu_speedups(Agent(OBS, gym.spaces.Box(-1, 1, (2,), np.float32), MODEL, AGENT))  # as run.compile=auto on a CPU
    compiled = copy.deepcopy(eager)
    compile_steps(compiled)
    batch = make_batch()
    with torch._inductor.config.patch(fallback_random=True):
        torch.manual_seed(3)
        m_eager = eager.train_step(batch)
        torch.manual_seed(3)
        m_compiled = compiled.train_step(batch)
    for key in ("loss/dec", "loss/rew", "loss/dyn", "loss/policy", "loss/value", "loss/total"):
        assert m_compiled[key] == pytest.approx(m_eager[key], rel=1e-4, abs=1e-6), key
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
