#!/usr/bin/env bash
# GPU speed check (issue #17): seconds per update (batch 16 x 64, the update benchmarks/speed.py times) at
# size1m, size12m and size50m, float32 and bf16 (speed.py --precision bf16: run.precision=bf16, bfloat16
# compute under torch.autocast with float32 weights), eager and compiled (speed.py --compile), with peak GPU
# memory (torch.cuda.max_memory_allocated) per row, the GPU's name and the torch and CUDA versions, as one table.
#
# Each configuration runs as its own process under its own time limit (per size: eager float32, eager bf16,
# compiled float32, compiled bf16), so a slow compile loses only its own row and the table prints whatever
# finished. All of them together stay within GPU_CHECK_BUDGET_S (default 280 s): with start-up the script
# takes under 5 minutes. To fit, GPU_CHECK_SKIP leaves out size50m compiled bf16 by default (about 40 s).
#
#   bash benchmarks/gpu_check.sh                                              # on a machine with a CUDA GPU
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_SIZES=debug bash benchmarks/gpu_check.sh   # smoke test of the script itself
#
# Writes gpu_check.txt (the table), gpu_check.json (every row, with speed.py's fields) and gpu_check.log
# (all output) to $OUT, or to benchmarks/results/gpu_check/ when OUT is unset.
# Python packages the package needs that the machine lacks (gymnasium, hydra-core, omegaconf) are installed
# into a temporary folder: from the wheels in $GPU_CHECK_WHEELS (default .whl/) when there are any, as on a
# machine with no network, else from the package index; torch too, if it is missing.
#
# Settings (environment): GPU_CHECK_DEVICE (cuda), GPU_CHECK_SIZES ("size1m size12m size50m"),
# GPU_CHECK_MODES ("eager compiled"), GPU_CHECK_PRECISIONS ("float32 bf16"), GPU_CHECK_SKIP (rows left out,
# as size_mode_precision: "size50m_compiled_bf16"; "" runs them all), GPU_CHECK_REPEATS (5 timed updates),
# GPU_CHECK_BUDGET_S (280), GPU_CHECK_EAGER_S (45) and GPU_CHECK_COMPILED_S (100): the limit of one eager or
# compiled process, PYTHON.
set -uo pipefail
cd "$(dirname "$0")/.."

py=${PYTHON:-python3}
device=${GPU_CHECK_DEVICE:-cuda}
sizes=${GPU_CHECK_SIZES:-size1m size12m size50m}
modes=${GPU_CHECK_MODES:-eager compiled}
precisions=${GPU_CHECK_PRECISIONS:-float32 bf16}
skip=${GPU_CHECK_SKIP-size50m_compiled_bf16}
repeats=${GPU_CHECK_REPEATS:-5}
budget=${GPU_CHECK_BUDGET_S:-280}
eager_limit=${GPU_CHECK_EAGER_S:-45}
compiled_limit=${GPU_CHECK_COMPILED_S:-100}
wheels=${GPU_CHECK_WHEELS:-.whl}
out=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$work"' EXIT
export PYTHONUNBUFFERED=1

setup() {
    if ! "$py" -c 'import torch' 2>/dev/null; then
        echo "gpu_check: torch is missing, installing it (pip install torch)"
        "$py" -m pip install -q torch || { echo "gpu_check: could not install torch"; return 1; }
    fi
    if ! "$py" -c 'import gymnasium, hydra, omegaconf' 2>/dev/null; then
        local site="$work/site"
        if compgen -G "$wheels/*.whl" >/dev/null; then
            echo "gpu_check: installing $(cd "$wheels" && echo *.whl) into $site"
            "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl || return 1
        else
            echo "gpu_check: installing gymnasium, hydra-core and omegaconf into $site"
            "$py" -m pip install -q --target "$site" gymnasium "hydra-core>=1.3,<1.4" omegaconf || return 1
        fi
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # worldmodels and envs from this checkout
    local driver=""
    if command -v nvidia-smi >/dev/null; then
        driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
    fi
    DRIVER="$driver" "$py" - "$work/env.json" <<'EOF'
import json, os, platform, sys
import torch
env = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
       "driver": os.environ.get("DRIVER") or None, "python": platform.python_version()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    env.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1))
print("gpu_check:", json.dumps(env))
json.dump(env, open(sys.argv[1], "w"))
EOF
}

measure() {
    local start=$SECONDS size mode precision flag limit left name rc status
    for size in $sizes; do
        for mode in $modes; do
            for precision in $precisions; do
                name="${size}_${mode}_${precision}"
                if [[ " $skip " == *" $name "* ]]; then
                    echo "== $name: skipped (GPU_CHECK_SKIP)"
                    echo "skipped (GPU_CHECK_SKIP)" >"$work/$name.status"
                    continue
                fi
                if [ "$mode" = compiled ]; then flag=--compile limit=$compiled_limit; else flag="" limit=$eager_limit; fi
                left=$((budget - (SECONDS - start)))
                if [ "$left" -lt 15 ]; then
                    echo "== $name: skipped, the ${budget} s budget is spent"
                    echo "skipped (budget)" >"$work/$name.status"
                    continue
                fi
                [ "$limit" -gt "$left" ] && limit=$left
                echo "== $name (limit ${limit} s)"
                began=$SECONDS
                # shellcheck disable=SC2086
                timeout --kill-after=10 "$limit" "$py" benchmarks/speed.py --device "$device" --sizes "$size" $flag \
                    --precision "$precision" --repeats "$repeats" --env-steps 0 --out "$work/$name.json"
                rc=$?
                case $rc in
                    0) status=ok ;;
                    124 | 137) status="timeout ${limit} s" ;;
                    *) status="error rc=$rc" ;;
                esac
                echo "== $name: $status after $((SECONDS - began)) s"
                echo "$status" >"$work/$name.status"
                echo "$limit" >"$work/$name.limit"
            done
        done
    done
}

