"""CNN encoder/decoder for image observations, and a world model / agent that mixes images and vectors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.tiny import TINY_AGENT, TINY_MODEL
from worldmodels.agent.agent import Agent
from worldmodels.models.conv import ConvDecoder, ConvEncoder

MODEL, AGENT = TINY_MODEL, TINY_AGENT


@pytest.mark.parametrize("size", [8, 32, 64])
def test_encoder_decoder_shapes_and_gradients(size):
    torch.manual_seed(0)
    enc, dec = ConvEncoder((size, size, 3), depth=2), ConvDecoder(20, (size, size, 3), depth=2)
    convs = [m for m in [*enc.modules(), *dec.modules()] if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(c.bias is not None and (c.bias == 0).all() for c in convs)  # biased, as the official Conv2D
    image = torch.randint(0, 256, (2, 5, size, size, 3), dtype=torch.uint8)
    emb = enc(image)
    assert emb.shape == (2, 5, enc.out_dim) and enc.out_dim == 2 * {8: 2, 32: 4, 64: 4}[size] * 16
    feat = torch.randn(2, 5, 20, requires_grad=True)
    assert dec(feat).shape == (2, 5, size, size, 3)
    loss = dec.loss(feat, image)
    assert loss.shape == (2, 5)
    (loss.sum() + emb.square().sum()).backward()
    for module in (enc, dec):
        for name, p in module.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert feat.grad.abs().sum() > 0


def test_decoder_loss_is_the_summed_pixel_error():
    dec = ConvDecoder(4, (8, 8, 1), depth=1)
    image = torch.full((1, 1, 8, 8, 1), 255, dtype=torch.uint8)
    with torch.no_grad():
        pred = dec(torch.zeros(1, 1, 4))
    expected = ((pred - 0.5) ** 2).sum()
    assert torch.allclose(dec.loss(torch.zeros(1, 1, 4), image).sum(), expected)
    assert ConvDecoder.to_pixels(torch.tensor([-1.0, 0.0, 0.5, 2.0])).tolist() == [0.0, 128.0, 255.0, 255.0]


def test_only_the_pixels_for_display_are_clipped():
    """The decoder predicts pixel / 255 - 0.5 without bounds and its loss is the squared error to that target on the
    raw prediction, so predictions beyond the pixel range still count (and are pulled back); only to_pixels, the
    observation-unit view, clips to [0, 255] and rounds, and it inverts the loss's target mapping exactly."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # the layers initialise from the global generator
        torch.manual_seed(0)
        dec = ConvDecoder(6, (8, 8, 3), depth=2)
    with torch.no_grad():
        dec.net[-1].weight.mul_(20.0)  # predictions well outside [-0.5, 0.5] on both sides
    feat = torch.randn(2, 3, 6, generator=g)
    image = torch.randint(0, 256, (2, 3, 8, 8, 3), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        raw = dec(feat)
        loss = dec.loss(feat, image)
    assert (raw < -0.5).sum() > 20 and (raw > 0.5).sum() > 20
    expected = ((raw.double().numpy() - (image.numpy() / 255.0 - 0.5)) ** 2).reshape(2, 3, -1).sum(-1)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    np.testing.assert_array_equal(ConvDecoder.to_pixels(raw).numpy(), np.round(np.clip(raw.numpy() + 0.5, 0, 1) * 255))
    assert torch.equal(ConvDecoder.to_pixels(image.float() / 255.0 - 0.5), image.float())


@pytest.mark.parametrize("shape", [(64, 32, 3), (48, 48, 3), (4, 4, 3)])
def test_unsupported_image_shapes(shape):
    with pytest.raises(ValueError, match="not supported"):
        ConvEncoder(shape, depth=2)


def test_agent_with_image_and_vector_observations_trains_and_acts():
    torch.manual_seed(0)
    obs_space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8), "state": gym.spaces.Box(-1, 1, (3,), np.float32)})
    agent = Agent(obs_space, gym.spaces.Box(-1, 1, (2,), np.float32), MODEL, AGENT)
    B, T = 2, 6
    batch = {
        "image": torch.randint(0, 256, (B, T, 16, 16, 3), dtype=torch.uint8),
        "state": torch.randn(B, T, 3),
        "action": torch.rand(B, T, 2) * 2 - 1,
        "reward": torch.randn(B, T),
        "is_first": torch.zeros(B, T, dtype=torch.bool),
        "is_last": torch.zeros(B, T, dtype=torch.bool),
        "is_terminal": torch.zeros(B, T, dtype=torch.bool),
    }
    before = {k: v.clone() for k, v in agent.wm.decoder.images["image"].state_dict().items()}
    metrics = agent.train_step(batch)
    assert metrics["train/nonfinite"] == 0 and np.isfinite(metrics["loss/dec"])
    after = agent.wm.decoder.images["image"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    obs = {"image": np.zeros((3, 16, 16, 3), np.uint8), "state": np.zeros((3, 3), np.float32), "is_first": np.ones(3, bool)}
    action, _ = agent.policy(obs, None)
    assert action.shape == (3, 2)
    # predict() gives observation units: the image decoder's output (pixel / 255 - 0.5) clipped to the pixel range and
    # rounded, and the vector decoder's symlog prediction symexp'd back.
    feat = torch.randn(4, agent.wm.dynamics.feat_dim)
    with torch.no_grad():
        preds = agent.wm.decoder.predict(feat)
        raw_image = agent.wm.decoder.images["image"](feat).numpy()
        raw_state = agent.wm.decoder.vector(feat)["state"].numpy()
    assert preds["image"].shape == (4, 16, 16, 3) and preds["state"].shape == (4, 3)
    np.testing.assert_array_equal(preds["image"].numpy(), np.round(np.clip(raw_image + 0.5, 0, 1) * 255))
    np.testing.assert_allclose(preds["state"].numpy(), np.sign(raw_state) * np.expm1(np.abs(raw_state)), rtol=1e-6)


def test_unsupported_observation_is_named():
    obs_space = gym.spaces.Dict({"grid": gym.spaces.Box(0, 1, (4, 4), np.float32)})
    with pytest.raises(ValueError, match="'grid'.*not supported"):
        Agent(obs_space, gym.spaces.Discrete(2), MODEL, AGENT)
