"""Tests for worldmodels.agent.optim.LaProp against a hand computation of the documented update."""

from __future__ import annotations

import math

import pytest
import torch

from worldmodels.agent.optim import LaProp


def hand_laprop(p0, grads, lr, eps, b1, b2, agc, warmup):
    """Scalar reference of the class docstring, in plain Python floats.

    g <- g / max(1, |g| / (agc * max(1e-3, |p|))); v <- b2 v + (1 - b2) g^2;
    m <- b1 m + (1 - b1) g / (sqrt(v / (1 - b2^t)) + eps); p <- p - lr * min(1, t / warmup) * m / (1 - b1^t).
    """
    p, m, v = p0, 0.0, 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        if agc:
            g = g / max(1.0, abs(g) / (agc * max(1e-3, abs(p))))
        v = b2 * v + (1 - b2) * g * g
        m = b1 * m + (1 - b1) * g / (math.sqrt(v / (1 - b2**t)) + eps)
        warm = min(1.0, t / warmup) if warmup else 1.0
        p = p - lr * warm * m / (1 - b1**t)
        out.append(p)
    return out


def run_scalar(p0, grads, **kw):
    param = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = LaProp([param], **kw)
    out = []
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(param.item())
    return out


@pytest.mark.parametrize("p0", [1.5, 0.5, -0.02])  # 0.5 and -0.02: some gradients exceed the clip limit 0.3 |p|
def test_first_steps_match_hand_computation_with_warmup(p0):
    grads = [0.2, -0.1, 0.25, 0.05, -0.3, 0.15]
    kw = {"lr": 0.01, "eps": 1e-20, "beta1": 0.9, "beta2": 0.999, "agc": 0.3, "warmup": 4}
    got = run_scalar(p0, grads, **kw)
    expected = hand_laprop(p0, grads, lr=0.01, eps=1e-20, b1=0.9, b2=0.999, agc=0.3, warmup=4)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_first_step_by_hand():
    # step 1: v_hat = g^2, so the update is lr * (1 / warmup) * sign(g)
    got = run_scalar(2.0, [0.4], lr=0.1, eps=1e-20, beta1=0.9, beta2=0.999, agc=0.3, warmup=10)
    assert got[0] == pytest.approx(2.0 - 0.1 * 0.1, rel=1e-12)
    got = run_scalar(2.0, [-0.4], lr=0.1, eps=1e-20, beta1=0.9, beta2=0.999, agc=0.3, warmup=0)
    assert got[0] == pytest.approx(2.0 + 0.1, rel=1e-12)


def test_second_step_by_hand():
    lr, b1, b2 = 0.1, 0.9, 0.999
    g1, g2 = 0.2, -0.1  # below the clip limit 0.3 * |p| (p ~ 1)
    v1 = (1 - b2) * g1**2
    m1 = (1 - b1) * g1 / math.sqrt(v1 / (1 - b2))
    p1 = 1.0 - lr * 0.5 * m1 / (1 - b1)
    v2 = b2 * v1 + (1 - b2) * g2**2
    m2 = b1 * m1 + (1 - b1) * g2 / math.sqrt(v2 / (1 - b2**2))
    p2 = p1 - lr * 1.0 * m2 / (1 - b1**2)
    got = run_scalar(1.0, [g1, g2], lr=lr, eps=1e-20, beta1=b1, beta2=b2, agc=0.3, warmup=2)
    assert got == pytest.approx([p1, p2], rel=1e-12)


def test_warmup_scales_step_linearly():
    # with a constant gradient every normalised update is exactly sign(g), so steps are lr * t / warmup
    param = torch.nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
    param.data.fill_(100.0)
    opt = LaProp([param], lr=0.01, agc=0.0, warmup=5)
    prev, steps = param.item(), []
    for _ in range(8):
        param.grad = torch.tensor(1.0, dtype=torch.float64)
        opt.step()
        steps.append(prev - param.item())
        prev = param.item()
    assert steps == pytest.approx([0.01 * min(1, t / 5) for t in range(1, 9)], rel=1e-9)


def test_agc_clips_gradient_relative_to_parameter_norm():
    # a huge gradient is clipped to norm agc * |p| before it enters the second moment
    p0 = torch.tensor([3.0, -4.0], dtype=torch.float64)  # |p| = 5
    param = torch.nn.Parameter(p0.clone())
    opt = LaProp([param], lr=0.01, beta2=0.999, agc=0.3, warmup=0)
    g = torch.tensor([6e6, 8e6], dtype=torch.float64)  # |g| = 1e7
    param.grad = g.clone()
    opt.step()
    clipped = g * (0.3 * 5.0) / 1e7  # norm 1.5
    torch.testing.assert_close(opt.state[param]["rms"], 0.001 * clipped.square())
    # direction of the update is that of the gradient, size lr per element at step 1
    torch.testing.assert_close(p0 - param.detach(), torch.tensor([0.01, 0.01], dtype=torch.float64))


