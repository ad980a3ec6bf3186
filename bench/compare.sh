#!/usr/bin/env bash
# compare.sh: loralab against PyTorch on the same model, the same weights and the same batch
# (`make bench-compare`). Needs build/bench_compare (the Makefile builds it) and python3 with torch
# and numpy (`scripts/deps.sh --bench`).
#
#   bench/compare.sh [STEPS]      STEPS timed steps per process after 1 warm-up (default 5, >= 3)
#
# Environment: OMP_NUM_THREADS (default 2, given to both sides), BENCH_ROUNDS (processes per side
# and case, default 2), BENCH_SIZES (default "gqa tiny small medium"), PYTHON (an interpreter that
# imports torch; by default the first of python3 and the system's /usr/bin/python3 that does).
#
# For each size, bench_compare writes the model folder, the LoRA adapter (r 8, alpha 16, q_proj and
# v_proj) and the batch (8 x 256) into a temporary folder; then, for full fine-tuning and LoRA, the
# two sides run in alternating processes (loralab, PyTorch, loralab, PyTorch, ...), each in its own
# process so that ru_maxrss is its own peak. Step time is the median of all timed steps of a side;
# tokens/s = 2048 / that. Parity: the first-step loss (both sides start from the same weights on
# the same batch) must agree to 1e-4 absolute, the loss after 3 AdamW steps to 1e-4 relative; the
# largest logit difference of the first forward (4 positions of every row, every vocabulary entry)
# is printed. Any FAIL makes the exit status 1. The table also goes to results/bench-compare.txt.
#
# Sizes: tiny/small/medium are `make bench`'s shapes (untied head, kv heads = heads); gqa is tiny
# with 2 kv heads per 4 query heads and a tied head, there for parity of those two code paths.
set -eu

steps=${1:-${BENCH_STEPS:-5}}
rounds=${BENCH_ROUNDS:-2}
sizes=${BENCH_SIZES:-"gqa tiny small medium"}
threads=${OMP_NUM_THREADS:-2}
driver=build/bench_compare
out=results/bench-compare.txt

case "$steps" in '' | *[!0-9]*) echo "compare.sh: STEPS must be a number, not '$steps'" >&2; exit 2 ;; esac
if [ "$steps" -lt 3 ]; then
  echo "compare.sh: STEPS must be at least 3 (the parity check reads the loss after 3 steps)" >&2
  exit 2
fi
[ -x "$driver" ] || { echo "compare.sh: $driver is missing; run 'make bench-compare'" >&2; exit 2; }

