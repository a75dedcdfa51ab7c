"""Checkpoints that load without executing code: tensors and plain Python values only."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from worldmodels.runtime.errors import UserError

FORMAT = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same folder, flushed to disk, then renamed over `path`.

    A crash mid-write leaves the previous checkpoint intact, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():  # the last good one stays as `previous` until the new one is complete
        os.replace(path, path.with_name("previous"))
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with `weights_only=True`, so a crafted file cannot run code; bad files raise UserError."""
    path = Path(path)
    if path.is_dir():
        return _load_newest_good(path, map_location)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line]
        if not blocked:
            raise UserError(f"checkpoint {path} is corrupt or truncated (not a readable torch file)") from None
        raise UserError(f"checkpoint {path} was refused: it asks to run code ({blocked[0]})") from None
    except Exception as e:  # noqa: BLE001 - a damaged file can fail anywhere inside the unpickler
        raise UserError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a worldmodels checkpoint (format {FORMAT})")
    return payload


def _load_newest_good(folder: Path, map_location: str | torch.device) -> dict[str, Any]:
    """`latest`, or `previous` when `latest` is missing or damaged (a crash between the two renames)."""
    latest, previous = folder / "latest", folder / "previous"
    if not latest.exists() and not previous.exists():
        raise UserError(f"checkpoint not found in {folder} (no latest or previous)")
    try:
        return load_checkpoint(latest, map_location)
    except UserError as e:
        if not previous.is_file():
            raise
        warnings.warn(f"{e}; using {previous} instead", stacklevel=2)
        return load_checkpoint(previous, map_location)


def load_agent_state(agent: torch.nn.Module, state: dict[str, torch.Tensor], where: str | Path) -> None:
    """Load network weights, or raise one line naming what does not fit (missing, unexpected or
    mis-shaped parameters), e.g. for a checkpoint written by an older version of the model."""
    # Before 0.3 the dynamics were always an RSSM, stored as `wm.rssm.*`.
    state = {k.replace("wm.rssm.", "wm.dynamics.", 1) if k.startswith("wm.rssm.") else k: v for k, v in state.items()}
    # Before 0.4 the decoder belonged to the world model, `wm.decoder.*`; it is now the recon objective's.
    state = {k.replace("wm.decoder.", "wm.objective.decoder.", 1) if k.startswith("wm.decoder.") else k: v for k, v in state.items()}
    own = agent.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {what} (first: {v[0]})" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)) if v]
        hint = " - written by an older version of worldmodels? (hidden layers gained biases in 0.2.0)" if missing and not unexpected else ""
        raise UserError(f"checkpoint {where} does not fit the model its config builds: parameters {', '.join(parts)}{hint}")
    agent.load_state_dict(state)

