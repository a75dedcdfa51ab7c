"""Imagination report: scalars, per-horizon curves, pictures, summary.json, TensorBoard and a console table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.evaluation.imagination import Arrays, Predictor, imagination_gap, openloop_metrics, windows
from worldmodels.evaluation.video import add_gif, comparison_frames, save_gif


def build_report(
    predictor: Predictor, episodes: list[Arrays], context: int, horizon: int, max_starts: int = 256, env: Any = None
) -> dict[str, Any]:
    """Open-loop curves (lists over the H steps), their means and the imagined-against-real return gap
    (with the imagined actions replayed in `env` from recorded simulator states where possible)."""
    window = windows(episodes, context, horizon, max_starts)
    curves = openloop_metrics(predictor, window, context)
    report: dict[str, Any] = {"context": context, "horizon": horizon, "windows": len(window["reward"])}
    report.update({f"openloop/{name}": [float(x) for x in curve] for name, curve in curves.items()})
    report.update(summarize(curves))
    if "embed_error" in curves:
        report["note"] = ("no decoder (a contrastive or self-predictive objective): the open-loop observation error is "
                          "replaced by the embedding-prediction error, openloop/embed_error (1 - cosine)")
    report.update({f"imagination/{k}": v for k, v in imagination_gap(predictor, window, context, env).items()})
    example = {k: v[:1] for k, v in window.items() if k != "sim_state"}
    report["_example"] = {"truth": example, "pred": predictor.open_loop(example, context)}
    return report


def summarize(curves: dict[str, np.ndarray], prefix: str = "openloop/") -> dict[str, float]:
    """Mean over the horizon, first step and last step of each per-horizon curve."""
    out = {}
    for name, curve in curves.items():
        out[f"{prefix}{name}_mean"] = float(np.mean(curve))
        out[f"{prefix}{name}_h1"] = float(curve[0])
        out[f"{prefix}{name}_h{len(curve)}"] = float(curve[-1])
    return out


def replay_openloop(predictor: Predictor, sample: Arrays, context: int) -> dict[str, float]:
    """The cheap report run during training: open-loop errors on replayed windows inside one episode."""
    inside = ~sample["is_first"][:, 1:].any(1)
    if not inside.any():
        return {}
    window = {k: v[inside] for k, v in sample.items()}
    window["is_first"] = window["is_first"].copy()
    window["is_first"][:, 0] = True
    return summarize(openloop_metrics(predictor, window, context), prefix="report/openloop/")


def scalars(report: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in report.items() if isinstance(v, (int, float)) and not k.startswith("_")}


def write_report(report: dict[str, Any], out: Path, tb_dir: Path | None = None, step: int = 0) -> list[Path]:
    """summary.json (every scalar and curve), the PNGs (when there is an open-loop part), and the
    scalars to TensorBoard at `step`."""
    out.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    (out / "summary.json").write_text(json.dumps(public, indent=2))
    files = [out / "summary.json", *(plot_report(report, out) if "_example" in report else [])]  # no open-loop part: returns only
    if tb_dir is not None:
        import matplotlib.image
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(tb_dir)) as tb:
            for key, value in scalars(report).items():
                tb.add_scalar(f"report/{key}", value, step)
            for path in files:
                if path.suffix == ".png":
                    tb.add_image(f"report/{path.stem}", matplotlib.image.imread(path)[..., :3], step, dataformats="HWC")
                elif path.suffix == ".gif":
                    add_gif(tb, f"report/{path.stem}", path.read_bytes(), step)
    return files


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves: dict[str, dict[str, Any]], path: Path) -> Path:
    """Error against horizon, one line per named report (a single run, or several to compare)."""
    plt = _plt()
    first = next(iter(curves.values()))
    names = [k[len("openloop/") :] for k, v in first.items() if k.startswith("openloop/") and isinstance(v, list)]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, report in curves.items():
            ys = report[f"openloop/{name}"]
            ax.plot(range(1, len(ys) + 1), ys, label=label)
        ax.set(title=name, xlabel="steps predicted open loop")
        if "mse" in name:
            ax.set_yscale("symlog", linthresh=1e-3)
        if len(curves) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_report(report: dict[str, Any], out: Path) -> list[Path]:
    plt = _plt()
    files = [plot_curves({"model": report}, out / "openloop_error.png")]
    truth, pred, context = report["_example"]["truth"], report["_example"]["pred"], report["context"]
    keys = [k for k in pred if k in truth and k not in ("reward", "cont")]  # observations (none without a decoder)
    dims = [(k, d) for k in keys if truth[k].ndim == 3 for d in range(truth[k].shape[2])]
    steps = np.arange(truth["reward"].shape[1])
    if dims:  # vector keys: predicted against true trajectory of every dimension, four panels a row
        cols = min(4, len(dims))
        rows = -(-len(dims) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 0.4 + 1.8 * rows), squeeze=False, sharex=True)
        for ax in axes.flat[len(dims) :]:
            ax.axis("off")
        for ax, (key, d) in zip(axes.flat, dims):
            ax.plot(steps, truth[key][0][:, d], "k", lw=1, label="true")
            ax.plot(steps[context:], pred[key][0][:, d], "C1", lw=1, label="predicted")
            ax.axvspan(0, context - 1, color="0.9")
            ax.set_ylabel(f"{key}[{d}]", fontsize=7)
        axes[0, 0].legend(fontsize=7, loc="upper right")
        fig.supxlabel("step (grey: observed context, then open-loop prediction)", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "openloop_trajectories.png", dpi=90)
        plt.close(fig)
        files.append(out / "openloop_trajectories.png")
    for key in [k for k in keys if truth[k].ndim == 5]:  # image keys: truth | prediction | error video
        frames = comparison_frames(truth[key][0, context:], pred[key][0])
        files.append(save_gif(frames, out / f"openloop_{key}.gif"))
    fig, ax = plt.subplots(figsize=(4, 4))
    rew_true, rew_pred = truth["reward"][0, context:], pred["reward"][0]
    ax.plot(steps[context:], rew_true, "k", label="true")
    ax.plot(steps[context:], rew_pred, "C1", label="predicted")
    ax.set(title="reward, open loop", xlabel="step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "reward.png", dpi=90)
    plt.close(fig)
    files.append(out / "reward.png")
    return files


def table(reports: dict[str, dict[str, Any]]) -> str:
    """One screen: a row per scalar, a column per report."""
    keys = [k for k in scalars(next(iter(reports.values()))) if not k.endswith(("_h1",)) or "obs_mse" in k]
    width = max(len(k) for k in keys) + 2
    cols = list(reports)
    cell = max(24, *(len(c) + 2 for c in cols))
    lines = ["".ljust(width) + "".join(f"{c:>{cell}}" for c in cols)]
    for key in keys:
        cells = "".join(f"{reports[c].get(key, float('nan')):>{cell}.4g}" for c in cols)
        lines.append(key.ljust(width) + cells)
    lines += [f"{c}: {reports[c]['note']}" for c in cols if "note" in reports[c]]
    return "\n".join(lines)
