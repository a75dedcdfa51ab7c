"""Linear layers through a cached packed weight: the values and gradients of F.linear, repacked on change."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F

from tests.tiny import assert_same_gradients, observe_loss
from worldmodels.cpu import matmul, packed_linear
from worldmodels.cpu.packed_linear import available, new_handle
from worldmodels.cpu.rssm import CpuRSSM
from worldmodels.dynamics.rssm import RSSM

pytestmark = pytest.mark.skipif(not available(), reason="this PyTorch build cannot pack oneDNN linear weights")


class Owner:
    """Anything that can own a cache slot (a module in the library)."""


def test_values_and_gradients_match_f_linear():
    torch.manual_seed(0)
    owner = Owner()
    handle = new_handle(owner)
    x = torch.randn(16, 24, requires_grad=True)
    w = torch.randn(10, 24, requires_grad=True)
    b = torch.randn(10, requires_grad=True)
    g = torch.linspace(-1, 1, 160).reshape(16, 10)
    y = packed_linear.packed_linear(x, w, b, handle)
    ref = F.linear(x, w, b)
    torch.testing.assert_close(y, ref)
    for ours, want in zip(torch.autograd.grad(y, [x, w, b], g), torch.autograd.grad(ref, [x, w, b], g)):
        torch.testing.assert_close(ours, want)


def test_weight_written_in_place_or_replaced_is_repacked():
    torch.manual_seed(0)
    owner = Owner()
    handle = new_handle(owner)
    x = torch.randn(4, 8)
    w = torch.randn(6, 8)
    torch.testing.assert_close(packed_linear.packed_linear(x, w, None, handle), x @ w.t())
    with torch.no_grad():
        w.mul_(-2.0)  # what an optimiser step does: same memory, new version
    torch.testing.assert_close(packed_linear.packed_linear(x, w.detach(), None, handle), x @ w.t())
    other = torch.randn(6, 8)  # another tensor behind the same handle
    torch.testing.assert_close(packed_linear.packed_linear(x, other, None, handle), x @ other.t())


def test_cache_slots_go_with_their_owner():
    owner = Owner()
    handle = new_handle(owner)
    packed_linear.packed_linear(torch.randn(2, 4), torch.randn(3, 4), None, handle)
    assert (handle, False) in packed_linear._cache
    del owner
    gc.collect()
    assert (handle, False) not in packed_linear._cache


def test_compiled_matches_eager():
    torch.manual_seed(0)
    owner = Owner()
    handle = new_handle(owner)
    w, b = torch.randn(12, 20), torch.randn(12)

    def f(x):
        return torch.nn.functional.silu(packed_linear.packed_linear(x, w, b, handle)).sum(-1)

    x = torch.randn(16, 20, requires_grad=True)
    eager_y = f(x)
    (eager_g,) = torch.autograd.grad(eager_y.sum(), x)
    compiled_y = torch.compile(f, dynamic=False)(x)
    (compiled_g,) = torch.autograd.grad(compiled_y.sum(), x)
    torch.testing.assert_close(compiled_y, eager_y)
    torch.testing.assert_close(compiled_g, eager_g)


def test_rssm_observe_with_packed_weights_has_plain_gradients(monkeypatch):
    """With MIN_MACS at 0 every dense loop layer of CpuRSSM goes through the packed path; the gradients are
    those of the plain RSSM."""
    monkeypatch.setattr(matmul, "MIN_MACS", 0)
    grads = []
    for defer in (False, True):
        torch.manual_seed(0)
        rssm = (CpuRSSM if defer else RSSM)(embed_dim=6, action_dim=3, deter=16, hidden=8, stoch=3, classes=4, blocks=4)
        embed = torch.randn(3, 5, 6)
        is_first = torch.zeros(3, 5)
        is_first[:, 0] = 1
        post, prior, _ = rssm.observe(embed, torch.randn(3, 5, 3), is_first, rssm.initial(3))
        observe_loss(post, prior).backward()
        grads.append({n: p.grad for n, p in rssm.named_parameters() if p.grad is not None})
    assert {(h, t) for h in rssm._handles.values() for t in (False, True)} & set(packed_linear._cache)  # it took the path
    assert_same_gradients(grads[0], grads[1])


def test_flop_counter_counts_forward_and_input_gradient_once():
    from torch.utils.flop_counter import FlopCounterMode

    owner = Owner()
    x = torch.randn(16, 32, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        packed_linear.packed_linear(x, torch.randn(8, 32), None, new_handle(owner)).sum().backward()
    assert counter.get_total_flops() == 2 * (2 * 16 * 32 * 8)


def test_updates_through_packed_weights_match_plain_layers(monkeypatch):
    """Three optimiser steps in a row: each update must see the weights the previous one wrote (the
    optimiser's in-place foreach update bumps the version counter the cache checks)."""
    import copy

    import gymnasium as gym
    import numpy as np

    from tests.agent.test_agent import MODEL, OBS, make_batch
    from tests.tiny import TINY_AGENT
    from worldmodels.agent.agent import Agent
    from worldmodels.strategies.cpu import use_cpu_speedups

    monkeypatch.setattr(matmul, "MIN_MACS", 0)  # tiny layers through the packed path
    torch.manual_seed(0)
    plain = Agent(OBS, gym.spaces.Box(-1, 1, (2,), np.float32), MODEL, TINY_AGENT)
    packed = use_cpu_speedups(copy.deepcopy(plain))  # CpuRSSM only adds methods (and two attributes) to the plain RSSM
    assert type(packed.wm.dynamics) is CpuRSSM and type(plain.wm.dynamics) is RSSM
    packed.wm.dynamics._handles = {name: packed_linear.new_handle(packed.wm.dynamics) for name in packed.wm.dynamics._handles}
    batch = make_batch()
    for step in range(3):
        torch.manual_seed(10 + step)
        m_packed = packed.train_step(batch)
        torch.manual_seed(10 + step)
        m_plain = plain.train_step(batch)
        assert m_packed["loss/total"] == pytest.approx(m_plain["loss/total"], rel=1e-4), step
    assert any(key[0] in packed.wm.dynamics._handles.values() for key in packed_linear._cache)
    for (name, a), b in zip(packed.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