def test_agc_keeps_later_updates_alive_after_huge_gradient():
    lr = 0.01
    grads = [0.1, 1e9] + [0.1] * 30
    with_agc = run_scalar(1.0, grads, lr=lr, agc=0.3, warmup=0)
    without = run_scalar(1.0, grads, lr=lr, agc=0.0, warmup=0)
    assert with_agc == pytest.approx(hand_laprop(1.0, grads, lr, 1e-20, 0.9, 0.999, 0.3, 0), rel=1e-12)
    assert without == pytest.approx(hand_laprop(1.0, grads, lr, 1e-20, 0.9, 0.999, 0.0, 0), rel=1e-12)
    # the spike's update itself is bounded to about lr
    moves = [abs(b - a) for a, b in zip([1.0] + with_agc, with_agc)]
    assert max(moves) < 1.5 * lr
    # without clipping the 1e9 gradient ruins the second moment and later steps shrink to ~1% of lr;
    # with clipping (to 0.3 * |p|) the steps 30 updates later are still most of lr.
    assert abs(with_agc[-1] - with_agc[-2]) > 0.5 * lr
    assert abs(without[-1] - without[-2]) < 0.05 * lr


def test_agc_small_parameter_uses_floor():
    # |p| = 0 uses max(1e-3, |p|): gradient clipped to norm 0.3e-3
    param = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = LaProp([param], lr=0.01, agc=0.3, warmup=0)
    param.grad = torch.full((4,), 1.0, dtype=torch.float64)  # norm 2
    opt.step()
    clipped = torch.full((4,), 0.3e-3 / 2, dtype=torch.float64)
    torch.testing.assert_close(opt.state[param]["rms"], 0.001 * clipped.square())
    torch.testing.assert_close(param.detach(), torch.full((4,), -0.01, dtype=torch.float64))


def test_tensors_are_clipped_independently():
    a = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = LaProp([a, b], lr=0.01, agc=0.3, warmup=0)
    a.grad = torch.full((3,), 1e3, dtype=torch.float64)
    b.grad = torch.full((3,), 1e-3, dtype=torch.float64)
    opt.step()
    lim = 0.3 * math.sqrt(3)
    torch.testing.assert_close(opt.state[a]["rms"], torch.full((3,), 0.001 * (lim / math.sqrt(3)) ** 2, dtype=torch.float64))
    torch.testing.assert_close(opt.state[b]["rms"], torch.full((3,), 0.001 * 1e-6, dtype=torch.float64))


def test_params_without_grad_are_untouched():
    a = torch.nn.Parameter(torch.ones(2))
    b = torch.nn.Parameter(torch.ones(2))
    opt = LaProp([a, b], lr=0.1, warmup=0)
    a.grad = torch.ones(2)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(2))
    assert not torch.equal(a.detach(), torch.ones(2))


def test_minimises_quadratic():
    torch.manual_seed(0)
    target = torch.randn(10) * 2
    param = torch.nn.Parameter(torch.randn(10))
    opt = LaProp([param], lr=0.03, warmup=10)
    start = (param.detach() - target).square().sum().item()
    for _ in range(600):
        opt.zero_grad()
        loss = (param - target).square().sum()
        loss.backward()
        opt.step()
    final = (param.detach() - target).square().sum().item()
    assert final < 1e-2 * start, (start, final)
    assert final < 0.05


def test_default_hyperparameters():
    opt = LaProp([torch.nn.Parameter(torch.zeros(1))])
    g = opt.param_groups[0]
    assert g["lr"] == 4e-5 and g["eps"] == 1e-20 and g["beta1"] == 0.9 and g["beta2"] == 0.999
    assert g["agc"] == 0.3 and g["warmup"] == 1000


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(1)
    grads = [torch.randn(3) for _ in range(6)]

    def make():
        p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
        return p, LaProp([p], lr=0.01, warmup=3)

    p1, o1 = make()
    for g in grads:
        p1.grad = g.clone()
        o1.step()
    p2, o2 = make()
    for g in grads[:3]:
        p2.grad = g.clone()
        o2.step()
    p3, o3 = make()
    p3.data.copy_(p2.data)
    o3.load_state_dict(o2.state_dict())
    for g in grads[3:]:
        p3.grad = g.clone()
        o3.step()
    torch.testing.assert_close(p3.detach(), p1.detach())


def test_step_count_not_reset_when_a_parameter_joins_late():
    """BUG EXPOSED (worldmodels/agent/optim.py, LaProp.step, line 51): the group's step counter is read from
    `params[0]` of the parameters that have a gradient this call. When that first parameter receives
    its first gradient later than the others, its fresh state (step 0) resets the counter to 1 for the
    whole group, so bias correction and warm-up restart for parameters that were already being updated.

    Whether t counts per parameter (torch Adam) or per optimiser update (optax), `b` below has had four
    updates, so it must follow the same trajectory as a parameter optimised alone for four steps.
    """
    kw = {"lr": 0.1, "agc": 0.0, "warmup": 4}
    a = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = LaProp([a, b], **kw)
    for _ in range(3):
        b.grad = torch.tensor([0.1], dtype=torch.float64)  # `a` unused for three updates (grad None)
        opt.step()
    a.grad = torch.tensor([0.1], dtype=torch.float64)
    b.grad = torch.tensor([0.1], dtype=torch.float64)
    opt.step()
    alone = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt_alone = LaProp([alone], **kw)
    for _ in range(4):
        alone.grad = torch.tensor([0.1], dtype=torch.float64)
        opt_alone.step()
    # constant gradient: every normalised update is 1, so alone = 1 - 0.1 * (1/4 + 2/4 + 3/4 + 4/4) = 0.75
    assert alone.item() == pytest.approx(0.75, rel=1e-9)
    assert b.item() == pytest.approx(alone.item(), rel=1e-9), (
        f"b = {b.item():.6f} after 4 updates, expected {alone.item():.6f}: the 4th update used t = 1 "
        "(warm-up 1/4 and first-step bias correction) because `a` joined the group late"
    )
