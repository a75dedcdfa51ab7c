"""Validation of the composed config, before anything is built: one clear line naming the key.

The rules are those of worldmodels/models/options.py, each written once: the options of a dynamics backend are
checked by the backend's class, those of an objective by the objective's, as their constructors check them.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from worldmodels.models.options import INF, choice, flag, integer, invalid, number
from worldmodels.runtime.errors import UserError

KNOWN_SUITES = ("gym", "dummy", "dmc")  # built in; installed packages may add more (envs.suite_names)


def _get(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, throw_on_missing=False, default="__missing__")
    if value == "__missing__":
        raise UserError(f"config key '{key}' is missing")
    return value


def _int(cfg: DictConfig, key: str, low: int = 1) -> None:
    integer(key, _get(cfg, key), low)


def _float(cfg: DictConfig, key: str, low: float = 0.0, high: float = INF, strict_low: bool = False) -> None:
    number(key, _get(cfg, key), low, high, strict_low)


def _choice(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> None:
    choice(key, _get(cfg, key), choices)


def _suites() -> tuple[str, ...]:
    """Every environment suite: the built-in ones and those installed packages register (imported here, on use)."""
    from worldmodels import envs

    return tuple(envs.suite_names())


def validate(cfg: DictConfig, training: bool = True) -> None:
    """Raise UserError for the first invalid value found: `config value <key>=<value> is invalid: <why>`."""
    try:
        _validate(cfg, training)
    except ValueError as e:  # a rule's one line (worldmodels/models/options.py)
        raise UserError(f"config value {e}") from None


def _validate(cfg: DictConfig, training: bool) -> None:
    _int(cfg, "seed", 0)
    device = _get(cfg, "device")
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise invalid("device", device, "expected cpu, cuda, cuda:N or mps")
    _choice(cfg, "env.suite", _suites())
    if not isinstance(_get(cfg, "env.id"), str):
        raise invalid("env.id", _get(cfg, "env.id"), "expected a task name")
    _int(cfg, "env.action_repeat", 1)
    _int(cfg, "env.time_limit", 0)
    if "num_envs" in cfg.env:  # configs saved before it existed have one env
        _int(cfg, "env.num_envs", 1)
    if "vector" in cfg.env:
        _choice(cfg, "env.vector", ("auto", "sync", "async"))
    for key in ("deter", "hidden", "stoch", "classes", "blocks", "depth", "units"):
        _int(cfg, f"model.{key}", 1)
    _validate_dynamics(cfg)
    _validate_objective(cfg)
    for key in ("enc_layers", "dec_layers", "head_layers", "actor_layers", "critic_layers"):
        _int(cfg, f"model.{key}", 0)
    _float(cfg, "agent.horizon", 1.0, strict_low=True)
    _int(cfg, "agent.imag_length", 1)
    _float(cfg, "agent.lam", 0.0, 1.0)
    _float(cfg, "agent.free_bits", 0.0)
    _float(cfg, "agent.unimix", 0.0, 1.0)
    bins = _get(cfg, "agent.bins")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 3 or bins % 2 == 0:
        raise invalid("agent.bins", bins, "expected an odd integer >= 3")
    for key in ("actent", "slowreg"):
        _float(cfg, f"agent.{key}", 0.0)
    for key in ("slow_rate", "retnorm_rate"):
        _float(cfg, f"agent.{key}", 0.0, 1.0)
    _float(cfg, "agent.retnorm_limit", 0.0, strict_low=True)
    for key in _get(cfg, "agent.loss_scales"):
        _float(cfg, f"agent.loss_scales.{key}", 0.0)
    _float(cfg, "agent.opt.lr", 0.0, strict_low=True)
    _float(cfg, "agent.opt.eps", 0.0)
    _float(cfg, "agent.opt.beta1", 0.0, 1.0)
    _float(cfg, "agent.opt.beta2", 0.0, 1.0)
    _float(cfg, "agent.opt.agc", 0.0)
    _int(cfg, "agent.opt.warmup", 0)
    _int(cfg, "report.context", 1)
    _int(cfg, "report.horizon", 1)
    _int(cfg, "report.starts", 1)
    _int(cfg, "report.every", 0)
    if training:
        _int(cfg, "run.steps", 1)
        _float(cfg, "run.train_ratio", 0.0, strict_low=True)
        _int(cfg, "run.train_start", 0)
        for key in ("log_every", "eval_every", "save_every", "save_seconds", "threads", "video_every"):
            _int(cfg, f"run.{key}", 0)
        _int(cfg, "run.eval_episodes", 1)
        _int(cfg, "run.max_env_failures", 0)
        _int(cfg, "run.max_nonfinite", 1)
        _int(cfg, "replay.chunk", 1)
        _int(cfg, "replay.context", 0)
        for key in ("run.keep_memory", "run.onednn", "run.defer_grads", "replay.persist", "replay.online"):
            flag(key, _get(cfg, key))
        _choice(cfg, "run.eval_mode", ("mode", "sample"))
        compile_mode = _get(cfg, "run.compile")
        if not isinstance(compile_mode, bool):  # true / false: the switch before 0.5 (steps / none)
            from worldmodels.strategies.compile import COMPILE_MODES

            _choice(cfg, "run.compile", COMPILE_MODES)
        from worldmodels.agent.agent import PRECISIONS  # the agent's own list: the rule is written once

        _choice(cfg, "run.precision", PRECISIONS)
        _int(cfg, "batch.size", 1)
        _int(cfg, "batch.length", 2)
        _int(cfg, "replay.capacity", 1)
        window = cfg.batch.length + cfg.replay.context
        copies = cfg.env.get("num_envs", 1)  # each env has its own replay stream of capacity / num_envs steps
        if cfg.replay.capacity < window * copies:
            bound = (f"{copies} x (batch.length + replay.context) = {window * copies}" if copies > 1
                     else f"batch.length + replay.context = {window}")
            raise invalid("replay.capacity", cfg.replay.capacity, f"must be >= {bound}")
    else:
        _int(cfg, "episodes", 1)


def _validate_dynamics(cfg: DictConfig) -> None:
    """The backend's own rules (Dynamics.check_options), on its options and the size preset."""
    from worldmodels.dynamics import dynamics_class

    spec = _plain(cfg.dynamics) if "dynamics" in cfg else {"name": CHOICES["dynamics"][0]}  # before 0.3: an RSSM run
    dynamics_class(spec).check_options(spec, _plain(cfg.model))