command_line() {  # how this script was run, with the settings given to it
    local v
    for v in $(compgen -e | grep '^GPU_CHECK_' | sort); do printf '%s=%q ' "$v" "${!v}"; done
    printf 'bash benchmarks/gpu_check.sh'
}

table() {
    "$py" - "$work" "$out" "$sizes" "$modes" "$precisions" "$device" "$(command_line)" <<'EOF'
import datetime, json, sys
from pathlib import Path

work, out, sizes, modes, precisions = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), sys.argv[5].split()
device, command = sys.argv[6], sys.argv[7]
env = json.loads((work / "env.json").read_text()) if (work / "env.json").exists() else {}
rows, runs = [], {}
for size in sizes:
    for mode in modes:
        for precision in precisions:
            name = f"{size}_{mode}_{precision}"
            status_file = work / f"{name}.status"
            row = {"size": size, "mode": mode, "precision": precision,
                   "status": status_file.read_text().strip() if status_file.exists() else "not run"}
            if (work / f"{name}.limit").exists():
                row["limit_s"] = int((work / f"{name}.limit").read_text())
            if (work / f"{name}.json").exists():
                run = json.loads((work / f"{name}.json").read_text())
                runs[name] = run
                row.update(run["sizes"][size])
                row["matmul_gflop_per_s"] = run["matmul_gflop_per_s"]
            rows.append(row)

def num(row, key, fmt):
    return format(row[key], fmt) if row.get(key) is not None else "-"

first = next(iter(runs.values()), {})
gpu = env.get("gpu") or "no CUDA GPU"
lines = [
    f"GPU check (benchmarks/gpu_check.sh), {datetime.date.today().isoformat()}: seconds per update (world model + actor + critic), "
    f"batch {next((r['batch'] for r in rows if 'batch' in r), '16 x 64')}, {' and '.join(precisions)}, device {device}",
    f"command: {command}",
    f"gpu: {gpu}" + (f" (sm {env['capability']}, {env['gpu_memory_gib']} GiB)" if "capability" in env else "")
    + f", driver {env.get('driver') or '-'}; torch {env.get('torch', '-')}, CUDA {env.get('cuda') or '-'}",
]
if first:
    cpu = first.get("cpu") or {}
    lines.append(f"cpu: {cpu.get('model', '-')}, {cpu.get('logical_cpus', '-')} logical CPUs; flags: {' '.join(cpu.get('flags', [])) or '-'}")
    for precision in precisions:  # the first row of each precision that ran
        gflops = next((r["matmul_gflop_per_s"] for r in rows if r["precision"] == precision and "matmul_gflop_per_s" in r), None)
        if gflops is not None:
            lines.append(f"matmul throughput ({precision}, 16384x2560 @ 2560x256, {device}): {gflops:.0f} GFLOP/s")
header = (f"{'size':<9} {'mode':<9} {'precision':<9} {'s/update':>9} {'min':>8} {'warm-up s':>10} {'vs eager':>9} {'vs f32':>7} "
          f"{'GFLOP/upd':>10} {'peak alloc MiB':>15} {'peak rsrv MiB':>14}  status")
lines += ["", header, "-" * len(header)]
median = {(r["size"], r["mode"], r["precision"]): r.get("s_per_update_median") for r in rows}
for r in rows:
    ratio = f32 = "-"
    eager = median.get((r["size"], "eager", r["precision"]))
    if r["mode"] == "compiled" and eager and r.get("s_per_update_median"):
        ratio = f"x{eager / r['s_per_update_median']:.2f}"
    base = median.get((r["size"], r["mode"], "float32"))
    if r["precision"] != "float32" and base and r.get("s_per_update_median"):
        f32 = f"x{base / r['s_per_update_median']:.2f}"
    lines.append(
        f"{r['size']:<9} {r['mode']:<9} {r['precision']:<9} {num(r, 's_per_update_median', '.4f'):>9} {num(r, 's_per_update_min', '.4f'):>8} "
        f"{num(r, 'warmup_s', '.1f'):>10} {ratio:>9} {f32:>7} {num(r, 'gflop_per_update', '.0f'):>10} "
        f"{num(r, 'peak_gpu_mem_allocated_mib', '.0f'):>15} {num(r, 'peak_gpu_mem_reserved_mib', '.0f'):>14}  {r['status']}"
    )
lines += [
    "",
    "s/update: median of the timed updates (min: fastest), synchronised; warm-up s: the two updates before them "
    "(compilation included); vs eager: eager s/update of the same size and precision over this row's; vs f32: the float32 "
    "row of the same size and mode over this row's; peak: torch.cuda.max_memory_allocated / max_memory_reserved of the process. "
    "bf16: run.precision=bf16, bfloat16 compute under torch.autocast, float32 weights, optimiser state and losses.",
]
text = "\n".join(lines) + "\n"
print(text, end="")
(out / "gpu_check.txt").write_text(text)
(out / "gpu_check.json").write_text(json.dumps({"command": command, "env": env, "precisions": precisions, "rows": rows, "runs": runs}, indent=2))
EOF
}

main() {
    setup || { echo "gpu_check: setup failed"; return 1; }
    measure
    echo
    table
}

main 2>&1 | tee "$out/gpu_check.log"
