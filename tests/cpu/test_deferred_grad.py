"""Deferred weight gradients: the same gradients as applying the weight at every step (and as the plain RSSM)."""

import pytest
import torch

from tests.tiny import assert_same_gradients, observe_loss
from worldmodels.cpu.deferred_grad import deferred_slots
from worldmodels.cpu.rssm import DEFERRED, CpuRSSM
from worldmodels.dynamics.rssm import RSSM


def _recurrence(weight: torch.Tensor, xs: torch.Tensor, deferred: bool, block: bool) -> torch.Tensor:
    """h_t = tanh(W x_t + h_{t-1}) over T steps (per block for a block weight); returns the sum of h_t^2."""
    T, B = xs.shape[:2]
    out_shape = (B, weight.shape[0], weight.shape[2]) if block else (B, weight.shape[0])
    inputs: list = []
    slots = deferred_slots(weight, T, B, inputs) if deferred else None
    w = weight.detach() if deferred else weight
    h, loss = torch.zeros(out_shape), 0.0
    for t in range(T):
        x = xs[t] + 0.1 * h.mean()  # the input depends on the past, as in a recurrence
        y = torch.einsum("bgi,gio->bgo", x, w) if block else x @ w.t()
        if deferred:
            inputs.append(x.detach())
            y = y + slots[t]
        h = torch.tanh(y + h)
        loss = loss + (h**2).sum()
    return loss


@pytest.mark.parametrize("block", [False, True])
def test_deferred_weight_grad_matches_per_step_gradients(block):
    torch.manual_seed(0)
    weight = torch.randn(3, 4, 5) if block else torch.randn(5, 4)
    xs = torch.randn(6, 2, 3, 4) if block else torch.randn(6, 2, 4)
    grads = []
    for deferred in (False, True):
        w = weight.clone().requires_grad_()
        x = xs.clone().requires_grad_()
        _recurrence(w, x, deferred, block).backward()
        grads.append((w.grad, x.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-6)


def _rssm_grads(defer: bool, freeze: str | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    rssm = (CpuRSSM if defer else RSSM)(embed_dim=6, action_dim=3, deter=16, hidden=8, stoch=3, classes=4, blocks=4)
    if freeze:
        rssm.get_parameter(freeze).requires_grad_(False)
    torch.manual_seed(1)
    embed = torch.randn(3, 7, 6, requires_grad=True)
    is_first = torch.zeros(3, 7)
    is_first[:, 0] = 1
    is_first[1, 4] = 1  # a reset inside the sequence
    post, prior, _ = rssm.observe(embed, torch.randn(3, 7, 3), is_first, rssm.initial(3))
    observe_loss(post, prior).backward()
    return {n: p.grad for n, p in rssm.named_parameters() if p.grad is not None}, embed.grad


@pytest.mark.parametrize("freeze", [None, "gru_gates.weight"])
def test_rssm_observe_gradients_same_with_deferred_weight_grads(freeze):
    """CpuRSSM, deferring, against the plain RSSM."""
    plain, plain_embed = _rssm_grads(False, freeze)
    deferred, deferred_embed = _rssm_grads(True, freeze)
    assert freeze is None or freeze not in deferred
    assert_same_gradients(plain, deferred)
    torch.testing.assert_close(plain_embed, deferred_embed, rtol=1e-5, atol=1e-6)


def test_rssm_defers_only_when_weight_gradients_are_wanted():
    rssm = CpuRSSM(embed_dim=6, action_dim=3, deter=16, hidden=8, stoch=3, classes=4, blocks=4)
    _, slots = rssm._deferred_slots(5, 2)
    assert set(slots) == set(DEFERRED) and all(len(s) == 5 for s in slots.values())
    shapes = {"in_deter": (2, 8), "in_stoch": (2, 8), "gru_hidden_shared": (2, 16), "gru_hidden": (2, 4, 4),
              "gru_gates": (2, 4, 12), "post_deter": (2, 8), "post_out": (2, 12)}
    assert {name: tuple(s[0].shape) for name, s in slots.items()} == shapes  # each slot as its layer's output
    with torch.no_grad():  # acting and reports: plain layers
        assert rssm._deferred_slots(5, 2) == ({}, None)
    rssm.requires_grad_(False)
    assert rssm._deferred_slots(5, 2) == ({}, None)


def test_compiled_observe_step_gradients_same_with_deferred_weight_grads():
    """The step torch.compile sees takes the slots as inputs and returns the layer inputs: compiled, the
    same sampled latents and the same gradients as the plain RSSM's compiled step."""
    results = []
    for defer in (False, True):
        torch._dynamo.reset()
        torch.manual_seed(0)
        rssm = (CpuRSSM if defer else RSSM)(embed_dim=6, action_dim=3, deter=16, hidden=8, stoch=3, classes=4, blocks=4)
        rssm.compile_steps()
        embed = torch.randn(3, 5, 6)
        is_first = torch.zeros(3, 5)
        is_first[:, 0] = 1
        post, prior, _ = rssm.observe(embed, torch.randn(3, 5, 3), is_first, rssm.initial(3))
        observe_loss(post, prior).backward()
        results.append((post["stoch"].detach(), {n: p.grad for n, p in rssm.named_parameters() if p.grad is not None}))
    torch._dynamo.reset()
    torch.testing.assert_close(results[0][0], results[1][0])
    assert_same_gradients(results[0][1], results[1][1])
