"""Checkpoints: atomic round trip, corrupt and truncated files, and pickles that try to run code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from worldmodels.runtime.checkpoint import load_agent_state, load_checkpoint, save_checkpoint
from worldmodels.runtime.errors import UserError


def test_round_trip_keeps_tensors_and_plain_values(tmp_path: Path):
    payload = {"step": 12, "config": {"a": [1, 2.5, "x", None]}, "agent": {"w": torch.arange(6.0).reshape(2, 3)}}
    save_checkpoint(tmp_path / "ckpt" / "latest", payload)
    loaded = load_checkpoint(tmp_path / "ckpt")  # the folder resolves to its `latest`
    assert loaded["step"] == 12 and loaded["config"] == payload["config"]
    assert torch.equal(loaded["agent"]["w"], payload["agent"]["w"])
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["latest"]  # no temporary file left behind


def test_overwrite_replaces_whole_file(tmp_path: Path):
    path = tmp_path / "latest"
    save_checkpoint(path, {"step": 1, "agent": {"w": torch.zeros(1000)}})
    save_checkpoint(path, {"step": 2, "agent": {"w": torch.ones(3)}})
    assert load_checkpoint(path)["step"] == 2


def test_truncated_file_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "latest"
    save_checkpoint(path, {"step": 1, "agent": {"w": torch.zeros(1000)}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_garbage_and_missing_files(tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "junk").write_bytes(os.urandom(256))
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "junk")


class _Payload:
    """Unpickling this would call os.system-like code: here it writes a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil"
    with open(evil, "wb") as f:
        torch.save({"format": 1, "agent": _Payload(str(marker))}, f)
    assert not marker.exists()
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(evil)
    assert not marker.exists()
    # The same file loaded unsafely would run the payload: the test's payload is real.
    with open(evil, "rb") as f:
        torch.load(f, weights_only=False)
    assert marker.read_text() == "pwned"


def test_plain_pickle_of_other_objects_is_not_a_checkpoint(tmp_path: Path):
    path = tmp_path / "other"
    torch.save({"step": 3}, path)  # no format tag
    with pytest.raises(UserError, match="not a worldmodels checkpoint"):
        load_checkpoint(path)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(UserError):
        load_checkpoint(path)


def test_weights_that_do_not_fit_get_one_line_naming_them():
    from worldmodels.models.nets import MLP

    net = MLP(3, 4, 2)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    load_agent_state(net, state, "ok")  # a fitting state loads
    old = {k: v for k, v in state.items() if not k.endswith(".bias")}  # as written before the hidden biases
    with pytest.raises(UserError) as info:
        load_agent_state(net, old, "runs/x/checkpoints")
    message = str(info.value)
    assert "\n" not in message and "2 missing (first: 0.0.bias)" in message and "older version" in message
    state["0.0.weight"] = torch.zeros(5, 3)
    state["extra"] = torch.zeros(1)
    with pytest.raises(UserError, match=r"1 unexpected \(first: extra\), 1 mis-shaped \(first: 0.0.weight\)$"):
        load_agent_state(net, state, "runs/x/checkpoints")
