"""Data-parallel training (worldmodels/runtime/distributed.py, `torchrun -m worldmodels.train`), two CPU processes on gloo:
the averaged gradient of two ranks is the gradient of their whole batch, the ranks stay identical update after
update, kill -9 of one rank leaves the checkpoint whole and the run resumes, and another world size is refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from tests.tiny import TINY_AGENT, TINY_MODEL, make_batch
from worldmodels.runtime.checkpoint import load_checkpoint
from worldmodels.runtime.errors import UserError
from worldmodels.runtime.setup import CONFIG_DIR

WORLD = 2
UPDATES = 3  # updates after which the ranks' weights are compared


def constant_rand(*size, device=None, dtype=None, **_):
    """torch.rand with one value everywhere: every latent and action sample becomes a fixed function of its own
    row's probabilities, so half a batch samples what the whole batch samples on those rows."""
    shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
    return torch.full(tuple(shape), 0.37, device=device, dtype=dtype or torch.get_default_dtype())


def tiny_agent(seed: int):
    from worldmodels.agent.agent import Agent

    torch.manual_seed(seed)
    obs = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (3,), np.float32)})
    agent = Agent(obs, gym.spaces.Discrete(2), TINY_MODEL, {**TINY_AGENT, "retnorm_rate": 0.5})
    # Imagined rewards and values that are not all zero (their heads start at zero), and a return scale above its
    # floor (retnorm_limit 1), so the percentiles of the returns shape the policy gradient.
    with torch.no_grad():
        for head in (agent.wm.reward, agent.critic):
            head.out.weight.normal_(0.0, 3.0)
            head.out.bias.copy_(-3 * (head.bins - 1).abs())  # most probability on bins near 1: returns of a few units
        agent.slow_critic.load_state_dict(agent.critic.state_dict())
    agent.retnorm.hi.fill_(3.0)
    return agent


def whole_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    batch = make_batch(B=2 * WORLD, T=6)
    batch["action"] = F.one_hot(batch["action"].argmax(-1), 2).float()
    batch["reward"] = batch["reward"] * 3  # returns spread wider than the normaliser's floor
    return batch


