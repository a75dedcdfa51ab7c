#!/usr/bin/env bash
# GPU speed check (issues #17, #23): seconds per update (batch 16 x 64, the update benchmarks/speed.py times) at
# size1m and size12m, float32 and bf16 (speed.py --precision bf16: run.precision=bf16, bfloat16 compute under
# torch.autocast with float32 weights), per run.compile mode (speed.py --compile: `update` is the whole update as
# one graph replayed as a CUDA graph, `steps` the compiled recurrent steps, `none` eager), with peak GPU memory
# (torch.cuda.max_memory_allocated) per row, the GPU's name and the torch and CUDA versions, as one table. When the
# official DreamerV3 harness is there (GPU_CHECK_OFFICIAL, default .peers/official, made by
# ../shared/peers/official/prepare.sh), its compiled train step is timed on the same card for each size and
# precision, and the table prints its s/update beside ours and their ratio (ours / official: below 1 is faster).
#
# Each configuration runs as its own process under its own time limit, so a slow compile loses only its own row
# and the table prints whatever finished. All of them together stay within GPU_CHECK_BUDGET_S (default 540 s, under
# the device tool's 600 s per command). `update` compiles the unrolled update in minutes (13 on the 2-core CPU at
# size1m), so the defaults take one size and precision; name more in the settings below for a longer call.
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
# Settings (environment): GPU_CHECK_DEVICE (cuda), GPU_CHECK_SIZES ("size1m"),
# GPU_CHECK_MODES ("update none": run.compile modes, of none, steps, update, auto), GPU_CHECK_PRECISIONS
# ("float32"), GPU_CHECK_SKIP (rows left out, as size_mode_precision; "" runs them all), GPU_CHECK_REPEATS
# (5 timed updates), GPU_CHECK_BUDGET_S (540), GPU_CHECK_EAGER_S (45) and GPU_CHECK_COMPILED_S (420): the limit of
# one eager or compiled process, GPU_CHECK_OFFICIAL (.peers/official), GPU_CHECK_OFFICIAL_S (90: the limit of one
# official process), PYTHON; OFFICIAL_PYTHON (python3: the interpreter that has jax).
set -uo pipefail
cd "$(dirname "$0")/.."

py=${PYTHON:-python3}
device=${GPU_CHECK_DEVICE:-cuda}
sizes=${GPU_CHECK_SIZES:-size1m}
modes=${GPU_CHECK_MODES:-update none}
precisions=${GPU_CHECK_PRECISIONS:-float32}
skip=${GPU_CHECK_SKIP-}
repeats=${GPU_CHECK_REPEATS:-5}
budget=${GPU_CHECK_BUDGET_S:-540}
eager_limit=${GPU_CHECK_EAGER_S:-45}
compiled_limit=${GPU_CHECK_COMPILED_S:-420}
official=${GPU_CHECK_OFFICIAL:-.peers/official}
official_limit=${GPU_CHECK_OFFICIAL_S:-90}
official_py=${OFFICIAL_PYTHON:-python3}
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
    local start=${official_start:-$SECONDS} size mode precision flag limit left name rc status  # one budget with the official runs
    for size in $sizes; do
        for mode in $modes; do
            for precision in $precisions; do
                name="${size}_${mode}_${precision}"
                if [[ " $skip " == *" $name "* ]]; then
                    echo "== $name: skipped (GPU_CHECK_SKIP)"
                    echo "skipped (GPU_CHECK_SKIP)" >"$work/$name.status"
                    continue
                fi
                if [ "$mode" = none ]; then limit=$eager_limit; else limit=$compiled_limit; fi
                flag="--compile $mode"
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

