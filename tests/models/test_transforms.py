"""Tests for worldmodels.models.transforms: symlog/symexp and two-hot regression (hand-computed values)."""

from __future__ import annotations

import math

import pytest
import torch

from worldmodels.models.transforms import symexp, symlog, twohot_bins, twohot_encode, twohot_loss, twohot_mean

# -- symlog / symexp ---------------------------------------------------------------------------------


def test_symlog_hand_values():
    x = torch.tensor([0.0, math.e - 1, -(math.e - 1), math.exp(2) - 1, 1.0], dtype=torch.float64)
    expected = torch.tensor([0.0, 1.0, -1.0, 2.0, math.log(2.0)], dtype=torch.float64)
    torch.testing.assert_close(symlog(x), expected, rtol=0, atol=1e-12)
    assert symlog(torch.tensor(0.0)).item() == 0.0


def test_symexp_hand_values():
    x = torch.tensor([0.0, 1.0, -1.0, 2.0], dtype=torch.float64)
    expected = torch.tensor([0.0, math.e - 1, -(math.e - 1), math.exp(2) - 1], dtype=torch.float64)
    torch.testing.assert_close(symexp(x), expected, rtol=0, atol=1e-12)


def test_symlog_symexp_odd_symmetry():
    x = torch.linspace(0, 50, 101, dtype=torch.float64)
    assert torch.equal(symlog(-x), -symlog(x))
    assert torch.equal(symexp(-x), -symexp(x))


def test_symlog_symexp_round_trip_wide_range():
    mags = torch.logspace(-6, 8, 200, dtype=torch.float64)
    x = torch.cat([-mags.flip(0), torch.zeros(1, dtype=torch.float64), mags])
    torch.testing.assert_close(symexp(symlog(x)), x, rtol=1e-10, atol=1e-12)
    y = torch.linspace(-18, 18, 301, dtype=torch.float64)
    torch.testing.assert_close(symlog(symexp(y)), y, rtol=1e-10, atol=1e-12)
    # float32 too, with a float32 tolerance
    x32 = x.float()
    torch.testing.assert_close(symexp(symlog(x32)), x32, rtol=1e-5, atol=1e-6)


def test_symlog_is_monotonic_and_linear_near_zero():
    x = torch.linspace(-100, 100, 2001, dtype=torch.float64)
    assert (symlog(x).diff() > 0).all()
    small = torch.tensor([1e-6, -1e-6], dtype=torch.float64)
    torch.testing.assert_close(symlog(small), small, rtol=1e-5, atol=0)


# -- bins ----------------------------------------------------------------------------------------------


def test_bins_count_centre_neighbours_extremes():
    bins = twohot_bins(255)
    assert bins.shape == (255,)
    assert bins.dtype == torch.float32
    assert bins[127].item() == 0.0
    step = 40.0 / 254  # linspace(-20, 20, 255) spacing in symlog space
    neighbour = math.expm1(step)
    assert abs(neighbour - 0.1706) < 1e-3  # the value quoted by the reference
    assert bins[128].item() == pytest.approx(neighbour, rel=1e-5)
    assert bins[126].item() == pytest.approx(-neighbour, rel=1e-5)
    assert bins[-1].item() == pytest.approx(math.expm1(20.0), rel=1e-6)
    assert bins[0].item() == pytest.approx(-math.expm1(20.0), rel=1e-6)
    assert 4.8e8 < bins[-1].item() < 4.9e8


def test_bins_symmetric_sorted_and_even_in_symlog_space():
    bins = twohot_bins(255)
    assert torch.equal(bins, -bins.flip(0))
    assert (bins.diff() > 0).all()
    expected = torch.linspace(-20, 20, 255, dtype=torch.float64)
    torch.testing.assert_close(symlog(bins.double()), expected, rtol=1e-6, atol=1e-6)


def test_bins_small_count():
    bins = twohot_bins(5, limit=2.0)
    expected = torch.tensor([-math.expm1(2), -math.expm1(1), 0.0, math.expm1(1), math.expm1(2)])
    torch.testing.assert_close(bins, expected)


@pytest.mark.parametrize("num", [1, 2, 4, 254])
def test_bins_reject_even_or_tiny_counts(num):
    with pytest.raises(ValueError):
        twohot_bins(num)


# -- encode ------------------------------------------------------------------------------------------


def test_encode_between_two_bins_hand_weights():
    bins = twohot_bins(255)
    a = bins[128].item()  # ~0.1706
    t = 0.1
    w = twohot_encode(torch.tensor([t]), bins)[0]
    assert w.shape == (255,)
    # linear interpolation in raw space between bins[127] = 0 and bins[128] = a
    assert w[127].item() == pytest.approx((a - t) / a, rel=1e-5)
    assert w[128].item() == pytest.approx(t / a, rel=1e-5)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert (w > 0).sum().item() == 2


def test_encode_negative_and_large_targets_hand_weights():
    bins = twohot_bins(255)
    b64 = bins.double()
    for t in [-0.3, 3.7, -123.4, 5e4]:
        w = twohot_encode(torch.tensor([t]), bins)[0].double()
        i = int((b64 <= t).sum().item()) - 1  # bin just below
        lo, hi = b64[i].item(), b64[i + 1].item()
        assert lo <= t < hi
        assert w[i].item() == pytest.approx((hi - t) / (hi - lo), rel=1e-4, abs=1e-6)
        assert w[i + 1].item() == pytest.approx((t - lo) / (hi - lo), rel=1e-4, abs=1e-6)
        assert w.sum().item() == pytest.approx(1.0, abs=1e-5)
        # decodes back: sum of weights times bins
        assert (w * b64).sum().item() == pytest.approx(t, rel=1e-4, abs=1e-5)


