"""Settings of a tiny agent shared by tests that build one directly (not through the debug preset), and a
replayed batch for it."""

import torch

TINY_MODEL = {"deter": 32, "hidden": 16, "stoch": 4, "classes": 4, "blocks": 2, "units": 16, "depth": 2,
         "enc_layers": 1, "dec_layers": 1, "head_layers": 1, "actor_layers": 1, "critic_layers": 1}
TINY_AGENT = {"bins": 31, "unimix": 0.01, "free_bits": 1.0, "retnorm_rate": 0.01, "retnorm_limit": 1.0, "horizon": 333,
         "imag_length": 3, "lam": 0.95, "actent": 3e-4, "slowreg": 1.0, "slow_rate": 0.02,
         "loss_scales": {"dec": 1.0, "rew": 1.0, "con": 1.0, "dyn": 1.0, "rep": 0.1, "policy": 1.0, "value": 1.0, "repval": 0.3},
         "opt": {"lr": 1e-3, "eps": 1e-20, "beta1": 0.9, "beta2": 0.999, "agc": 0.3, "warmup": 1}}


def make_batch(B: int = 2, T: int = 5, actions: int = 2) -> dict[str, torch.Tensor]:
    """A seeded batch (B, T) of a 3-D state observation and `actions`-D actions; each row starts an episode."""
    g = torch.Generator().manual_seed(1)
    batch = {
        "state": torch.randn(B, T, 3, generator=g),
        "action": torch.rand(B, T, actions, generator=g) * 2 - 1,
        "reward": torch.randn(B, T, generator=g),
        "is_first": torch.zeros(B, T, dtype=torch.bool),
        "is_last": torch.zeros(B, T, dtype=torch.bool),
        "is_terminal": torch.zeros(B, T, dtype=torch.bool),
    }
    batch["is_first"][:, 0] = True
    return batch


def assert_same_gradients(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = 1e-5) -> None:
    """The same parameters got the same gradients, each within `rtol` of its largest entry: sums in another
    order differ by rounding relative to a gradient's scale (a bias before a norm sums large opposite terms)."""
    assert set(a) == set(b), set(a) ^ set(b)
    for name, grad in a.items():
        scale = max(grad.abs().max().item(), 1e-6)
        torch.testing.assert_close(grad, b[name], rtol=0, atol=rtol * scale, msg=name)


def observe_loss(post: dict[str, torch.Tensor], prior: torch.Tensor, seed: int = 5) -> torch.Tensor:
    """A loss on everything RSSM.observe returns, each part under fixed random weights: every parameter gets a
    gradient, and none is a small difference of large terms (a constant weight on the straight-through samples
    cancels in the softmax), so rounding stays small against each gradient."""
    g = torch.Generator().manual_seed(seed)
    parts = (post["deter"], post["logits"].exp(), post["stoch"], prior)
    return sum((x * torch.randn(x.shape, generator=g)).sum() for x in parts)
