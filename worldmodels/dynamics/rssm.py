"""Recurrent state-space model (RSSM) with a block-diagonal GRU, as in the current DreamerV3.

Per step t, with h the deterministic GRU state (`deter`) and z the one-hot samples of S categorical
latents of C classes (`stoch`):

    h_t = GRU(h_{t-1}, z_{t-1}, a_{t-1})      block GRU: each of the G blocks of h sees only itself and the
                                              shared inputs (gru_step)
    q(z_t | h_t, e_t)                         posterior from the encoder's embedding e_t (post_logits)
    p(z_t | h_t)                              prior, what imagination samples from (prior_logits)

Both categoricals mix 1% uniform into their probabilities (unimix) and are sampled with straight-through
gradients. The features every head reads are concat(h_t, flatten(z_t)).

This file is the plain path: it runs on a GPU and under bf16. On a CPU the setup code turns it into
`worldmodels.cpu.rssm.CpuRSSM` (worldmodels/strategies/cpu.py): the same parameters and the same math, with faster
products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worldmodels.dynamics.base import Dynamics, Spec, State
from worldmodels.models.distributions import sample_onehot, sample_onehot_index
from worldmodels.models.nets import MLP, BlockLinear, Linear, NormAct, RMSNorm
from worldmodels.models.options import invalid


class RSSM(Dynamics):
    """The RSSM behind the dynamics interface (dynamics/base.py): observe, imagine_step, starts; no options of its own.

    Args:
        embed_dim: size of the encoder output.
        action_dim: size of the (one-hot or continuous) action vector.
        deter, hidden, stoch, classes, blocks: widths from the size preset.
        unimix: uniform mixture of the prior and posterior categoricals.
    """

    def __init__(
        self,
        embed_dim: int,
        action_dim: int,
        deter: int = 512,
        hidden: int = 64,
        stoch: int = 32,
        classes: int = 4,
        blocks: int = 8,
        unimix: float = 0.01,
    ):
        self.check_options({}, {"deter": deter, "blocks": blocks})
        super().__init__(deter, stoch, classes, unimix)
        self.blocks = blocks
        # Inputs to the GRU: h, z and a each through Linear -> RMSNorm -> SiLU.
        self.in_deter = NormAct(deter, hidden)
        self.in_stoch = NormAct(stoch * classes, hidden)
        self.in_action = NormAct(action_dim, hidden)
        # The official block layer maps concat(block g of h, shared inputs) with block g's own weights. Its
        # shared half, the same input under each block's weights, is one dense layer (gru_hidden_shared);
        # the other half is block-diagonal (gru_hidden). Both keep the official fan-in, the whole block
        # layer's input width deter + blocks * 3 * hidden.
        block_in = deter + blocks * 3 * hidden
        self.gru_hidden = BlockLinear(deter, deter, blocks, fan_in=block_in)
        self.gru_hidden_shared = Linear(3 * hidden, deter, bias=False, fan_in=block_in)  # the bias is gru_hidden's
        self.gru_hidden_norm = RMSNorm(deter)
        self.gru_gates = BlockLinear(deter, 3 * deter, blocks)
        # Posterior: one hidden layer on concat(h, e), kept as its two halves so that the embed half runs on
        # whole sequences at once; the layer's one bias sits in the h half; both with fan-in deter + embed.
        self.post_deter = Linear(deter, hidden, fan_in=deter + embed_dim)
        self.post_embed = Linear(embed_dim, hidden, bias=False, fan_in=deter + embed_dim)
        self.post_norm = RMSNorm(hidden)
        self.post_out = Linear(hidden, stoch * classes)
        # Prior: two hidden layers on h.
        self.prior_net = MLP(deter, hidden, 2)
        self.prior_out = Linear(hidden, stoch * classes)

    @classmethod
    def check_options(cls, spec: Spec, model: Spec) -> None:
        """The GRU's blocks split deter evenly."""
        if model["deter"] % model["blocks"]:
            raise invalid("model.deter", model["deter"], f"must be divisible by model.blocks={model['blocks']}")

    @classmethod
    def from_config(cls, spec: Spec, embed_dim: int, action_dim: int, model: Spec, unimix: float) -> RSSM:
        widths = (model["deter"], model["hidden"], model["stoch"], model["classes"], model["blocks"])
        return cls(embed_dim, action_dim, *widths, unimix)

    def action_input(self, action: torch.Tensor) -> torch.Tensor:
        """Scale actions into [-1, 1] (scale_action) and embed them."""
        return self.in_action(self.scale_action(action))

    # -- the model -------------------------------------------------------------------------------
    def gru_step(self, deter: torch.Tensor, stoch: torch.Tensor, action_in: torch.Tensor) -> torch.Tensor:
        """h_t from h_{t-1} (n, D), z_{t-1} (n, S, C) and the embedded action a_{t-1} (n, hidden)."""
        n, g = deter.shape[0], self.blocks
        shared = torch.cat([self.in_deter(deter), self.in_stoch(stoch.reshape(n, -1)), action_in], -1)
        x = self.gru_hidden_shared(shared).reshape(n, g, -1) + self.gru_hidden.grouped(deter)
        x = F.silu(self.gru_hidden_norm(x.reshape(n, -1)))
        reset, cand, update = self.gru_gates.grouped(x).unflatten(-1, (3, -1)).unbind(2)  # each (n, G, D / G)
        cand = torch.tanh(torch.sigmoid(reset) * cand)
        update = torch.sigmoid(update - 1.0)  # the -1 biases each step towards keeping h
        # h_t = update * cand + (1 - update) * h_{t-1}; the state stays float32 under bf16 autocast.
        return torch.lerp(deter.reshape(n, g, -1), cand.to(deter.dtype), update.to(deter.dtype)).reshape(n, -1)

    def prior_logits(self, deter: torch.Tensor) -> torch.Tensor:
        """log p(z_t | h_t), (..., S, C)."""
        return self.latent_logits(self.prior_out(self.prior_net(deter)))

    def post_logits(self, deter: torch.Tensor, embed_in: torch.Tensor) -> torch.Tensor:
        """log q(z_t | h_t, e_t), (..., S, C); `embed_in` is post_embed(e_t)."""
        hidden = F.silu(self.post_norm(self.post_deter(deter) + embed_in))
        return self.latent_logits(self.post_out(hidden))

    def observe_step(
        self, deter: torch.Tensor, stoch: torch.Tensor, keep: torch.Tensor, action_in: torch.Tensor, embed_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One filtering step: the state is zeroed where keep is 0 (an episode's first step), then h_t, q, z_t ~ q."""
        deter = self.gru_step(deter * keep, stoch * keep[..., None], action_in)
        logits = self.post_logits(deter, embed_in)
        return deter, logits, sample_onehot(logits)

    def imagine_step(self, state: State, action: torch.Tensor) -> State:
        """One step of the prior under `action` (B, A): h_t, then z_t ~ p, with its class indices (B, S)."""
        deter = self.gru_step(state["deter"], state["stoch"], self.action_input(action))
        stoch, classes = sample_onehot_index(self.prior_logits(deter))
        return {"deter": deter, "stoch": stoch, "classes": classes}

    # -- the interface around it -----------------------------------------------------------------
    def observe(
        self, embed: torch.Tensor, prev_action: torch.Tensor, is_first: torch.Tensor, state: State
    ) -> tuple[State, torch.Tensor, State]:
        """Filter a sequence.

        Args:
            embed: (B, T, E) encoder outputs. prev_action: (B, T, A) action taken before each step.
            is_first: (B, T) resets the state (and previous action) to zeros where set.
            state: initial state, tensors (B, ...).
        Returns:
            post: dict of deter (B, T, D), stoch (B, T, S, C) and logits (B, T, S, C);
            prior_logits: (B, T, S, C); last: the final state, for carrying into the next call.
        """
        B, T = embed.shape[:2]
        assert prev_action.shape[:2] == (B, T) and is_first.shape == (B, T), (embed.shape, prev_action.shape, is_first.shape)
        keep = 1.0 - is_first.float()
        # What does not depend on the recurrence is computed for the whole sequence at once.
        action_in = self.action_input(prev_action * keep[..., None])
        embed_in = self.post_embed(embed)
        deter, stoch = state["deter"], state["stoch"]
        deters, stochs, logits = [], [], []
        for t in range(T):
            deter, post, stoch = self.observe_step(deter, stoch, keep[:, t, None], action_in[:, t], embed_in[:, t])
            deters.append(deter)
            stochs.append(stoch)
            logits.append(post)
        post_state = {"deter": torch.stack(deters, 1), "stoch": torch.stack(stochs, 1), "logits": torch.stack(logits, 1)}
        return post_state, self.prior_logits(post_state["deter"]), {"deter": deter, "stoch": stoch}

    def starts(self, post: State, state: State) -> State:
        """Imagination start states (B * T, ...): every posterior state of the window, detached (the
        GRU carries nothing else; `state` is unused)."""
        return {k: post[k].detach().reshape(-1, *post[k].shape[2:]) for k in ("deter", "stoch")}

    def compile_steps(self) -> None:
        """torch.compile the observe loop's step (run.compile=steps, worldmodels/strategies/compile.py)."""
        self.observe_step = torch.compile(self.observe_step, dynamic=False)
