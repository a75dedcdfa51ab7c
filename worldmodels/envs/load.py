"""Finding a user's environment by name, with one-line errors.

A name is one of:
- a factory registered in this process (`register_factory`, which `worldmodels.fit` uses for a Python factory);
- `module:Name`: the module is imported first; `Name` is then a Gymnasium id the import registered (Gymnasium's own
  "module:EnvId" form) or, failing that, a gymnasium.Env class or a function returning an env in that module;
- a registered Gymnasium id (`CartPole-v1`, `ALE/Pong-v5`, ...).
An explicit `entry_point` ("package.module:Class", a class or a factory function) is built without the registry.
Constructor arguments (`kwargs`) go to the class or factory, or to gymnasium.make.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium

from worldmodels.envs.wrappers import first_line

Factory = Callable[..., gymnasium.Env]

# Factories registered by name for the length of a call (worldmodels.fit); consulted before Gymnasium's registry.
FACTORIES: dict[str, Factory] = {}


@contextlib.contextmanager
def register_factory(name: str, factory: Factory) -> Iterator[str]:
    """Make `name` build envs with `factory(**kwargs)` inside the block; whatever was registered under it comes back after."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"factory name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"env factory {name!r} is a {type(factory).__name__}, not a class or function that returns an env")
    previous = FACTORIES.get(name)
    FACTORIES[name] = factory
    try:
        yield name
    finally:
        if previous is None:
            FACTORIES.pop(name, None)
        else:
            FACTORIES[name] = previous


# Before 0.5 the environment package was a top-level `envs`; it is `worldmodels.envs` now (nothing generic installed).
MOVED_PACKAGE = ("envs", "worldmodels.envs")


def import_module(module_name: str, source: str) -> Any:
    """importlib.import_module with one line saying what is missing (`source` is the name the user gave). A module of
    the old top-level `envs` package (an entry point saved before 0.5) is taken from `worldmodels.envs`."""
    old, new = MOVED_PACKAGE
    if (module_name == old or module_name.startswith(old + ".")) and importlib.util.find_spec(old) is None:
        module_name = new + module_name[len(old):]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise ValueError(
                f"cannot import {module_name!r} (from {source!r}): no module named {error.name!r}; install its package, or "
                "run from the folder that holds it (or add that folder to PYTHONPATH)"
            ) from None
        raise ValueError(f"importing {module_name!r} (from {source!r}) needs the missing package {error.name!r}") from None
    except Exception as error:  # noqa: BLE001 - anything a user's module raises on import becomes one line naming it
        raise ValueError(f"importing {module_name!r} (from {source!r}) raised {type(error).__name__}: {first_line(error)}") from None


def load_object(path: str, what: str = "entry point") -> Any:
    """The object `package.module:Name` (Name may be dotted, e.g. `Class.create`)."""
    module_name, sep, attribute = str(path).partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{what} {path!r} is not of the form package.module:Name")
    obj = import_module(module_name, path)
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what} {path!r}: module {module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    return obj


def call_factory(factory: Any, source: str, kwargs: dict[str, Any]) -> gymnasium.Env:
    """`factory(**kwargs)`, which must return a gymnasium.Env, or an env that is already batched (a
    gymnasium.vector.VectorEnv, used as it is: envs.vector); a bad argument keeps its TypeError, prefixed by `source`."""
    if not callable(factory):
        raise TypeError(f"{source!r} is a {type(factory).__name__}, not a gymnasium.Env class or a function returning an env")
    try:
        env = factory(**kwargs)
    except TypeError as error:
        raise TypeError(f"{source}: {first_line(error)} (constructor arguments come from env.kwargs)") from None
    if not isinstance(env, (gymnasium.Env, gymnasium.vector.VectorEnv)):
        hint = " (an old `gym` env? wrap it with shimmy, or port it to gymnasium)" if type(env).__module__.startswith("gym.") else ""
        raise TypeError(f"{source!r} built a {type(env).__module__}.{type(env).__name__}, not a gymnasium.Env{hint}")
    return env


def make_registered(env_id: str, **kwargs) -> gymnasium.Env:
    """gymnasium.make with one-line errors for an unknown id or a missing dependency instead of Gymnasium's long ones."""
    try:
        return gymnasium.make(env_id, **kwargs)
    except (gymnasium.error.UnregisteredEnv, gymnasium.error.DeprecatedEnv, gymnasium.error.NamespaceNotFound,
            gymnasium.error.NameNotFound, gymnasium.error.VersionNotFound):
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown Gymnasium environment id {env_id!r}{hint} (an id a module registers: env.id=module:EnvId; "
            "an unregistered class: env.entry_point=package.module:Class)"
        ) from None
    except gymnasium.error.DependencyNotInstalled as error:
        raise ValueError(f"Gymnasium environment {env_id!r} needs a missing package: {first_line(error)}") from None
    except ModuleNotFoundError as error:
        raise ValueError(
            f"Gymnasium environment {env_id!r} needs the missing package {error.name!r} "
            "(MuJoCo tasks: pip install 'gymnasium[mujoco]')"
        ) from None


def build(task: str, entry_point: str | None = None, kwargs: dict[str, Any] | None = None, checker: bool = True) -> gymnasium.Env:
    """The raw environment named by `task` (or `entry_point`) as the module docstring says, built with `kwargs`.

    checker=False leaves out Gymnasium's passive env checker on registered ids (envs.check reports problems itself).
    """
    kwargs = dict(kwargs or {})
    if entry_point:
        return call_factory(load_object(entry_point), entry_point, kwargs)
    if not isinstance(task, str) or not task:
        raise ValueError(f"environment id {task!r} is invalid: expected a Gymnasium id, module:EnvId or package.module:Class")
    if task in FACTORIES:
        return call_factory(FACTORIES[task], task, kwargs)
    options = kwargs if checker else {**kwargs, "disable_env_checker": True}
    if ":" in task:
        module_name, _, name = task.partition(":")
        if not module_name or not name:
            raise ValueError(f"environment id {task!r} is not of the form module:EnvId or package.module:Class")
        module = import_module(module_name, task)
        if name in gymnasium.registry:
            return make_registered(name, **options)
        if name.isidentifier() and callable(getattr(module, name, None)):
            return call_factory(getattr(module, name), task, kwargs)
        raise ValueError(
            f"{task!r}: importing {module_name!r} registered no Gymnasium id {name!r}, and the module has no env class "
            f"or factory named {name!r}"
        )
    return make_registered(task, **options)
