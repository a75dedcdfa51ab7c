"""How an update runs (`run.compile`): eagerly, with its recurrent steps compiled, or as one compiled graph.

    none     eager PyTorch
    steps    torch.compile the step bodies of the recurrent loops (observe, imagine) and the heads' norm and
             activation; the loops themselves and the optimiser step stay in Python
    update   torch.compile the whole update (`Agent.update`: losses, gradients, clipping, the LaProp step, slow critic,
             return normaliser, target networks, the non-finite skip) as one graph (`fullgraph=True`); on CUDA that
             graph is replayed as a CUDA graph (inductor's `reduce-overhead` mode: the inputs are copied into static
             buffers, the graph is captured after warm-up and captured again for a new batch shape)
    auto     per device, what measured fastest: `update` on CUDA, `steps` on a CPU (docs/scaling.md has the figures)

`Agent.update` reads nothing back from the device, which is what lets it be one graph. Under torchrun the gradient
all-reduce and the gather of the returns are collectives between ranks: `update` then compiles without fullgraph,
and the update is split at those two calls into three graphs (documented in docs/scaling.md).
"""

from __future__ import annotations

from typing import Any

import torch

from worldmodels.models.nets import NormAct, compiled_rms_silu
from worldmodels.models.options import choice

COMPILE_MODES = ("auto", "none", "steps", "update")
# Before 0.5 run.compile was a switch: true compiled the steps.
LEGACY_MODES = {True: "steps", False: "none"}


def resolve(mode: str | bool, device: torch.device | str) -> str:
    """The mode `mode` stands for on `device` (`auto`: see the module docstring; true and false: their old meaning)."""
    mode = choice("run.compile", LEGACY_MODES.get(mode, mode) if isinstance(mode, bool) else mode, COMPILE_MODES)
    if mode != "auto":
        return mode
    return "update" if torch.device(device).type == "cuda" else "steps"


def compile_steps(agent: Any) -> None:
    """`steps`: torch.compile the per-step functions of the recurrent loops (observe and imagine).

    Only the step bodies are compiled, so the Python loops over time stay short to trace and the same code runs
    eagerly when compile is off. The heads outside those steps (critic, reward, continue on 16 x 1024 imagined
    states) get their norm and activation fused. Compiling takes tens of seconds at start-up."""
    agent.wm.dynamics.compile_steps()  # the RSSM's observe loop step (the Transformer filters in one pass: nothing)
    agent._imagine_step = torch.compile(agent._imagine_step, dynamic=False)
    for module in agent.modules():
        if isinstance(module, NormAct):
            module.norm_act = compiled_rms_silu()


def autograd_in_graph() -> Any:
    """The dynamo setting under which `torch.autograd.grad` is traced into the graph instead of breaking it; a
    context, so the process-wide config is left as it was."""
    return torch._dynamo.config.patch(trace_autograd_ops=True)


class Updater:
    """`updater(batch, start) -> (metrics, posterior latents)`: one `Agent.update`, run the chosen way.

    Outputs are tensors on the agent's device (read them back when a log line is due). On CUDA in `update` mode they
    are copied out of the CUDA graph's memory, which the next replay overwrites.
    """

    def __init__(self, agent: Any, mode: str = "none", backend: str = "inductor"):
        self.agent = agent
        self.backend = backend  # torch.compile's backend for `update` (tests use aot_eager: the same graph, not codegen)
        self.mode = resolve(mode, agent.device)
        self.cuda = agent.device.type == "cuda"
        self._compiled = None
        if self.mode == "steps":
            compile_steps(agent)

    def compiled(self) -> Any:
        """The compiled update, made at the first call: by then the runtime has set the agent's hooks (torchrun)."""
        if self._compiled is None:
            split = self.agent.grad_hook is not None or self.agent.returns_hook is not None  # collectives: see above
            cudagraphs = self.cuda and self.backend == "inductor"
            if cudagraphs:  # the optimiser's state is written in place by the graph: give it fixed addresses, as
                # parameters and buffers have, so the CUDA graph may mutate it instead of being skipped
                for group in self.agent.opt.param_groups:
                    torch._dynamo.mark_static_address(group["step"])
                for state in self.agent.opt.state.values():
                    for value in state.values():
                        torch._dynamo.mark_static_address(value)
            self._compiled = torch.compile(self.agent.update, fullgraph=not split, dynamic=False, backend=self.backend,
                                           mode="reduce-overhead" if cudagraphs else None)
        return self._compiled

    def __call__(self, batch: dict[str, torch.Tensor], start: Any = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        self.agent.train()
        if self.mode != "update":
            return self.agent.update(batch, start)
        with autograd_in_graph():
            if self.cuda:
                torch.compiler.cudagraph_mark_step_begin()
            metrics, latents = self.compiled()(batch, start)
        if self.cuda:
            metrics = {k: v.clone() for k, v in metrics.items()}
            latents = {k: v.clone() for k, v in latents.items()}
        return metrics, latents


def graph_breaks(agent: Any, batch: dict[str, torch.Tensor], start: Any = None) -> tuple[int, list[str]]:
    """The number of graph breaks dynamo meets tracing `agent.update` on `batch`, and their reasons. Nothing is
    compiled, but tracing runs the update once, so it changes the agent: pass a copy you can throw away."""
    with autograd_in_graph():
        explained = torch._dynamo.explain(agent.update)(batch, start)
    return explained.graph_break_count, [str(b.reason) for b in explained.break_reasons]
