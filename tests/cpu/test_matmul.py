"""The oneDNN linear path computes what F.linear computes, values and gradients, eager and compiled."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from worldmodels.cpu import matmul
from worldmodels.cpu.matmul import available, linear, onednn_enabled, set_onednn

pytestmark = pytest.mark.skipif(not available(), reason="this PyTorch build has no oneDNN linear op")


@pytest.fixture
def onednn_always(monkeypatch):
    """Route even tiny products through oneDNN, so the test shapes exercise it."""
    monkeypatch.setattr(matmul, "MIN_MACS", 0)
    set_onednn(True)
    yield
    set_onednn(True)


def grads(fn, x, w, b):
    y = fn(x, w, b)
    g = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
    return (y, *torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], g))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(37,), (3, 5), (0,)])
def test_values_and_gradients_match_f_linear(onednn_always, bias, lead):
    torch.manual_seed(0)
    x = torch.randn(*lead, 24, requires_grad=True)
    w = torch.randn(10, 24, requires_grad=True)
    b = torch.randn(10, requires_grad=True) if bias else None
    ours, ref = grads(linear, x, w, b), grads(F.linear, x, w, b)
    assert ours[0].shape == (*lead, 10)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_strided_input_and_frozen_input(onednn_always):
    torch.manual_seed(1)
    x = torch.randn(24, 40)[:, ::2].T  # (20, 24), not contiguous
    w = torch.randn(6, 24, requires_grad=True)
    y = linear(x, w)
    torch.testing.assert_close(y, F.linear(x, w), rtol=1e-5, atol=1e-5)
    (gw,) = torch.autograd.grad(y.sum(), [w])  # input needs no gradient: only the weight's is formed
    torch.testing.assert_close(gw, x.sum(0).expand(6, 24), rtol=1e-5, atol=1e-4)


def test_only_dense_operands_go_to_onednn(onednn_always, monkeypatch):
    """A column slice of a weight sends oneDNN down a reference kernel that is 1000x slower: such
    operands, and strided inputs, stay with F.linear; a transposed contiguous weight is fine."""
    calls = []
    real = matmul.onednn_linear
    monkeypatch.setattr(matmul, "onednn_linear", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(3)
    x, wide, w_t = torch.randn(20, 24), torch.randn(6, 40), torch.randn(24, 6)
    strided_x = torch.randn(24, 40)[:, ::2].T
    assert torch.equal(linear(x, wide[:, :24]), F.linear(x, wide[:, :24]))
    assert torch.equal(linear(strided_x, w_t.t()), F.linear(strided_x, w_t.t()))
    assert not calls
    torch.testing.assert_close(linear(x, w_t.t()), F.linear(x, w_t.t()), rtol=1e-5, atol=1e-5)
    assert len(calls) == 1


def test_zero_width_input_gives_the_bias(onednn_always):
    bias = torch.arange(4.0)
    assert torch.equal(linear(torch.zeros(10, 0), torch.zeros(4, 0), bias), bias.expand(10, 4))


def test_weight_gradient_order_is_the_plain_product():
    torch.manual_seed(4)
    grad, x = torch.randn(50, 6), torch.randn(50, 9)
    torch.testing.assert_close(matmul.weight_grad(grad, x), grad.t() @ x)


def test_small_products_and_disabled_path_are_exactly_f_linear(monkeypatch):
    torch.manual_seed(2)
    x, w, b = torch.randn(8, 16), torch.randn(4, 16), torch.randn(4)
    assert torch.equal(linear(x, w, b), F.linear(x, w, b))  # 512 MACs: under MIN_MACS
    monkeypatch.setattr(matmul, "MIN_MACS", 0)
    set_onednn(False)
    try:
        assert not onednn_enabled()
        assert torch.equal(linear(x, w, b), F.linear(x, w, b))
        assert torch.equal(linear(x.double(), w.double(), b.double()), F.linear(x.double(), w.double(), b.double()))
    finally:
        set_onednn(True)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_layer_matches_eager(onednn_always):
    torch.manual_seed(3)
    x = torch.randn(64, 24, requires_grad=True)
    w = torch.randn(10, 24, requires_grad=True)
    b = torch.randn(10, requires_grad=True)

    def layer(x, w, b):
        return F.silu(linear(x, w, b)).square().sum()

    compiled = torch.compile(layer, dynamic=False)
    eager_grads = torch.autograd.grad(layer(x, w, b), [x, w, b])
    compiled_grads = torch.autograd.grad(compiled(x, w, b), [x, w, b])
    for a, r in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)