def half(batch: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    rows = len(batch["reward"]) // WORLD
    return {k: v[rank * rows:(rank + 1) * rows] for k, v in batch.items()}


def record_grads(agent) -> dict[str, torch.Tensor]:
    """The gradients each update of `agent` steps with (after its grad_hook, if any), by parameter name, in the dict
    returned (filled by every update)."""
    names = {id(p): name for name, p in agent.named_parameters()}
    params = [p for group in agent.opt.param_groups for p in group["params"]]
    inner, seen = agent.grad_hook, {}

    def hook(grads, finite):
        if inner is not None:
            grads, finite = inner(grads, finite)
        seen.clear()
        seen.update({names[id(p)]: g.clone() for p, g in zip(params, grads) if g is not None})
        return grads, finite

    agent.grad_hook = hook
    return seen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_parallel_worker(rank: int, port: int, out: str) -> None:
    """One rank: join the group as torchrun would set it up, take rank 0's weights, train on its half batches."""
    from worldmodels.runtime import distributed

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.rand = constant_rand  # this process only
    with distributed.process_group("cpu") as world:
        assert world.size == WORLD and world.rank == rank
        agent = tiny_agent(seed=rank)  # different initial weights on each rank ...
        distributed.broadcast_(list(agent.state_dict().values()))  # ... until rank 0's are broadcast
        distributed.data_parallel(agent)
        grads = record_grads(agent)
        agent.train_step(half(whole_batch(), rank))
        first = {
            "grads": dict(grads),
            "weights": {k: v.clone() for k, v in agent.state_dict().items()},
        }
        for update in range(1, UPDATES):  # each rank its own batches, as from its own replay
            agent.train_step(half(whole_batch(seed=10 * update + rank), rank))
        torch.save({"first": first, "last": agent.state_dict(), "opt": agent.opt.state_dict()}, Path(out) / f"rank{rank}.pt")


def spawn(fn, *args, timeout: float = 120.0) -> None:
    """Run fn(rank, *args) in WORLD fresh processes; a worker that raises fails the test, one that hangs is killed."""
    import torch.multiprocessing as mp

    context = mp.start_processes(fn, args=args, nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1.0):
            assert time.monotonic() < deadline, f"workers still running after {timeout} s"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ranks")
    spawn(data_parallel_worker, free_port(), str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_averaged_gradients_of_two_ranks_are_the_gradient_of_the_whole_batch(ranks, monkeypatch, single_thread):
    monkeypatch.setattr(torch, "rand", constant_rand)
    with torch.random.fork_rng():
        agent = tiny_agent(seed=0)  # rank 0's weights, which both ranks trained from
        expected = record_grads(agent)
        agent.train_step(whole_batch())  # one process, the whole batch
    for rank in ranks:
        grads = rank["first"]["grads"]
        assert grads.keys() == expected.keys()
        # Equal up to float32 rounding (sums over 2 x half a batch, in another order), relative to each tensor's scale.
        errors = {name: float((grads[name] - grad).abs().max() / grad.abs().max().clamp(min=1e-12)) for name, grad in expected.items()}
        worst = max(errors, key=errors.get)
        assert errors[worst] < 1e-4, (worst, errors[worst])
    # The return percentiles came from both ranks' returns: the normaliser moved as it did on the whole batch.
    for key in ("retnorm.lo", "retnorm.hi"):
        torch.testing.assert_close(ranks[0]["first"]["weights"][key], agent.state_dict()[key], rtol=1e-5, atol=1e-6)


def test_ranks_hold_identical_weights_optimiser_and_normaliser_after_updates(ranks):
    first, second = ranks
    for key, value in first["last"].items():  # every weight, the slow critic and the return normaliser
        assert torch.equal(value, second["last"][key]), key
    assert any(not torch.equal(value, first["first"]["weights"][key]) for key, value in first["last"].items())  # they did train
    for a, b in zip(first["opt"]["state"].values(), second["opt"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert first["opt"]["param_groups"][0]["step"] == second["opt"]["param_groups"][0]["step"] == UPDATES


# -- end to end: torchrun -m worldmodels.train ------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["env=dummy", "model=debug", "run.progress=false", "run.eval_every=0", "run.save_every=25", "run.log_every=25",
        "run.train_start=32", "run.train_ratio=8", "replay.chunk=20", "run.threads=1"]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", "-m", "worldmodels.train", *args]


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(v.split(b"=", 1)[1]) for v in environ if v.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> dict:
    """A two-rank torchrun run killed with kill -9 on rank 1 after its second checkpoint, then rerun (the same command,
    more steps) to completion."""
    tmp = tmp_path_factory.mktemp("torchrun")
    run_dir = tmp / "run"
    args = [*ARGS, f"run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp / "first.log", "w") as log:
        proc = subprocess.Popen(torchrun(*args, "run.steps=100000"), cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 180
            while time.time() < deadline and proc.poll() is None:
                if (run_dir / "checkpoints" / "latest").exists() and load_checkpoint(run_dir / "checkpoints")["step"] >= 50:
                    break
                time.sleep(0.2)
            assert proc.poll() is None, (tmp / "first.log").read_text()[-3000:]
            rank1 = [pid for pid in children(proc.pid) if rank_of(pid) == 1]
            assert len(rank1) == 1, children(proc.pid)
            os.kill(rank1[0], signal.SIGKILL)
            code = proc.wait(timeout=120)  # rank 0 stops on its own (its peer is gone), torchrun reports the failure
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    killed = load_checkpoint(run_dir / "checkpoints" / "latest")  # whole, not the fallback `previous`
    resumed = subprocess.run(torchrun(*args, f"run.steps={killed['step'] + 20}"), cwd=tmp, env=env, capture_output=True, text=True,
                             timeout=240, check=False)
    return {"run_dir": run_dir, "code": code, "killed": killed, "resumed": resumed}


def test_kill_9_of_one_rank_keeps_the_checkpoint_and_the_rerun_resumes_every_rank(killed_and_resumed):
    run_dir, killed, resumed = (killed_and_resumed[k] for k in ("run_dir", "killed", "resumed"))
    assert killed_and_resumed["code"] != 0
    assert killed["world_size"] == WORLD and killed["step"] >= 50
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run_dir} at step {killed['step']}" in resumed.stderr
    final = load_checkpoint(run_dir / "checkpoints" / "latest")
    assert final["step"] == killed["step"] + 20 and final["updates"] > killed["updates"]
    rank1 = load_checkpoint(run_dir / "checkpoints" / "rank1" / "latest")
    assert rank1["saves"] == final["saves"] and rank1["step"] == final["step"]  # the same episodes: the ranks keep pace
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == final["step"]
    for shard in (run_dir / "replay", run_dir / "replay" / "rank1"):  # each rank kept its own replay
        assert sorted(shard.glob("*.npz"))


def test_a_changed_world_size_is_refused_in_one_line_and_nothing_changes(killed_and_resumed):
    run_dir = killed_and_resumed["run_dir"]
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("config", [*ARGS, f"run.dir={run_dir}", "run.steps=100000"])
    from worldmodels.train import train

    before = snapshot(run_dir)
    with pytest.raises(UserError) as error:
        train(cfg)  # one process: world size 1
    message = str(error.value)
    assert "\n" not in message and f"trained by {WORLD} process" in message and "has 1" in message
    assert snapshot(run_dir) == before
