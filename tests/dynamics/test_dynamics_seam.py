"""The dynamics seam end to end: a Transformer run trains, checkpoints, resumes and is evaluated through the
same code as the RSSM; the backend is recorded and another one is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import worldmodels.train as train_module
from worldmodels.dynamics.transformer import TransformerSSM
from worldmodels.evaluate import evaluate
from worldmodels.evaluate import main as evaluate_main
from worldmodels.runtime.checkpoint import load_checkpoint
from worldmodels.runtime.config import validate
from worldmodels.runtime.errors import UserError
from worldmodels.runtime.setup import CONFIG_DIR


def cfg_of(run_dir: Path, *overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        return compose("config", ["env=dummy", "model=debug", "run.progress=false", f"run.dir={run_dir}", "run.threads=1",
                                  "run.eval_every=0", "report.every=0", *overrides])


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("seam") / "run"
    with torch.random.fork_rng():
        train_module.train(cfg_of(run_dir, "dynamics=transformer", "run.steps=120"))
    return run_dir


def test_a_transformer_run_records_its_backend_and_resumes(transformer_run: Path):
    payload = load_checkpoint(transformer_run / "checkpoints")
    assert payload["config"]["dynamics"]["name"] == "transformer" and payload["step"] == 120 and payload["updates"] > 0
    assert any(k.startswith("wm.dynamics.blocks.") for k in payload["agent"])  # the Transformer's weights
    with torch.random.fork_rng():
        train_module.train(cfg_of(transformer_run, "dynamics=transformer", "run.steps=160"))
    resumed = load_checkpoint(transformer_run / "checkpoints")
    assert resumed["step"] == 160 and resumed["updates"] > payload["updates"]


def test_resuming_with_another_backend_is_refused_and_changes_nothing(transformer_run: Path):
    before = (transformer_run / "checkpoints" / "latest").read_bytes()
    with pytest.raises(UserError, match="dynamics backend is transformer, not rssm"):
        train_module.train(cfg_of(transformer_run, "dynamics=rssm", "run.steps=400"))
    assert (transformer_run / "checkpoints" / "latest").read_bytes() == before


def test_evaluate_and_the_imagination_report_on_a_transformer_checkpoint(transformer_run: Path, tmp_path: Path):
    with torch.random.fork_rng():
        reports = evaluate([str(transformer_run / "checkpoints" / "latest")], episodes=1, context=3, horizon=5, starts=4,
                           out=str(tmp_path / "cmp"))
    report = next(iter(reports.values()))
    assert report["episodes"] == 1
    assert "imagination/imagined_return" in report and "openloop/reward_mse_mean" in report


def test_evaluating_with_another_backend_is_one_line(transformer_run: Path, tmp_path: Path, cli):
    status, stderr = cli(evaluate_main, f"checkpoint={transformer_run / 'checkpoints' / 'latest'}", "dynamics=rssm", cwd=tmp_path)
    assert status == 2
    assert stderr.strip().splitlines() == [f"error: checkpoint {transformer_run / 'checkpoints' / 'latest'} has transformer dynamics, not rssm"]


@pytest.mark.parametrize(("override", "words"), [("dynamics.heads=3", "dynamics.heads=3 is invalid"),
                                                 ("dynamics.context=0", "dynamics.context=0 is invalid"),
                                                 ("dynamics.name=lstm", "dynamics.name='lstm' is invalid")])
def test_bad_transformer_options_are_one_line(tmp_path: Path, override: str, words: str):
    with pytest.raises(UserError, match=words):
        validate(cfg_of(tmp_path / "run", "dynamics=transformer", override))
    with pytest.raises(ValueError, match="dynamics.heads"):
        TransformerSSM(8, 2, d_model=32, heads=3)