py=""
for cand in ${PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import torch, numpy' >/dev/null 2>&1; then
    py=$cand
    break
  fi
done
if [ -z "$py" ]; then
  echo "compare.sh: no python3 that imports torch and numpy; install them with 'scripts/deps.sh --bench'" >&2
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-compare.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
runs="$tmp/runs.jsonl"
: >"$runs"
export OMP_NUM_THREADS=$threads
load_before=$(uptime)

for size in $sizes; do
  "$driver" prepare "$size" "$tmp/$size"
  for method in full lora; do
    for r in $(seq 1 "$rounds"); do
      echo "compare.sh: $size $method round $r/$rounds: loralab" >&2
      line=$("$driver" run "$tmp/$size" "$method" "$steps")
      echo "{\"size\": \"$size\", \"round\": $r, \"run\": $line}" >>"$runs"
      echo "compare.sh: $size $method round $r/$rounds: PyTorch" >&2
      line=$("$py" bench/torch_reference.py run "$tmp/$size" "$method" "$steps" --threads "$threads")
      echo "{\"size\": \"$size\", \"round\": $r, \"run\": $line}" >>"$runs"
    done
  done
done

mkdir -p results
status=0
LOAD_BEFORE=$load_before LOAD_AFTER=$(uptime) NPROC=$(nproc) "$py" - "$runs" >"$tmp/table.txt" <<'EOF' || status=$?
import json, os, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cases = []
for r in rows:
    key = (r["size"], r["run"]["method"])
    if key not in cases:
        cases.append(key)

def side(size, method, name):
    return [r["run"] for r in rows if r["size"] == size and r["run"]["method"] == method and r["run"]["side"] == name]

first_c = next(r["run"] for r in rows if r["run"]["side"] == "loralab")
first_t = next(r["run"] for r in rows if r["run"]["side"] == "torch")
c_threads = sorted({r["run"]["threads"] for r in rows if r["run"]["side"] == "loralab"})
t_threads = sorted({r["run"]["threads"] for r in rows if r["run"]["side"] == "torch"})
c_kern = sorted({r["run"]["kernels"] for r in rows if r["run"]["side"] == "loralab"})
t_kern = sorted({r["run"]["kernels"] for r in rows if r["run"]["side"] == "torch"})
print("loralab vs PyTorch: the same Llama model, weights and batch (8 x 256), fp32, AdamW lr 1e-3")
print(f"machine: {os.environ['NPROC']} cores; load at start: {os.environ['LOAD_BEFORE'].strip()}")
print(f"                       load at end:   {os.environ['LOAD_AFTER'].strip()}")
print(f"OPENBLAS_CORETYPE: {first_c['openblas_coretype']} (both sides run in the same environment)")
print(f"loralab  BLAS: {first_c['blas_config']}; kernels {', '.join(c_kern)}; threads {c_threads} (OpenMP), BLAS threads {first_c['blas_threads']}")
print(f"PyTorch {first_t['torch']} BLAS: {first_t['blas_config']}; kernels {', '.join(t_kern)}; threads {t_threads} "
      f"(torch.get_num_threads), BLAS threads {first_t['blas_threads']}; own kernels {first_t['torch_cpu_capability']}")
print(f"PyTorch loaded: {', '.join(first_t['blas_libraries'])}")
same = c_threads == t_threads and c_kern == t_kern
print("same thread count and the same OpenBLAS kernels on both sides: " + ("yes" if same else "NO (timings are not comparable)"))
print(f"steps: 1 warm-up + {first_c['steps']} timed per process, {max(r['round'] for r in rows)} processes per side, alternating; "
      "time = median of all timed steps of a side")
print()
hdr = (f"{'size':<7} {'method':<6} {'loralab tok/s':>13} {'PyTorch tok/s':>13} {'ratio':>6} {'loralab MB':>10} {'PyTorch MB':>10} "
       f"{'first loss loralab':>18} {'first loss PyTorch':>18} {'|diff|':>8} {'3-step rel diff':>15} {'max|dlogit|':>11}  parity")
print(hdr)
print("-" * len(hdr))
fails = 0
for size, method in cases:
    c, t = side(size, method, "loralab"), side(size, method, "torch")
    c_step = statistics.median([s for r in c for s in r["step_s"]])
    t_step = statistics.median([s for r in t for s in r["step_s"]])
    ntok = c[0]["B"] * c[0]["T"]
    c_tps, t_tps = ntok / c_step, ntok / t_step
    c_mb, t_mb = max(r["peak_rss_mb"] for r in c), max(r["peak_rss_mb"] for r in t)
    fc, ft = c[0]["first_loss"], t[0]["first_loss"]
    d1 = abs(fc - ft)
    l3c, l3t = c[0]["losses"][3], t[0]["losses"][3]
    d3 = abs(l3c - l3t) / abs(l3t)
    dl = max(r.get("max_abs_logit_diff", float("nan")) for r in t)
    # every process must reproduce its side's losses: the runs are deterministic
    stable = all(r["losses"] == c[0]["losses"] for r in c) and all(r["losses"] == t[0]["losses"] for r in t)
    ok = d1 < 1e-4 and d3 < 1e-4 and stable and c[0]["trainable"] == t[0]["trainable"]
    fails += not ok
    print(f"{size:<7} {method:<6} {c_tps:>13.0f} {t_tps:>13.0f} {c_tps / t_tps:>6.2f} {c_mb:>10.0f} {t_mb:>10.0f} "
          f"{fc:>18.9f} {ft:>18.9f} {d1:>8.1e} {d3:>15.1e} {dl:>11.1e}  {'ok' if ok else 'FAIL'}")
print()
print("ratio = loralab tokens/s / PyTorch tokens/s (> 1: loralab faster). MB = peak RSS (ru_maxrss) of the process,")
print("PyTorch's including the torch library itself. Parity: |first-loss diff| < 1e-4 and relative difference of the")
print("loss after 3 AdamW steps < 1e-4, the same losses in every process of a side, the same trainable-parameter count.")
print("Losses after 0..3 steps (loralab / PyTorch):")
for size, method in cases:
    c, t = side(size, method, "loralab"), side(size, method, "torch")
    print(f"  {size:<7} {method:<5} " + "  ".join(f"{a:.7f}/{b:.7f}" for a, b in zip(c[0]["losses"][:4], t[0]["losses"][:4])))
print()
print("FAIL: parity" if fails else "parity: ok")
sys.exit(1 if fails else 0)
EOF
cat "$tmp/table.txt"
cp "$tmp/table.txt" "$out"
echo "wrote $out" >&2
exit "$status"
