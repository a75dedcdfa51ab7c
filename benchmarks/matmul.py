"""Linear-layer throughput on this CPU: MKL (`F.linear`) against oneDNN (`worldmodels.cpu.matmul`), per shape.

The shapes are those of a size1m and a size12m update at batch 16 x 64 (rows x inputs x outputs): head
layers on 16 x 1024 imagined states, world-model layers on 1024 replayed steps, and recurrent steps on 16
rows. Times forward alone and forward + backward (input, weight and bias gradients). Prints a table and
saves `benchmarks/results/matmul.json`; `worldmodels/cpu/matmul.py` picks its `MIN_MACS` from it.

    python benchmarks/matmul.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from worldmodels.cpu.matmul import MIN_MACS, available, onednn_linear

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [  # (rows, inputs, outputs)
    (16384, 640, 64), (16384, 64, 64), (16384, 64, 255), (1024, 640, 64), (1024, 64, 17), (16, 512, 64),  # size1m
    (16384, 2560, 256), (16384, 256, 256), (16384, 256, 255), (16384, 256, 1), (1024, 2560, 256),  # size12m
    (1024, 2048, 256), (1024, 768, 2048), (16, 2048, 256), (16, 768, 2048),
]


def per_call_us(fn, flops: float) -> float:
    repeats = max(3, int(4e8 / flops))
    for _ in range(3):
        fn()
    began = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - began) / repeats * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "matmul.json")
    args = parser.parse_args()
    if not available():
        raise SystemExit("error: this PyTorch build has no oneDNN linear op (torch.ops.mkldnn._linear_pointwise)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    print(f"{'rows x in x out':>22} {'fwd MKL':>9} {'fwd oneDNN':>10} {'f+b MKL':>9} {'f+b oneDNN':>10}  GFLOP/s f+b MKL / oneDNN")
    for m, k, n in SHAPES:
        x = torch.randn(m, k, requires_grad=True)
        w = torch.randn(n, k, requires_grad=True)
        b = torch.zeros(n, requires_grad=True)
        grad = torch.randn(m, n)
        flops = 2.0 * m * k * n
        row = {
            "shape": [m, k, n],
            "fwd_mkl_us": per_call_us(lambda x=x, w=w, b=b: F.linear(x.detach(), w.detach(), b.detach()), flops),
            "fwd_onednn_us": per_call_us(lambda x=x, w=w, b=b: onednn_linear(x.detach(), w.detach(), b.detach()), flops),
            "fwd_bwd_mkl_us": per_call_us(lambda x=x, w=w, b=b, g=grad: F.linear(x, w, b).backward(g), 3 * flops),
            "fwd_bwd_onednn_us": per_call_us(lambda x=x, w=w, b=b, g=grad: onednn_linear(x, w, b).backward(g), 3 * flops),
        }
        row["onednn_used"] = m * k * n >= MIN_MACS
        rows.append(row)
        gflops = [3 * flops / row[key] / 1e3 for key in ("fwd_bwd_mkl_us", "fwd_bwd_onednn_us")]
        print(f"{m:>7} x {k:>5} x {n:>4} {row['fwd_mkl_us']:>9.0f} {row['fwd_onednn_us']:>10.0f} {row['fwd_bwd_mkl_us']:>9.0f} "
              f"{row['fwd_bwd_onednn_us']:>10.0f}  {gflops[0]:6.0f} / {gflops[1]:.0f}" + ("" if row["onednn_used"] else "  (under MIN_MACS: MKL)"))
    result = {"threads": args.threads, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "min_macs": MIN_MACS, "unit": "microseconds per call", "shapes": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
