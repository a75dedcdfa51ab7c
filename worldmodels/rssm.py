"""Recurrent state-space model (RSSM) with a block-diagonal GRU, as in the current DreamerV3.

State: `deter` (B, D) deterministic GRU state and `stoch` (B, S, C) one-hot categorical latents.
Features read by every head: concat(deter, flatten(stoch)).
"""

from __future__ import annotations

import torch
from torch import nn

from worldmodels.distributions import sample_onehot, unimix_logits
from worldmodels.nets import MLP, BlockLinear, Linear, NormAct, RMSNorm

State = dict[str, torch.Tensor]


class RSSM(nn.Module):
    """Dynamics model with the interface the agent relies on: initial, observe, imagine_step, feat.

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
        super().__init__()
        if deter % blocks:
            raise ValueError(f"model.deter={deter} must be divisible by model.blocks={blocks}")
        self.deter, self.stoch, self.classes, self.blocks, self.unimix = deter, stoch, classes, blocks, unimix
        self.feat_dim = deter + stoch * classes
        # Inputs to the GRU: deter, stoch and action each through Linear -> Norm -> SiLU.
        self.in_deter = NormAct(deter, hidden)
        self.in_stoch = NormAct(stoch * classes, hidden)
        self.in_action = NormAct(action_dim, hidden)
        # The official block layer maps concat(deter block, shared inputs) per block. Its shared half applies
        # each block's own weights to the same input, which is exactly one dense layer: splitting it this way
        # computes the same function without copying the shared inputs into every block.
        group_in = deter // blocks + 3 * hidden
        self.gru_hidden = BlockLinear(deter, deter, blocks, fan_in=group_in)
        self.gru_hidden_shared = Linear(3 * hidden, deter, bias=False, fan_in=group_in)  # the bias is gru_hidden's
        self.gru_hidden_norm = RMSNorm(deter)
        self.gru_gates = BlockLinear(deter, 3 * deter, blocks)
        # Posterior q(z | h, e): one hidden layer on concat(deter, embed); the embed half is applied to
        # whole sequences at once, and the layer's one bias sits in the deter half.
        self.post_deter = Linear(deter, hidden)
        self.post_embed = Linear(embed_dim, hidden, bias=False)
        self.post_norm = RMSNorm(hidden)
        self.post_out = Linear(hidden, stoch * classes)
        # Prior p(z | h): two hidden layers.
        self.prior_net = MLP(deter, hidden, 2)
        self.prior_out = Linear(hidden, stoch * classes)

    # -- pieces --------------------------------------------------------------------------------
    def initial(self, batch: int, device: torch.device | str = "cpu") -> State:
        return {
            "deter": torch.zeros(batch, self.deter, device=device),
            "stoch": torch.zeros(batch, self.stoch, self.classes, device=device),
        }

    def feat(self, state: State) -> torch.Tensor:
        stoch = state["stoch"]
        return torch.cat([state["deter"], stoch.reshape(*stoch.shape[:-2], -1)], -1)

    def action_input(self, action: torch.Tensor) -> torch.Tensor:
        """Scale actions into [-1, 1] (the official `action / max(1, |action|)`) and embed them."""
        action = action / torch.clamp(action.detach().abs(), min=1.0)
        return self.in_action(action)

    def _gru(self, deter: torch.Tensor, stoch: torch.Tensor, action_in: torch.Tensor) -> torch.Tensor:
        """One block-GRU step; every block sees the shared inputs and only its own slice of deter."""
        n, g = deter.shape[0], self.blocks
        shared = torch.cat([self.in_deter(deter), self.in_stoch(stoch.reshape(n, -1)), action_in], -1)
        # Block outputs stay (n, g, ·) in block-major memory; each sum or blend below starts from a
        # contiguous operand, whose layout the result takes, so no (n, 3 * deter) copy is made.
        x = self.gru_hidden_shared(shared).reshape(n, g, -1) + self.gru_hidden.grouped(deter)
        x = torch.nn.functional.silu(self.gru_hidden_norm(x.reshape(n, -1)))
        reset, cand, update = self.gru_gates.grouped(x).unflatten(-1, (3, -1)).unbind(2)
        cand = torch.tanh(torch.sigmoid(reset) * cand)
        update = torch.sigmoid(update - 1.0)
        return torch.lerp(deter.reshape(n, g, -1), cand, update).reshape(n, -1)

    def _stoch_logits(self, hidden: torch.Tensor, out: nn.Module) -> torch.Tensor:
        logits = out(hidden).reshape(*hidden.shape[:-1], self.stoch, self.classes)
        return unimix_logits(logits, self.unimix)

    def prior_logits(self, deter: torch.Tensor) -> torch.Tensor:
        return self._stoch_logits(self.prior_net(deter), self.prior_out)

    def post_logits(self, deter: torch.Tensor, embed_in: torch.Tensor) -> torch.Tensor:
        hidden = torch.nn.functional.silu(self.post_norm(self.post_deter(deter) + embed_in))
        return self._stoch_logits(hidden, self.post_out)

    # -- interface -----------------------------------------------------------------------------
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
        keep = (1.0 - is_first.float())
        # Everything that does not depend on the recurrence is computed for the whole sequence at once.
        action_in = self.action_input(prev_action * keep[..., None])
        embed_in = self.post_embed(embed)
        deter, stoch = state["deter"], state["stoch"]
        deters, stochs, logits = [], [], []
        for t in range(T):
            deter, post, stoch = self._observe_step(deter, stoch, keep[:, t, None], action_in[:, t], embed_in[:, t])
            deters.append(deter)
            stochs.append(stoch)
            logits.append(post)
        post_state = {"deter": torch.stack(deters, 1), "stoch": torch.stack(stochs, 1), "logits": torch.stack(logits, 1)}
        prior = self.prior_logits(post_state["deter"])
        return post_state, prior, {"deter": deter, "stoch": stoch}

    def _observe_step(
        self, deter: torch.Tensor, stoch: torch.Tensor, keep: torch.Tensor, action_in: torch.Tensor, embed_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One filtering step (reset where keep is 0, GRU, posterior, sample): the unit torch.compile sees."""
        deter = self._gru(deter * keep, stoch * keep[..., None], action_in)
        post = self.post_logits(deter, embed_in)
        return deter, post, sample_onehot(post)

    def imagine_step(self, state: State, action: torch.Tensor) -> State:
        """Step the prior forward: (B, ...) state and (B, A) action -> next state sampled from the prior."""
        deter = self._gru(state["deter"], state["stoch"], self.action_input(action))
        stoch = sample_onehot(self.prior_logits(deter))
        return {"deter": deter, "stoch": stoch}

    def obs_step(self, state: State, prev_action: torch.Tensor, embed: torch.Tensor, is_first: torch.Tensor) -> State:
        """One filtering step for acting in the environment: (B, ...) tensors, no time axis."""
        _, _, last = self.observe(embed[:, None], prev_action[:, None], is_first[:, None], state)
        return last