official_measure() {  # the official JAX train step on the same card, per size and precision (when its harness is here)
    [ -f "$official/bench_train.py" ] || { echo "== official: no harness in $official (../shared/peers/official/prepare.sh)"; return 0; }
    local site="$work/dv3site" size precision dtype left limit rc began home
    home=$(cd "$official" && pwd)
    if compgen -G "$official/wheels/*.whl" >/dev/null; then
        "$official_py" -m pip install -q --no-index --no-deps --target "$site" "$official"/wheels/*.whl || { echo "== official: wheels failed"; return 0; }
    fi
    for size in $sizes; do
        for precision in $precisions; do
            if [ "$precision" = bf16 ]; then dtype=bfloat16; else dtype=float32; fi
            left=$((budget - (SECONDS - official_start)))
            limit=$official_limit
            [ "$limit" -gt "$left" ] && limit=$left
            if [ "$limit" -lt 15 ]; then echo "== official ${size} ${precision}: skipped, budget spent"; continue; fi
            echo "== official ${size} ${precision} (limit ${limit} s)"
            began=$SECONDS
            (cd "$work" && DV3_SRC="$home/src" DV3_PLATFORM=$device PYTHONPATH="$site" \
                timeout --kill-after=10 "$limit" "$official_py" "$home/bench_train.py" \
                --size "$size" --dtype "$dtype" --warmup 3 --steps 20 --out "$work/official_${size}_${precision}.json")
            rc=$?
            echo "== official ${size} ${precision}: rc=$rc after $((SECONDS - began)) s"
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
rows, runs, official = [], {}, {}
for size in sizes:
    for precision in precisions:
        path = work / f"official_{size}_{precision}.json"
        if path.exists():
            official[(size, precision)] = json.loads(path.read_text())
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
          f"{'official s':>10} {'/official':>9} {'breaks':>6} {'GFLOP/upd':>10} {'peak alloc MiB':>15} {'peak rsrv MiB':>14}  status")
lines += ["", header, "-" * len(header)]
median = {(r["size"], r["mode"], r["precision"]): r.get("s_per_update_median") for r in rows}
for r in rows:
    ratio = f32 = "-"
    eager = median.get((r["size"], "none", r["precision"]))
    if r["mode"] != "none" and eager and r.get("s_per_update_median"):
        ratio = f"x{eager / r['s_per_update_median']:.2f}"
    base = median.get((r["size"], r["mode"], "float32"))
    if r["precision"] != "float32" and base and r.get("s_per_update_median"):
        f32 = f"x{base / r['s_per_update_median']:.2f}"
    theirs = official.get((r["size"], r["precision"]), {}).get("median_s")
    vs_official = f"{r['s_per_update_median'] / theirs:.2f}" if theirs and r.get("s_per_update_median") else "-"
    lines.append(
        f"{r['size']:<9} {r['mode']:<9} {r['precision']:<9} {num(r, 's_per_update_median', '.4f'):>9} {num(r, 's_per_update_min', '.4f'):>8} "
        f"{num(r, 'warmup_s', '.1f'):>10} {ratio:>9} {f32:>7} {format(theirs, '.4f') if theirs else '-':>10} {vs_official:>9} "
        f"{num(r, 'graph_breaks', 'd'):>6} {num(r, 'gflop_per_update', '.0f'):>10} "
        f"{num(r, 'peak_gpu_mem_allocated_mib', '.0f'):>15} {num(r, 'peak_gpu_mem_reserved_mib', '.0f'):>14}  {r['status']}"
    )
lines += [
    "",
    "s/update: median of the timed updates (min: fastest), synchronised; warm-up s: the two updates before them "
    "(compilation included); vs eager: eager (none) s/update of the same size and precision over this row's; vs f32: the float32 "
    "row of the same size and mode over this row's; peak: torch.cuda.max_memory_allocated / max_memory_reserved of the process. "
    "bf16: run.precision=bf16, bfloat16 compute under torch.autocast, float32 weights, optimiser state and losses. "
    "official s: median s/update of the official DreamerV3 (JAX) compiled train step on this card, same batch, size and "
    "compute dtype (../shared/peers/official/bench_train.py; - where it did not run); /official: this row's over it; "
    "breaks: graph breaks dynamo met in the whole update (run.compile=update).",
]
text = "\n".join(lines) + "\n"
print(text, end="")
(out / "gpu_check.txt").write_text(text)
(out / "gpu_check.json").write_text(json.dumps({"command": command, "env": env, "precisions": precisions, "rows": rows, "runs": runs,
                                                "official": {f"{k[0]}_{k[1]}": v for k, v in official.items()}}, indent=2))
EOF
}

main() {
    setup || { echo "gpu_check: setup failed"; return 1; }
    official_start=$SECONDS
    official_measure
    measure
    echo
    table
}

main 2>&1 | tee "$out/gpu_check.log"
