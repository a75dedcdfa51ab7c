"""Tests for worldmodels.agent.returns: lambda returns against a naive unrolled sum, and ReturnNorm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldmodels.agent.returns import ReturnNorm, lambda_return


def naive_lambda_return(rew, boot, disc, lam):
    """Unrolled form of the docstring recursion, written as a plain double loop over t and k.

    ret[t] = sum_{k=t+1}^{T} P(t, k) * (rew[k] + disc[k] (1 - lam[k]) boot[k]) + P(t, T) disc[T] lam[T] boot[T],
    with P(t, k) = prod_{j=t+1}^{k-1} disc[j] lam[j] (ret[T] = boot[T] expands into the last term).
    """
    rew, boot, disc, lam = (x.tolist() for x in (rew, boot, disc, lam))
    B, T1 = len(rew), len(rew[0])
    T = T1 - 1
    out = []
    for b in range(B):
        row = []
        for t in range(T):
            total, prod = 0.0, 1.0
            for k in range(t + 1, T + 1):
                total += prod * (rew[b][k] + disc[b][k] * (1 - lam[b][k]) * boot[b][k])
                prod *= disc[b][k] * lam[b][k]
            total += prod * boot[b][T]  # prod is now P(t, T) disc[T] lam[T]
            row.append(total)
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


def naive_lambda_return_direct(rew, boot, disc, lam):
    """Same quantity, P(t, T) computed separately (no division), to cross-check the helper above."""
    rew, boot, disc, lam = (x.tolist() for x in (rew, boot, disc, lam))
    B, T = len(rew), len(rew[0]) - 1
    out = []
    for b in range(B):
        row = []
        for t in range(T):
            total = 0.0
            for k in range(t + 1, T + 1):
                p = 1.0
                for j in range(t + 1, k):
                    p *= disc[b][j] * lam[b][j]
                total += p * (rew[b][k] + disc[b][k] * (1 - lam[b][k]) * boot[b][k])
            p = 1.0
            for j in range(t + 1, T):
                p *= disc[b][j] * lam[b][j]
            total += p * disc[b][T] * lam[b][T] * boot[b][T]
            row.append(total)
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


def random_inputs(B, T1, seed):
    g = torch.Generator().manual_seed(seed)
    rew = torch.randn(B, T1, generator=g, dtype=torch.float64)
    boot = torch.randn(B, T1, generator=g, dtype=torch.float64) * 3
    disc = torch.rand(B, T1, generator=g, dtype=torch.float64) * 0.2 + 0.79
    lam = torch.rand(B, T1, generator=g, dtype=torch.float64)
    return rew, boot, disc, lam


@pytest.mark.parametrize("B,T1", [(1, 2), (3, 5), (4, 16), (2, 33)])
def test_lambda_return_matches_naive_loop(B, T1):
    rew, boot, disc, lam = random_inputs(B, T1, seed=B * 100 + T1)
    out = lambda_return(rew, boot, disc, lam)
    assert out.shape == (B, T1 - 1)
    expected = naive_lambda_return_direct(rew, boot, disc, lam)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(naive_lambda_return(rew, boot, disc, lam), expected, rtol=1e-10, atol=1e-10)


def test_lambda_return_float32():
    rew, boot, disc, lam = random_inputs(3, 10, seed=1)
    out = lambda_return(rew.float(), boot.float(), disc.float(), lam.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), naive_lambda_return_direct(rew, boot, disc, lam), rtol=1e-5, atol=1e-5)


def test_lambda_zero_is_one_step_td():
    rew, boot, disc, _ = random_inputs(3, 8, seed=2)
    lam = torch.zeros_like(rew)
    out = lambda_return(rew, boot, disc, lam)
    torch.testing.assert_close(out, rew[:, 1:] + disc[:, 1:] * boot[:, 1:])


def test_lambda_one_disc_one_is_sum_of_rewards_plus_last_bootstrap():
    rew, boot, _, _ = random_inputs(2, 7, seed=3)
    ones = torch.ones_like(rew)
    out = lambda_return(rew, boot, ones, ones)
    for b in range(2):
        for t in range(6):
            expected = sum(rew[b, k].item() for k in range(t + 1, 7)) + boot[b, 6].item()
            assert out[b, t].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_lambda_one_is_discounted_monte_carlo():
    rew, boot, disc, _ = random_inputs(2, 6, seed=4)
    out = lambda_return(rew, boot, disc, torch.ones_like(rew))
    for b in range(2):
        for t in range(5):
            total, g = 0.0, 1.0
            for k in range(t + 1, 6):
                total += g * rew[b, k].item()
                g *= disc[b, k].item()
            total += g * boot[b, 5].item()
            assert out[b, t].item() == pytest.approx(total, rel=1e-12, abs=1e-12)


def test_lambda_zero_at_is_last_stops_leaking():
    rew, boot, disc, lam = random_inputs(2, 12, seed=5)
    cut = 6
    lam[:, cut] = 0.0  # is_last at state 6
    out1 = lambda_return(rew, boot, disc, lam)
    rew2, boot2 = rew.clone(), boot.clone()
    rew2[:, cut + 1 :] += torch.randn_like(rew2[:, cut + 1 :]) * 100
    boot2[:, cut + 1 :] += torch.randn_like(boot2[:, cut + 1 :]) * 100
    out2 = lambda_return(rew2, boot2, disc, lam)
    # returns of states before the cut only see up to the cut (its reward and its bootstrap)
    torch.testing.assert_close(out1[:, :cut], out2[:, :cut], rtol=0, atol=0)
    assert not torch.allclose(out1[:, cut:], out2[:, cut:])
    # the return of the state just before the cut is the one-step TD target
    torch.testing.assert_close(out1[:, cut - 1], rew[:, cut] + disc[:, cut] * boot[:, cut])


def test_lambda_return_gradient_flows_to_inputs():
    rew, boot, disc, lam = (x.float().requires_grad_(True) for x in random_inputs(2, 5, seed=6))
    lambda_return(rew, boot, disc, lam).sum().backward()
    for x in (rew, boot, disc):
        assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (rew.grad[:, 0] == 0).all()  # rew[0] is unused
    assert (rew.grad[:, 1:] != 0).all()


def test_lambda_return_rejects_mismatched_shapes():
    rew, boot, disc, lam = random_inputs(2, 5, seed=7)
    with pytest.raises(AssertionError):
        lambda_return(rew, boot[:, :-1], disc, lam)


# -- ReturnNorm ----------------------------------------------------------------------------------------


def test_return_norm_first_update_is_rate_times_quantile():
    rng = np.random.default_rng(0)
    ret = rng.normal(3.0, 10.0, size=(16, 15)).astype(np.float32)
    norm = ReturnNorm(rate=0.01)
    assert norm.lo.item() == 0.0 and norm.hi.item() == 0.0
    norm.update(torch.from_numpy(ret))
    p5 = np.percentile(ret.astype(np.float64), 5, method="linear")
    p95 = np.percentile(ret.astype(np.float64), 95, method="linear")
    assert norm.lo.item() == pytest.approx(0.01 * p5, rel=1e-5)
    assert norm.hi.item() == pytest.approx(0.01 * p95, rel=1e-5)


def test_return_norm_second_update_is_ema():
    rng = np.random.default_rng(1)
    r1 = rng.normal(0, 50, size=(8, 10)).astype(np.float32)
    r2 = rng.normal(20, 5, size=(8, 10)).astype(np.float32)
    rate = 0.3
    norm = ReturnNorm(rate=rate)
    norm.update(torch.from_numpy(r1))
    norm.update(torch.from_numpy(r2))
    lo = rate * np.percentile(r1, 5)
    hi = rate * np.percentile(r1, 95)
    lo = (1 - rate) * lo + rate * np.percentile(r2, 5)
    hi = (1 - rate) * hi + rate * np.percentile(r2, 95)
    assert norm.lo.item() == pytest.approx(lo, rel=1e-5)
    assert norm.hi.item() == pytest.approx(hi, rel=1e-5)


def test_return_norm_scale_never_below_limit():
    norm = ReturnNorm(rate=0.01, limit=1.0)
    assert norm.scale().item() == 1.0  # zero state
    rng = np.random.default_rng(2)
    small = torch.from_numpy(rng.normal(0, 0.01, size=(4, 5)).astype(np.float32))
    for _ in range(50):
        norm.update(small)
        assert norm.scale().item() >= 1.0
    assert norm.scale().item() == 1.0
    big = torch.from_numpy(rng.normal(0, 100, size=(4, 50)).astype(np.float32))
    norm2 = ReturnNorm(rate=1.0, limit=1.0)
    norm2.update(big)
    expected = np.percentile(big.numpy(), 95) - np.percentile(big.numpy(), 5)
    assert norm2.scale().item() == pytest.approx(expected, rel=1e-5)
    assert norm2.scale().item() > 1.0


def test_return_norm_state_in_state_dict():
    norm = ReturnNorm()
    norm.update(torch.arange(100.0))
    state = norm.state_dict()
    assert set(state) >= {"lo", "hi"}
    other = ReturnNorm()
    other.load_state_dict(state)
    assert other.lo.item() == norm.lo.item() and other.hi.item() == norm.hi.item()
