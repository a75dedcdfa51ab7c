"""Every way a user has an env (docs/plugging-in.md): a class by entry point, Gymnasium's "module:EnvId", a
third-party suite by Python entry point, the Python API `worldmodels.fit`, and `python -m worldmodels.envs.check` on good and
broken envs; the worked example robot too (fast, CPU-only; registries, modules and configs are put back)."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

import worldmodels
from worldmodels import envs
from worldmodels.envs.check import diagnose, main
from worldmodels.envs.load import FACTORIES, build
from worldmodels.envs.wrappers import default_mujoco_gl
from worldmodels.runtime.config import resume_conflict, validate
from worldmodels.runtime.errors import UserError
from worldmodels.runtime.setup import CONFIG_DIR, make_env, register_env_suites

# MuJoCo picks its GL backend when first imported, and its EGL backend sets PYOPENGL_PLATFORM then: both happen here,
# at collection, as test_dmc's imports do, not inside a test (which would leave the environment changed).
default_mujoco_gl()
try:
    import mujoco  # noqa: F401
except ImportError:  # the example robot's test is skipped
    pass

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
MODULE = "tests.plugin_envs"


@pytest.fixture
def plugin():
    """The plug-in module, imported fresh; afterwards its Gymnasium id is deregistered and the module forgotten, so
    the next import registers it again and the registry is as it was."""
    before = set(gymnasium.registry)
    sys.modules.pop(MODULE, None)
    module = importlib.import_module(MODULE)
    yield module
    sys.modules.pop(MODULE, None)
    for env_id in set(gymnasium.registry) - before:
        del gymnasium.registry[env_id]


@pytest.fixture
def example_robot():
    """examples.reach_arm, put back the same way (importing it registers ReachArm-v0)."""
    pytest.importorskip("mujoco")
    before, modules = set(gymnasium.registry), set(sys.modules)
    sys.path.insert(0, str(ROOT))
    try:
        from examples import reach_arm

        yield reach_arm
    finally:
        sys.path.remove(str(ROOT))
        for name in {"examples", "examples.reach_arm"} & (set(sys.modules) - modules):
            del sys.modules[name]
        for env_id in set(gymnasium.registry) - before:
            del gymnasium.registry[env_id]


def env_cfg(*overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        return compose("config", ["env=gym", *overrides])


# ---- classes, factories and ids ---------------------------------------------------------------------------------


def test_entry_point_class_with_constructor_arguments(plugin):
    env = envs.make("gym", "arm", entry_point=f"{MODULE}:Arm", kwargs={"n": 5, "length": 4}, time_limit=3, seed=0)
    assert {k: v.shape for k, v in env.observation_space.spaces.items()} == {
        "achieved_goal": (2,), "desired_goal": (2,), "observation": (5,)}
    assert env.action_space == spaces.Box(-1.0, 1.0, (2,), np.float32)
    envs.check_env(env, steps=8)
    factory = envs.make("gym", "ignored", entry_point=f"{MODULE}:make_arm", kwargs={"n": 2})
    assert factory.observation_space["observation"].shape == (2,)


def test_module_env_id_and_module_class_forms(plugin):
    registered = envs.make("gym", f"{MODULE}:WorldmodelsPlugin-v0", keys="observation")
    assert list(registered.observation_space.spaces) == ["observation"]
    assert isinstance(registered.unwrapped, plugin.Arm)
    by_class = envs.make("gym", f"{MODULE}:Arm", kwargs={"n": 4})
    assert by_class.observation_space["observation"].shape == (4,)


def test_cli_config_reaches_the_env(plugin):
    cfg = env_cfg(f"env.entry_point={MODULE}:Arm", "env.id=arm", "env.kwargs={n:6,length:5}", "env.exclude=.*_goal")
    env = make_env(cfg.env, seed=0)
    assert list(env.observation_space.spaces) == ["observation"] and env.observation_space["observation"].shape == (6,)
    cfg = env_cfg(f"env.id={MODULE}:WorldmodelsPlugin-v0", "+env.kwargs.n=7")
    assert make_env(cfg.env, seed=0).observation_space["observation"].shape == (7,)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["env.entry_point=no_such_module_xyz:Env"], r"^env: cannot import 'no_such_module_xyz' .*no module named 'no_such_module_xyz'"),
        ([f"env.entry_point={MODULE}:Missing"], rf"^env: entry point '{MODULE}:Missing': module '{MODULE}' has no attribute 'Missing'"),
        ([f"env.entry_point={MODULE}:not_an_env"], r"^env: 'tests.plugin_envs:not_an_env' built a builtins.object, not a gymnasium.Env"),
        ([f"env.entry_point={MODULE}:Arm", "env.kwargs={colour:red}"], r"^env: tests.plugin_envs:Arm: .*unexpected keyword argument 'colour'"),
        ([f"env.id={MODULE}:Nothing-v0"], r"^env: 'tests.plugin_envs:Nothing-v0': importing 'tests.plugin_envs' registered no Gymnasium id"),
        ([f"env.entry_point={MODULE}:TextObservation"], r"^env: observation 'instruction' Text\(.*\) is not supported"),
        ([f"env.entry_point={MODULE}:UnboundedAction"], r"^env: action Box\(-inf, inf, \(2,\), float32\) is not supported"),
        (["env.id=Foo-v0"], r"^env: unknown Gymnasium environment id 'Foo-v0'"),
    ],
)
def test_bad_env_names_are_one_line_user_errors(plugin, overrides, message):
    with pytest.raises(UserError, match=message) as info:
        make_env(env_cfg(*overrides).env, seed=0)
    assert "\n" not in str(info.value)


# The env options of a gym run saved by version 0.2 (worldmodels/configs/env/gym.yaml then); every option added since must resume it.
GYM_ENV_KEYS_0_2 = ("suite", "id", "obs", "action_repeat", "time_limit")


def test_runs_saved_before_the_new_env_options_still_resume():
    cfg = env_cfg()
    saved = OmegaConf.to_container(cfg)
    saved["env"] = {k: v for k, v in saved["env"].items() if k in GYM_ENV_KEYS_0_2}
    assert resume_conflict(OmegaConf.create(saved), cfg) is None
    saved["env"]["exclude"] = "camera"
    assert resume_conflict(OmegaConf.create(saved), cfg) == "env.exclude was 'camera' and is now ''"


# ---- third-party suites ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_suite(plugin, monkeypatch):
    """An installed package's entry point `fake_suite = tests.plugin_envs:make_suite` (and a broken one); the config nodes
    register_env_suites adds are removed afterwards."""
    group = envs.ENTRY_POINT_GROUP
    installed = importlib.metadata.EntryPoints([
        importlib.metadata.EntryPoint(name="fake_suite", value=f"{MODULE}:make_suite", group=group),
        importlib.metadata.EntryPoint(name="broken_suite", value="no_such_module_xyz:make", group=group),
        importlib.metadata.EntryPoint(name="gym", value=f"{MODULE}:make_suite", group=group),  # a built-in name wins
    ])
    real = importlib.metadata.entry_points

    def entry_points(**params):
        return installed.select(**params) if params.get("group") == group else real(**params)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    repo = ConfigStore.instance().repo.setdefault("env", {})
    saved = dict(repo)
    yield "fake_suite"
    repo.clear()
    repo.update(saved)


def test_entry_point_suite_works_with_no_change_here(fake_suite):
    assert envs.suite_names() == ["broken_suite", "dmc", "dummy", "fake_suite", "gym"]
    env = envs.make(fake_suite, "arm", kwargs={"n": 3}, time_limit=5, seed=0)
    assert sorted(env.observation_space.spaces) == ["achieved_goal", "desired_goal", "observation"]
    envs.check_env(env, steps=8)
    register_env_suites()
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("config", ["env=fake_suite", "env.id=arm", "env.kwargs={n:4}", "model=debug"])
    validate(cfg)
    assert cfg.env.suite == "fake_suite" and make_env(cfg.env, seed=0).observation_space["observation"].shape == (4,)
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        default = compose("config", ["env=fake_suite"])
    assert make_env(default.env, seed=0).observation_space["observation"].shape == (3,)  # task 'default'


def test_broken_entry_point_suite_is_one_line(fake_suite):
    with pytest.raises(ValueError, match=r"environment suite 'broken_suite' \('no_such_module_xyz:make', .*\) failed to load: "
                                         r"ModuleNotFoundError"):
        envs.make("broken_suite", "x")
    with pytest.raises(ValueError, match="unknown environment suite 'nope'; known suites: broken_suite, dmc, dummy, fake_suite, gym"):
        envs.make("nope", "x")


# ---- Python API ----------------------------------------------------------------------------------------------------

TINY_RUN = ["model=debug", "run.steps=40", "run.train_start=16", "run.train_ratio=16", "batch.size=2", "batch.length=8",
            "replay.capacity=100", "run.threads=1", "run.progress=false", "run.keep_memory=false", "run.eval_episodes=1"]


def test_fit_takes_a_factory_and_returns_the_run_folder(plugin, tmp_path):
    import worldmodels.train as train_module  # the module stays importable by that name: `fit` does not shadow it

    assert train_module.__name__ == "worldmodels.train" and callable(worldmodels.fit)
    run = worldmodels.fit(lambda n=3: plugin.Arm(n=n, length=10), [*TINY_RUN, f"run.dir={tmp_path / 'run'}", "env.kwargs={n:5}"])
    assert run == tmp_path / "run" and (run / "checkpoints" / "latest").exists()
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.env.suite == "gym" and saved.env.id == "lambda" and saved.env.kwargs.n == 5
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 40 and lines[-1]["train/updates"] > 0
    assert FACTORIES == {}


def test_fit_refuses_an_instance_and_a_second_env(plugin, tmp_path):
    with pytest.raises(UserError, match=r"fit needs a class or function that builds the env.*not an Arm instance"):
        worldmodels.fit(plugin.Arm(), [*TINY_RUN, f"run.dir={tmp_path / 'a'}"])
    with pytest.raises(UserError, match=r"fit\(env=...\) sets the environment itself: leave 'env=dmc' out"):
        worldmodels.fit(plugin.Arm, ["env=dmc"])
    with pytest.raises(UserError, match=r"^Could not override 'run.stepz'"):
        worldmodels.fit(plugin.Arm, ["run.stepz=3"])
    assert not (tmp_path / "a").exists() and FACTORIES == {}


# ---- envs.check ----------------------------------------------------------------------------------------------------


def test_check_passes_a_good_env(plugin, capsys):
    assert main([f"{MODULE}:Arm", "n=4", "--steps", "30"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{MODULE}:Arm: ok (observation keys: achieved_goal (2,) float32, desired_goal (2,) float32, "
                          "observation (4,) float32; action: Box(-1.0, 1.0, (2,), float32))")
    assert main([f"{MODULE}:WorldmodelsPlugin-v0", "--steps", "30"]) == 0


@pytest.mark.parametrize(
    "name, problems",
    [
        ("OldApi", [r"reset\(\) takes no options= keyword: define reset\(self, \*, seed=None, options=None\)",
                    r"reset\(\) returned a dict, not \(observation, info\)"]),
        ("WrongDtype", [r"observation 'achieved_goal' at .* has dtype float64, its space says float32: return np.asarray",
                        r"observation 'desired_goal' at .* has dtype float64"]),
        ("Unseeded", [r"reset\(seed=0\) twice, then the same actions, gave a different observation 'desired_goal' right after"]),
        ("MissingKey", [r"the observation at the seeding check has no 'desired_goal', which observation_space declares"]),
        ("NeverEnds", [r"no episode ended in 30 random steps: .*env.time_limit=N"]),
        ("BadReward", [r"reward at step 0 of the seeding check is a ndarray of shape \(1,\): return a float",
                       r"terminated at step 0 of the seeding check is an int: return a bool"]),
        ("TextObservation", [r"observation 'instruction' Text\(.*\) is not supported: .*env.exclude=instruction"]),
        ("UnboundedAction", [r"action Box\(-inf, inf, \(2,\), float32\) is not supported"]),
    ],
)
def test_check_names_each_problem_with_its_fix(plugin, capsys, name, problems):
    assert main([f"{MODULE}:{name}", "--steps", "30"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(problems), lines
    for line, problem in zip(lines, problems):
        assert line.startswith(f"{MODULE}:{name}: ")
        assert re.search(problem, line), line


def test_check_render_size_and_exclusion(plugin):
    assert diagnose(lambda: plugin.BadRender(render_mode="rgb_array"), steps=25) == [(
        "render() returned 48x64 frames: obs=pixels asks for width=height=env.size (default 64) and needs square frames with "
        "a power-of-two side; take width= and height= constructor arguments and render at that size")]
    assert diagnose(lambda: plugin.Arm(render_mode="rgb_array", width=32, height=32), steps=25) == []
    assert diagnose(plugin.TextObservation, steps=25, exclude="instruction") == []


@pytest.mark.parametrize("autoreset", ["NextStep", "SameStep", "Disabled"])
def test_check_passes_a_good_batched_env(capsys, autoreset):
    """An env that is already batched (envtools.PointMass, torch tensors), in each autoreset mode, driven as VectorDriver
    drives it: random actions as torch tensors, ended envs reset with reset_mask (Disabled), final_obs read (SameStep)."""
    assert main(["tests.envtools:PointMass", f"autoreset={autoreset}", "image=true", "--steps", "30"]) == 0
    assert capsys.readouterr().out == (
        f"tests.envtools:PointMass: ok (batched: 3 envs, autoreset {autoreset}; observation keys: body (2,) float32, env (1,) "
        "float32, image (8, 8, 3) uint8; action: Box(-1.0, 1.0, (1,), float32))\n")
    # NumPy copies of a single env (envs.vector.make_vector, as env.num_envs builds them) pass too
    from worldmodels.envs.vector import make_vector

    assert diagnose(lambda: make_vector(lambda seed: envs.make("dummy", "discrete", length=5, seed=seed), 2, "sync"),
                    steps=12) == []


@pytest.mark.parametrize(
    "name, problem",
    [
        ("UnbatchedTarget", r"'target' at the seeding check has shape \(2,\), not \(num_envs, 2\) = \(3, 2\): give every leaf a"),
        ("ColumnReward", r"reward at step 0 of the seeding check has shape \(3, 1\), not \(num_envs,\) = \(3,\): return one"),
        ("NoFinalObs", r"env 0 ended at step 8, but info has no 'final_obs': with autoreset SameStep, return the next"),
    ],
)
def test_check_names_the_problem_of_a_batched_env(capsys, name, problem):
    assert main([f"tests.envtools:{name}", "--steps", "30"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"tests.envtools:{name}: ") and re.search(problem, lines[0]), lines[0]


def test_check_program_exit_status(plugin):
    """`python -m worldmodels.envs.check` itself: one line per problem, status 1; status 0 when it passes."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}

    def check(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "worldmodels.envs.check", *args]
        return subprocess.run(command, check=False, capture_output=True, text=True, env=environ, cwd=ROOT)

    broken = check(f"{MODULE}:NeverEnds", "--steps", "20")
    assert broken.returncode == 1 and broken.stdout.count("\n") == 1 and "no episode ended" in broken.stdout
    assert "RuntimeWarning" not in broken.stderr  # runpy does not find envs.check imported twice
    missing = check("no_such_module_xyz:Env")
    assert missing.returncode == 1 and "cannot import 'no_such_module_xyz'" in missing.stdout
    good = check(f"{MODULE}:Arm", "--steps", "20")
    assert good.returncode == 0 and ": ok (" in good.stdout


# ---- the worked example ---------------------------------------------------------------------------------------------


def test_example_robot_passes_the_check_and_the_agent_takes_it(example_robot):
    assert diagnose(lambda: example_robot.ReachArm(camera=False), steps=120) == []  # 100-step episodes end
    env = envs.make("gym", "examples.reach_arm:ReachArm-v0", time_limit=3, seed=0)
    try:
        assert {k: (v.shape, v.dtype) for k, v in env.observation_space.spaces.items()} == {
            "camera": ((64, 64, 3), np.uint8), "joints": ((6,), np.float32), "target": ((2,), np.float32)}
        observation, _ = env.reset()
        assert observation["camera"].min() < observation["camera"].max()  # it renders something
        envs.check_env(env, steps=4)
    finally:
        env.close()
    pixels = build("ReachArm-v0", kwargs={"camera": False, "render_mode": "rgb_array", "width": 32, "height": 32})
    try:
        pixels.reset(seed=0)
        assert pixels.render().shape == (32, 32, 3)
    finally:
        pixels.close()
