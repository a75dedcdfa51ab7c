"""Factories that turn the validated config into the objects of a run (shared by train and evaluate)."""

from __future__ import annotations

import contextlib
import functools
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from worldmodels import envs
from worldmodels.agent.agent import Agent
from worldmodels.cpu.matmul import onednn_enabled, set_onednn
from worldmodels.envs.load import FACTORIES
from worldmodels.replay.buffer import Replay, ReplayStreams
from worldmodels.replay.buffer import make_replay as build_replay
from worldmodels.runtime.driver import Driver, VectorDriver
from worldmodels.runtime.errors import UserError, exit_with
from worldmodels.strategies.compile import Updater
from worldmodels.strategies.compile import resolve as resolve_compile
from worldmodels.strategies.cpu import use_cpu_speedups

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")  # worldmodels/configs, installed with the package


def check_overrides(argv: list[str]) -> None:
    """Compose the config once before Hydra does, so an unknown preset or key gets one line, not Hydra's page.

    Hydra's own flags (--help, --cfg, -m, ...) are left to Hydra.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if any(arg.startswith("-") for arg in argv):
        return
    try:
        with initialize_config_dir(CONFIG_DIR, version_base=None):
            compose("config", argv)
    except (HydraException, OmegaConfBaseException) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        message = lines[0] if lines else type(e).__name__
        if "Available options" in str(e):
            group = str(e).split("Available options in '")[1].split("'")[0]
            options = [line for line in lines if line and " " not in line and "=" not in line]
            message += f" (available {group} presets: {', '.join(options)})"
        if "not in struct" in str(e):
            message += " There is no such config key (see worldmodels/configs/config.yaml)."
        raise UserError(message) from None


def register_env_suites() -> None:
    """Give each third-party environment suite (envs.plugin_suites) a config, so `env=<name>` composes like a
    built-in one (worldmodels/configs/env/*.yaml) without a file here; a file of the same name wins."""
    from hydra.core.config_store import ConfigStore

    from worldmodels.envs.plugins import config_node

    store = ConfigStore.instance()
    for name in envs.plugin_suites():
        if not (Path(CONFIG_DIR) / "env" / f"{name}.yaml").exists():
            store.store(group="env", name=name, node=config_node(name))


def entry_point(hydra_main: Callable[[], None]) -> None:
    """Run a Hydra main after checking the command line's overrides (one-line errors, exit 2)."""
    register_env_suites()
    try:
        check_overrides(sys.argv[1:])
    except UserError as e:
        exit_with(e)
    hydra_main()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def process_settings(threads: int, onednn: bool) -> Iterator[None]:
    """Torch's CPU thread count and the oneDNN routing for the length of a run, put back as they were when
    it ends, so a notebook, script or test that calls `train` keeps its own settings."""
    saved = torch.get_num_threads(), onednn_enabled()
    set_threads(threads)
    set_onednn(onednn)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        set_onednn(saved[1])


# Options of how many envs run and where (make_vector_env), not of one env.
VECTOR_OPTIONS = ("num_envs", "vector")


def make_env(env_cfg: DictConfig, seed: int) -> gym.Env | gym.vector.VectorEnv:
    """Build one configured environment (or, where the env is already batched, that VectorEnv, see envs.vector); bad names
    or unsupported spaces become one-line UserErrors."""
    try:
        return envs.make(env_cfg.suite, env_cfg.id, seed=seed, **env_options(env_cfg))
    except (ValueError, TypeError) as e:
        raise UserError(f"env: {e}") from None


def env_options(env_cfg: DictConfig) -> dict[str, Any]:
    """What the suite's factory takes from the env config: everything but the names and the vector options."""
    # `task` is an alias some suites use for `id` (env=dmc env.task=walker-walk).
    skip = ("suite", "id", "task", *VECTOR_OPTIONS)
    return {k: v for k, v in OmegaConf.to_container(env_cfg, resolve=True).items() if k not in skip}


def make_vector_env(
    env_cfg: DictConfig, seed: int, max_failures: int = 10, make: Callable[[DictConfig, int], Any] = make_env
) -> gym.vector.VectorEnv:
    """The training envs: `env.num_envs` copies of the configured env (`env.vector`: sync, async or auto, see
    envs.vector.make_vector), copy i seeded with seed + i * 100000; or, where the env is already batched, that env as
    it is. `make(env_cfg, seed)` builds one (make_env: then the copies are built by envs.vector.build_env, which
    takes the factories worldmodels.fit registered along to worker processes)."""
    from worldmodels.envs.vector import build_env, make_vector

    first = make(env_cfg, seed)
    count, mode = int(env_cfg.get("num_envs", 1)), str(env_cfg.get("vector", "auto"))
    if isinstance(first, gym.vector.VectorEnv):
        if count not in (1, first.num_envs):
            first.close()
            raise UserError(f"env: env.num_envs={count}, but {env_cfg.id} is already batched with {first.num_envs} envs: "
                            "leave env.num_envs at 1 (or set it to the env's own number)")
        return first
    if make is make_env:  # factories `fit` registered in this process go along to the workers
        build = functools.partial(build_env, env_cfg.suite, env_cfg.id, env_options(env_cfg), dict(FACTORIES))
    else:
        build = functools.partial(make, env_cfg)
    try:
        return make_vector(build, count, mode, seed, max_failures, first=first)
    except (ValueError, TypeError) as e:
        raise UserError(f"env: {e}") from None


def make_replay(cfg: DictConfig, directory: Path, streams: int, window: int) -> Replay | ReplayStreams:
    """The run's replay (worldmodels.replay.buffer.make_replay): one stream per env; every stream must hold a whole window."""
    if cfg.replay.capacity // streams < window:
        raise UserError(f"config value replay.capacity={cfg.replay.capacity} is invalid: {streams} envs each keep "
                        f"{cfg.replay.capacity // streams} steps, fewer than batch.length + replay.context = {window}")
    online = window if cfg.replay.online else 0
    store = directory if cfg.replay.persist else None
    return build_replay(cfg.replay.capacity, cfg.seed, store, cfg.replay.chunk, online, streams)


def make_agent(cfg: DictConfig, env: gym.Env) -> Agent:
    """The agent `cfg` describes, for `env`'s spaces, with the CPU strategy applied on a CPU (worldmodels/strategies/cpu.py)
    unless the whole update is compiled (`run.compile=update` takes the plain model); see Updater for compiling."""
    try:
        agent = Agent(
            getattr(env, "single_observation_space", env.observation_space),  # one env's spaces, also of a VectorEnv
            getattr(env, "single_action_space", env.action_space),
            OmegaConf.to_container(cfg.model, resolve=True),
            OmegaConf.to_container(cfg.agent, resolve=True),
            device=cfg.device,
            # checkpoints before 0.3 have no `dynamics`: they are RSSM runs
            dynamics=OmegaConf.to_container(cfg.dynamics, resolve=True) if "dynamics" in cfg else None,
            # ... and before 0.4 no `objective`: they reconstruct
            objective=OmegaConf.to_container(cfg.objective, resolve=True) if "objective" in cfg else None,
        )
    except ValueError as e:
        raise UserError(f"env {cfg.env.suite}/{cfg.env.id}: {e}") from None
    if compile_mode(cfg) != "update":
        use_cpu_speedups(agent, defer_grads=bool(cfg.run.get("defer_grads", True)))
    return agent


def compile_mode(cfg: DictConfig) -> str:
    """What `run.compile` means on the configured device (worldmodels/strategies/compile.py; `auto` resolved)."""
    try:
        return resolve_compile(cfg.run.get("compile", "none"), cfg.device)
    except ValueError as e:
        raise UserError(f"config value {e}") from None


def make_updater(cfg: DictConfig, agent: Agent) -> Updater:
    """How the run's updates execute (`run.compile`)."""
    return Updater(agent, compile_mode(cfg))


def make_drivers(
    cfg: DictConfig, agent: Agent, env: gym.vector.VectorEnv, eval_env: gym.Env | gym.vector.VectorEnv,
    make: Callable[[DictConfig, int], Any] = make_env, on_failure: Callable[[int], None] | None = None,
) -> tuple[VectorDriver, Driver | VectorDriver]:
    """The training driver (sampled actions; a failed env is rebuilt with fresh seeds, `on_failure(env index)` told)
    and the evaluation driver (`run.eval_mode` actions)."""
    repeat, limit = cfg.env.action_repeat, cfg.run.max_env_failures
    driver = VectorDriver(
        env, agent, "sample", repeat, max_failures=limit, on_failure=on_failure,
        recreate=lambda: make_vector_env(cfg.env, cfg.seed + 1000 + driver.failures, limit, make),
    )
    eval_driver = (VectorDriver if isinstance(eval_env, gym.vector.VectorEnv) else Driver)(
        eval_env, agent, cfg.run.eval_mode, repeat, max_failures=limit,
        recreate=lambda: make(cfg.env, cfg.seed + 20_000 + eval_driver.failures),
    )
    return driver, eval_driver


def to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Replay arrays -> tensors; flags stay boolean, everything else becomes float32 (uint8 images stay)."""
    out = {}
    for key, value in batch.items():
        tensor = torch.as_tensor(value)
        if tensor.dtype not in (torch.bool, torch.uint8):
            tensor = tensor.float()
        out[key] = tensor.to(device, non_blocking=True)
    return out