def test_encode_exact_bin_is_one_hot():
    bins = twohot_bins(255)
    w = twohot_encode(bins[[0, 100, 127, 200, 254]], bins)
    expected = torch.nn.functional.one_hot(torch.tensor([0, 100, 127, 200, 254]), 255).float()
    torch.testing.assert_close(w, expected)


def test_encode_clips_beyond_the_ends():
    bins = twohot_bins(255)
    w = twohot_encode(torch.tensor([1e10, -1e10, float(bins[-1]) * 2]), bins)
    assert w[0, -1].item() == pytest.approx(1.0) and w[0, :-1].abs().sum() == 0
    assert w[1, 0].item() == pytest.approx(1.0) and w[1, 1:].abs().sum() == 0
    assert w[2, -1].item() == pytest.approx(1.0)


def test_encode_batched_shapes_sum_to_one_and_decode():
    torch.manual_seed(0)
    bins = twohot_bins(255)
    t = symexp(torch.randn(3, 5, 7) * 4)
    w = twohot_encode(t, bins)
    assert w.shape == (3, 5, 7, 255)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 5, 7))
    decoded = (w.double() * bins.double()).sum(-1)
    torch.testing.assert_close(decoded, t.double(), rtol=1e-4, atol=1e-5)
    assert ((w > 0).sum(-1) <= 2).all()


def test_encode_has_no_gradient_to_target():
    bins = twohot_bins(31)
    t = torch.tensor([0.5], requires_grad=True)
    assert not twohot_encode(t, bins).requires_grad


# -- mean --------------------------------------------------------------------------------------------


def test_mean_of_uniform_logits_is_exactly_zero():
    bins = twohot_bins(255)
    assert twohot_mean(torch.zeros(255), bins).item() == 0.0
    out = twohot_mean(torch.full((4, 3, 255), 2.5), bins)
    assert out.shape == (4, 3)
    assert (out == 0).all()


def test_mean_of_twohot_distribution_returns_target():
    bins = twohot_bins(255)
    targets = torch.tensor([0.0, 0.1, -0.1, 1.0, -2.5, 17.0, 300.0, -4000.0, 1e5])
    logits = torch.log(twohot_encode(targets, bins))  # -inf outside the two bins
    decoded = twohot_mean(logits, bins)
    torch.testing.assert_close(decoded, targets, rtol=1e-4, atol=1e-5)


def test_mean_matches_plain_expectation():
    torch.manual_seed(1)
    bins = twohot_bins(31)
    logits = torch.randn(6, 31, dtype=torch.float64)
    probs = torch.softmax(logits, -1)
    expected = [sum(probs[i, k].item() * bins[k].item() for k in range(31)) for i in range(6)]
    torch.testing.assert_close(twohot_mean(logits, bins.double()), torch.tensor(expected, dtype=torch.float64))


# -- loss --------------------------------------------------------------------------------------------


def test_loss_equals_hand_cross_entropy():
    torch.manual_seed(2)
    bins = twohot_bins(255)
    logits = torch.randn(255, dtype=torch.float64)
    a = bins[128].item()
    t = 0.1
    logz = math.log(sum(math.exp(v) for v in logits.tolist()))
    w_below, w_above = (a - t) / a, t / a
    expected = -(w_below * (logits[127].item() - logz) + w_above * (logits[128].item() - logz))
    loss = twohot_loss(logits, torch.tensor(t, dtype=torch.float64), bins.double())
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_loss_of_uniform_logits_is_log_k_and_shape():
    bins = twohot_bins(31)
    logits = torch.zeros(2, 3, 31, requires_grad=True)
    target = torch.tensor([[0.0, 5.0, -3.0], [1e9, -1e9, 0.25]])
    loss = twohot_loss(logits, target, bins)
    assert loss.shape == (2, 3)
    torch.testing.assert_close(loss, torch.full((2, 3), math.log(31)))
    loss.sum().backward()
    # gradient of CE is softmax - weights
    expected = torch.softmax(logits.detach(), -1) - twohot_encode(target, bins)
    torch.testing.assert_close(logits.grad, expected)


def test_encode_float64_targets_with_float32_bins():
    """BUG EXPOSED (minor; worldmodels/models/transforms.py, twohot_encode, the `out.scatter_add_` lines): float64
    targets (numpy rewards are float64 unless cast) with the float32 bins of twohot_bins() raise
    "scatter(): Expected self.dtype to be equal to src.dtype", while twohot_loss accepts the same inputs.
    """
    bins = twohot_bins(31)
    target = torch.tensor([0.5, -3.0], dtype=torch.float64)
    w = twohot_encode(target, bins)
    torch.testing.assert_close(w.double().sum(-1), torch.ones(2, dtype=torch.float64))
    logits = torch.randn(2, 31)
    expected = -(w.double() * torch.log_softmax(logits.double(), -1)).sum(-1)
    torch.testing.assert_close(twohot_loss(logits, target, bins).double(), expected, rtol=1e-5, atol=1e-6)
