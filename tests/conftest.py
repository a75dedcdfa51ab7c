"""Suite-wide guards: every test leaves process-wide state as it found it, and the order can be shuffled.

Process-wide state is anything a later test would see: torch/dynamo/inductor config, torch's thread
count and default dtype, the global RNGs (torch, NumPy, `random`), environment variables, and the oneDNN
switches. A test that changes one of them and does not put it back fails, naming what it left changed,
and the state is restored either way so that the next test starts clean.

Order options, to show the suite does not depend on its order (`-n 0`: in one process, since the parallel
workers of pytest-xdist each take whole test modules):
    python -m pytest -q -n 0 tests --shuffle 1       # random order (files and tests), seeded
    python -m pytest -q -n 0 tests --reverse-files   # files in reverse order
Under pytest-xdist each worker starts with its share of the CPU cores as torch threads (pytest_configure).
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch._dynamo
import torch._inductor.config

from worldmodels.cpu import matmul


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("worldmodels order")
    group.addoption("--shuffle", type=int, default=None, metavar="SEED", help="run the tests in a random order drawn from SEED")
    group.addoption("--reverse-files", action="store_true", help="run the test files in reverse order")


def pytest_configure(config: pytest.Config) -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # N workers on N cores: one thread each, not N threads each fighting over the cores
        torch.set_num_threads(max(1, torch.get_num_threads() // workers))


# The modules that take longest (real training subprocesses), first: pytest-xdist hands whole modules to its
# workers in this order, and a long module handed out last would leave the other workers idle at the end.
LONGEST_FIRST = ("test_train_e2e.py", "test_faults.py", "test_vector_envs.py", "test_distributed.py", "test_dynamics_seam.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = config.getoption("--shuffle")
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(str(item.path), []).append(item)
    if seed is not None:
        random.Random(seed).shuffle(items)
    elif config.getoption("--reverse-files"):
        items[:] = [item for path in reversed(list(files)) for item in files[path]]
    else:
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        order = sorted(files, key=lambda path: rank.get(os.path.basename(path), len(rank)))  # stable: the rest as collected
        items[:] = [item for path in order for item in files[path]]


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.getoption("--shuffle")
    if seed is not None:
        return f"order: shuffled with seed {seed}"
    return "order: files reversed" if config.getoption("--reverse-files") else None


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Callable[..., tuple[int, str]]:
    """An entry point's `main` run in this process as `python -m <module> *args` would run it from `cwd`:
    returns (exit status, stderr). For bad-input checks, which fail before anything heavy starts: a
    subprocess would spend seconds importing torch to print one line."""

    def run(main: Callable[[], None], *args: str, cwd: os.PathLike) -> tuple[int, str]:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["python", *args])
        capsys.readouterr()
        try:
            main()
            status = 0
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
        return status, capsys.readouterr().err

    return run


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One CPU thread for a module of tiny-tensor tests: faster, and no oversubscription on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _torch_configs() -> dict[str, Any]:
    """dynamo's and inductor's config modules, where a test (or the code it ran) has imported them."""
    names = ("torch._dynamo.config", "torch._inductor.config", "torch._functorch.config")
    return {name: sys.modules[name] for name in names if name in sys.modules}


def _config_copy(module: Any) -> dict[str, Any]:
    return dict(module.get_config_copy())


# Each piece of state: (how to read it, how to put a value back, how to compare two readings).
STATE: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {
    "torch threads": (torch.get_num_threads, torch.set_num_threads),
    "torch default dtype": (torch.get_default_dtype, torch.set_default_dtype),
    "torch grad mode": (torch.is_grad_enabled, torch.set_grad_enabled),
    "torch deterministic algorithms": (torch.are_deterministic_algorithms_enabled, torch.use_deterministic_algorithms),
    "torch float32 matmul precision": (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
    "torch.backends.mkldnn.enabled": (lambda: torch.backends.mkldnn.enabled, lambda v: setattr(torch.backends.mkldnn, "enabled", v)),
    "worldmodels oneDNN routing": (matmul.onednn_enabled, matmul.set_onednn),
    "environment variables": (lambda: _environ(), lambda v: _set_environ(v)),
}


# Set once by libraries on first use, for their own later use: not a test's doing, and removing them would
# break what set them (inductor passes a pointer to its C++ side through the first).
# MUJOCO_GL / PYOPENGL_PLATFORM: worldmodels/envs/dmc.py and worldmodels/envs/gym.py choose headless EGL for the process when nothing
# is set, before MuJoCo's GL is first loaded; unsetting them later would not unload it.
LIBRARY_ENV = {"PYTEST_CURRENT_TEST", "_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR", "PYGAME_HIDE_SUPPORT_PROMPT",
               "MUJOCO_GL", "PYOPENGL_PLATFORM"}


# Raised by the package itself wherever it compiles (nets.compiled_rms_silu, on every call): restored after the
# test like any other change, but not the test's fault.
LIBRARY_CONFIG = {("torch._dynamo.config", "recompile_limit"), ("torch._dynamo.config", "cache_size_limit")}


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in LIBRARY_ENV}


def _set_environ(values: dict[str, str]) -> None:
    for key in _environ().keys() - values.keys():
        del os.environ[key]
    os.environ.update(values)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values without a usable == count as changed only if not identical
        return a is b


def _changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if k not in before or k not in after or not _same(before[k], after[k]))


@pytest.fixture(autouse=True)
def process_state_is_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves process-wide state changed; restore that state either way."""
    saved = {name: get() for name, (get, _) in STATE.items()}
    rngs = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    configs = {name: _config_copy(module) for name, module in _torch_configs().items()}
    yield
    leaks = []
    for name, (get, put) in STATE.items():
        now = get()
        if not _same(now, saved[name]):
            detail = _changed_keys(saved[name], now) if isinstance(now, dict) else f"{saved[name]!r} -> {now!r}"
            leaks.append(f"{name} ({detail})")
            put(saved[name])
    for name, module in _torch_configs().items():
        now = _config_copy(module)
        before = configs.get(name, {})
        changed = [key for key in _changed_keys(before, now) if key in before]
        if changed:
            module.load_config({key: before[key] for key in changed})
        blamed = [key for key in changed if (name, key) not in LIBRARY_CONFIG]
        if blamed:
            leaks.append(f"{name} ({', '.join(blamed)})")
    # Seeding inside a test is normal and not a leak; the RNGs are put back so later tests draw the same.
    torch.set_rng_state(rngs[0])
    np.random.set_state(rngs[1])
    random.setstate(rngs[2])
    if leaks:
        pytest.fail(f"{request.node.nodeid} left process-wide state changed: {'; '.join(leaks)}", pytrace=False)