def _validate_objective(cfg: DictConfig) -> None:
    if "objective" not in cfg:  # the config of a checkpoint before 0.4: a reconstruction run
        return
    from worldmodels.objectives import check_options

    check_options(_plain(cfg.objective))


# Settings a resumed run must share with the run it continues: they shape the networks, the
# environment and what the replay holds. Everything else (steps, intervals, ratios) may change.
RESUME_FIXED = ("env", "model", "dynamics", "objective", "agent.bins")


# Config groups whose choice (`name`) builds other networks, with what their choice was in runs saved before the
# group existed (before 0.3 the dynamics were an RSSM, before 0.4 the objective was reconstruction), and the words
# for it in messages.
CHOICES = {"dynamics": ("rssm", "dynamics backend"), "objective": ("recon", "objective")}


def chosen(cfg: DictConfig, group: str) -> str:
    """The name chosen in `group` (a key of CHOICES) by `cfg`, also of a run saved before the group existed."""
    return cfg[group].name if group in cfg else CHOICES[group][0]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


# Environment options added after runs were saved, with the value that gives those runs' behaviour: a run saved
# without one resumes when it has that value now (the gym suite taking any Gymnasium space, worldmodels/envs/spaces.py).
ADDED_ENV_OPTIONS = {"entry_point": None, "kwargs": None, "keys": ".*", "exclude": "", "joint_actions": 64, "size": 64,
                     "num_envs": 1, "vector": "auto", "distract": "none"}
# Environment options that may change on resume: where the env copies run (env.num_envs may not: each env has its
# own replay stream).
FREE_ENV_OPTIONS = ("vector",)


def resume_conflict(saved: DictConfig, new: DictConfig) -> str | None:
    """The first difference that makes `saved` impossible to continue under `new`, as a sentence, or None."""
    for key in RESUME_FIXED:
        before, after = _plain(OmegaConf.select(saved, key)), _plain(OmegaConf.select(new, key))
        if key == "env" and isinstance(before, dict) and isinstance(after, dict):
            before = {**{k: v for k, v in ADDED_ENV_OPTIONS.items() if k in after}, **before}
            before, after = ({k: v for k, v in d.items() if k not in FREE_ENV_OPTIONS} for d in (before, after))
        if key in CHOICES:
            default, words = CHOICES[key]
            before, after = before or {"name": default}, after or {"name": default}
            if before.get("name") != after.get("name"):
                return f"the run's {words} is {before.get('name')}, not {after.get('name')}"
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            for sub in sorted(set(before) | set(after)):
                if before.get(sub) != after.get(sub):
                    return f"{key}.{sub} was {before.get(sub)!r} and is now {after.get(sub)!r}"
        return f"{key} was {before!r} and is now {after!r}"
    return None
