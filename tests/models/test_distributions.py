"""Tests for worldmodels.models.distributions: unimix, straight-through sampling, KL, free bits, policies."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Normal

from worldmodels.models.distributions import (
    DiscretePolicy,
    NormalPolicy,
    kl_categorical,
    mode_onehot,
    sample_onehot,
    softmax,
    unimix_logits,
)

# -- unimix ------------------------------------------------------------------------------------------


def test_unimix_floor_and_normalisation():
    torch.manual_seed(0)
    K = 4
    logits = torch.randn(8, 32, K) * 50  # very confident distributions
    probs = unimix_logits(logits, 0.01).exp()
    assert (probs >= 0.01 / K * (1 - 1e-5)).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(8, 32))
    assert torch.isfinite(unimix_logits(logits, 0.01)).all()


def test_unimix_matches_hand_mixture():
    torch.manual_seed(1)
    K = 5
    logits = torch.randn(3, K, dtype=torch.float64)
    out = unimix_logits(logits, 0.01).exp()
    for i in range(3):
        z = sum(math.exp(v) for v in logits[i].tolist())
        for k in range(K):
            expected = 0.99 * math.exp(logits[i, k].item()) / z + 0.01 / K
            assert out[i, k].item() == pytest.approx(expected, rel=1e-12)


def test_unimix_zero_is_plain_log_softmax():
    logits = torch.randn(4, 6)
    torch.testing.assert_close(unimix_logits(logits, 0.0), torch.log_softmax(logits, -1))


# -- sampling ----------------------------------------------------------------------------------------


def test_sample_onehot_values_are_one_hot():
    torch.manual_seed(2)
    logits = torch.randn(5, 32, 4)
    s = sample_onehot(torch.log_softmax(logits, -1))
    assert s.shape == (5, 32, 4)
    # forward values are exactly one-hot (up to float error of + probs - probs)
    torch.testing.assert_close(s.sum(-1), torch.ones(5, 32))
    rounded = s.round()
    torch.testing.assert_close(s, rounded, atol=1e-6, rtol=0)
    assert ((rounded == 0) | (rounded == 1)).all()


def test_sample_onehot_straight_through_gradient_equals_softmax_gradient():
    torch.manual_seed(3)
    logits = torch.randn(4, 3, 6, requires_grad=True)
    w = torch.randn(4, 3, 6)
    (sample_onehot(torch.log_softmax(logits, -1)) * w).sum().backward()
    g_sample = logits.grad.clone()
    logits.grad = None
    (torch.softmax(logits, -1) * w).sum().backward()
    torch.testing.assert_close(g_sample, logits.grad)
    assert g_sample.abs().sum() > 0


def test_sample_onehot_full_jacobian_equals_softmax_jacobian():
    torch.manual_seed(4)
    logits = torch.randn(5, dtype=torch.float64)

    def sampled(x):
        torch.manual_seed(0)
        return sample_onehot(torch.log_softmax(x, -1))

    jac_s = torch.autograd.functional.jacobian(sampled, logits)
    jac_p = torch.autograd.functional.jacobian(lambda x: torch.softmax(x, -1), logits)
    torch.testing.assert_close(jac_s, jac_p)


def test_sample_onehot_without_straight_through_has_no_grad():
    logits = torch.randn(3, 4, requires_grad=True)
    assert not sample_onehot(logits, straight_through=False).requires_grad


def test_sample_onehot_empirical_frequencies_match_probs():
    torch.manual_seed(5)
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0])
    probs = torch.softmax(logits, -1)
    n = 40000
    samples = sample_onehot(torch.log_softmax(logits, -1).expand(n, 4), straight_through=False)
    freq = samples.mean(0)
    # binomial std of each frequency is at most 0.0025 here
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)


def test_sample_onehot_never_draws_a_zero_probability_class(monkeypatch):
    """BUG EXPOSED (minor; worldmodels/models/distributions.py, sample_onehot, the inverse-CDF line
    `index = (probs.detach().cumsum(-1) < uniform).sum(-1)`): torch.rand draws from [0, 1), and for
    u == 0 exactly (probability 2**-24 per float32 draw) `cdf < u` is False everywhere, so index 0 is
    returned even when class 0 has probability 0. `cdf <= u` would skip zero-probability classes.

    The uniform draw is forced to 0 here; a sampler that does not use torch.rand is unaffected by the patch.
    """
    real_rand = torch.rand

    def zero_rand(*size, **kwargs):
        return torch.zeros_like(real_rand(*size, **kwargs))

    monkeypatch.setattr(torch, "rand", zero_rand)
    logits = torch.tensor([[-1000.0, 0.0, 0.0], [-1000.0, -1000.0, 0.0]])
    probs = torch.softmax(logits, -1)
    assert probs[0, 0] == 0 and probs[1, 0] == 0 and probs[1, 1] == 0
    sample = sample_onehot(torch.log_softmax(logits, -1), straight_through=False)
    chosen_prob = (sample * probs).sum(-1)
    assert (chosen_prob > 0).all(), f"sampled a class of probability 0: sample {sample.tolist()}, probs {probs.tolist()}"


def test_softmax_small_and_large_class_counts_match_torch():
    torch.manual_seed(6)
    for classes in (2, 4, 7, 8, 16):
        logits = torch.randn(3, 5, classes) * 10
        torch.testing.assert_close(softmax(logits), torch.softmax(logits, -1))


def test_unimix_straight_through_gradient_matches_softmax_of_unimix_logits():
    """Sampling from exp(logp) instead of softmax(logp) leaves the gradient to the raw logits unchanged."""
    torch.manual_seed(7)
    raw = torch.randn(4, 3, 4, requires_grad=True)
    w = torch.randn(4, 3, 4)
    logp = unimix_logits(raw, 0.01)
    (sample_onehot(logp) * w).sum().backward()
    g_exp = raw.grad.clone()
    raw.grad = None
    (torch.softmax(unimix_logits(raw, 0.01), -1) * w).sum().backward()
    torch.testing.assert_close(g_exp, raw.grad)


def test_mode_onehot():
    logits = torch.tensor([[0.1, 3.0, -1.0], [5.0, 0.0, 4.9]])
    torch.testing.assert_close(mode_onehot(logits), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


# -- KL ------------------------------------------------------------------------------------------------


def test_kl_categorical_against_hand_loop():
    torch.manual_seed(6)
    B, S, C = 3, 4, 5
    logp = torch.log_softmax(torch.randn(B, S, C, dtype=torch.float64), -1)
    logq = torch.log_softmax(torch.randn(B, S, C, dtype=torch.float64), -1)
    out = kl_categorical(logp, logq)
    assert out.shape == (B,)
    for b in range(B):
        total = 0.0
        for s in range(S):
            for c in range(C):
                p = math.exp(logp[b, s, c].item())
                total += p * (logp[b, s, c].item() - logq[b, s, c].item())
        assert out[b].item() == pytest.approx(total, rel=1e-10)
    assert (out > 0).all()


def test_kl_categorical_zero_for_equal_distributions():
    torch.manual_seed(7)
    logp = unimix_logits(torch.randn(2, 7, 32, 4), 0.01)
    torch.testing.assert_close(kl_categorical(logp, logp), torch.zeros(2, 7))


def test_free_bits_clamp_formula_zero_gradient_below_one():
    # dyn = max(1, KL(sg(post) || prior)): per batch element, no gradient where the KL is below 1.
    torch.manual_seed(8)
    post = torch.log_softmax(torch.randn(4, 8, 4), -1)
    base = torch.randn(4, 8, 4)
    # elements 0, 1: prior close to post (small KL); 2, 3: far (large KL)
    prior_raw = torch.cat([post[:2] + 0.01 * base[:2], -post[2:] * 6.0]).requires_grad_(True)
    prior = torch.log_softmax(prior_raw, -1)
    kl = kl_categorical(post.detach(), prior)
    assert (kl[:2] < 1).all() and (kl[2:] > 1).all(), kl
    loss = torch.clamp(kl, min=1.0)
    torch.testing.assert_close(loss[:2], torch.ones(2))
    loss.sum().backward()
    assert (prior_raw.grad[:2] == 0).all()
    assert (prior_raw.grad[2:].abs().sum((-2, -1)) > 0).all()


# -- policies ------------------------------------------------------------------------------------------


def test_discrete_policy_against_torch_categorical():
    torch.manual_seed(9)
    logits = torch.randn(6, 5) * 2
    pi = DiscretePolicy(logits)
    ref = Categorical(logits=logits)
    idx = torch.tensor([0, 1, 2, 3, 4, 2])
    action = torch.nn.functional.one_hot(idx, 5).float()
    torch.testing.assert_close(pi.log_prob(action), ref.log_prob(idx))
    torch.testing.assert_close(pi.entropy(), ref.entropy())
    torch.testing.assert_close(pi.mode(), torch.nn.functional.one_hot(logits.argmax(-1), 5).float())
    s = pi.sample()
    assert s.shape == (6, 5)
    assert ((s == 0) | (s == 1)).all() and (s.sum(-1) == 1).all()
    assert not s.requires_grad


def test_discrete_policy_sample_frequencies():
    torch.manual_seed(10)
    logits = torch.tensor([0.5, -0.5, 1.5])
    s = DiscretePolicy(logits.expand(30000, 3)).sample()
    torch.testing.assert_close(s.mean(0), torch.softmax(logits, -1), atol=0.015, rtol=0)


def test_discrete_policy_log_prob_gradient():
    logits = torch.randn(4, 3, requires_grad=True)
    action = torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 1]), 3).float()
    DiscretePolicy(logits).log_prob(action).sum().backward()
    expected = action - torch.softmax(logits.detach(), -1)
    torch.testing.assert_close(logits.grad, expected)


def test_normal_policy_against_torch_normal_and_hand_formula():
    torch.manual_seed(11)
    out = torch.randn(7, 6) * 3
    pi = NormalPolicy(out)
    mean_raw, std_raw = out.chunk(2, -1)
    mean = torch.tanh(mean_raw)
    std = 0.9 * torch.sigmoid(std_raw + 2.0) + 0.1
    torch.testing.assert_close(pi.mean, mean)
    torch.testing.assert_close(pi.std, std)
    ref = Normal(mean, std)
    action = torch.randn(7, 3)
    torch.testing.assert_close(pi.log_prob(action), ref.log_prob(action).sum(-1))
    torch.testing.assert_close(pi.entropy(), ref.entropy().sum(-1))
    torch.testing.assert_close(pi.mode(), mean)
    assert pi.log_prob(action).shape == (7,)


def test_normal_policy_hand_values_at_zero():
    pi = NormalPolicy(torch.zeros(1, 2))
    std = 0.9 / (1 + math.exp(-2.0)) + 0.1
    assert pi.mean.item() == 0.0
    assert pi.std.item() == pytest.approx(std, rel=1e-6)
    assert pi.log_prob(torch.zeros(1, 1)).item() == pytest.approx(-math.log(std) - 0.5 * math.log(2 * math.pi), rel=1e-6)


def test_normal_policy_bounds():
    x = torch.linspace(-200, 200, 101)[:, None].expand(101, 2)
    out = torch.cat([x, x], -1)  # mean and std inputs from -200 to 200
    pi = NormalPolicy(out)
    assert (pi.std >= 0.1).all() and (pi.std <= 1.0).all()
    assert (pi.mean >= -1).all() and (pi.mean <= 1).all()
    assert pi.std.min().item() == pytest.approx(0.1, abs=1e-6)
    assert pi.std.max().item() == pytest.approx(1.0, abs=1e-6)


def test_normal_policy_sample_statistics():
    torch.manual_seed(12)
    out = torch.tensor([[0.5, -1.0, 0.0, 1.0]]).expand(50000, 4)
    pi = NormalPolicy(out)
    s = pi.sample()
    assert s.shape == (50000, 2)
    torch.testing.assert_close(s.mean(0), pi.mean[0], atol=0.02, rtol=0)
    torch.testing.assert_close(s.std(0), pi.std[0], atol=0.02, rtol=0)
