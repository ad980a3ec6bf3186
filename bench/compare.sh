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
# process so that ru_maxrss is its own peak. On a CPU with AVX512_BF16, loralab also runs each case
# with bf16 base products (train.precision: bf16) and the table gets a second row for it, with its
# loss difference from PyTorch's fp32 shown and held to 2e-3 relative. Step time is the median of
# all timed steps of a side; tokens/s = 2048 / that. As the processes of one round run back to
# back, the table also gives the ratio within each round (median and range over rounds): on a
# shared VM whose speed drifts over minutes, those pairs compare like with like. Parity: the first-step loss (both sides start from the same weights on
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
bf16=no
if "$driver" bf16; then bf16=yes; fi

for size in $sizes; do
  "$driver" prepare "$size" "$tmp/$size"
  for method in full lora; do
    for r in $(seq 1 "$rounds"); do
      echo "compare.sh: $size $method round $r/$rounds: loralab" >&2
      line=$("$driver" run "$tmp/$size" "$method" "$steps")
      echo "{\"size\": \"$size\", \"round\": $r, \"run\": $line}" >>"$runs"
      if [ "$bf16" = yes ]; then
        echo "compare.sh: $size $method round $r/$rounds: loralab, bf16 base products" >&2
        line=$("$driver" run "$tmp/$size" "$method" "$steps" bf16)
        echo "{\"size\": \"$size\", \"round\": $r, \"run\": $line}" >>"$runs"
      fi
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

def side(size, method, name, precision="fp32"):
    return [dict(r["run"], round=r["round"]) for r in rows if r["size"] == size and r["run"]["method"] == method
            and r["run"]["side"] == name and r["run"].get("precision", "fp32") == precision]

first_c = next(r["run"] for r in rows if r["run"]["side"] == "loralab")
first_t = next(r["run"] for r in rows if r["run"]["side"] == "torch")
c_threads = sorted({r["run"]["threads"] for r in rows if r["run"]["side"] == "loralab"})
t_threads = sorted({r["run"]["threads"] for r in rows if r["run"]["side"] == "torch"})
c_kern = sorted({r["run"]["kernels"] for r in rows if r["run"]["side"] == "loralab"})
t_kern = sorted({r["run"]["kernels"] for r in rows if r["run"]["side"] == "torch"})
print("loralab vs PyTorch: the same Llama model, weights and batch (8 x 256), AdamW lr 1e-3. PyTorch runs fp32;")
print("loralab runs fp32 and, on CPUs with AVX512_BF16, bf16 base products (train.precision: bf16) as a second row.")
print(f"machine: {os.environ['NPROC']} cores; load at start: {os.environ['LOAD_BEFORE'].strip()}")
print(f"                       load at end:   {os.environ['LOAD_AFTER'].strip()}")
print(f"OPENBLAS_CORETYPE: {first_c['openblas_coretype']} (both sides run in the same environment)")
print(f"loralab  BLAS: {first_c['blas_config']}; kernels {', '.join(c_kern)}; threads {c_threads} (OpenMP), BLAS threads {first_c['blas_threads']}")
b_kern = sorted({r["run"]["bf16_kernel"] for r in rows if r["run"]["side"] == "loralab" and r["run"]["precision"] == "bf16"})
if b_kern:
    print(f"loralab  bf16 base products: {', '.join(b_kern)} (amx: AMX-BF16 tiles, avx512bf16: VDPBF16PS; "
          "LORALAB_BF16_KERNEL=avx512bf16 keeps AMX off)")
print(f"PyTorch {first_t['torch']} BLAS: {first_t['blas_config']}; kernels {', '.join(t_kern)}; threads {t_threads} "
      f"(torch.get_num_threads), BLAS threads {first_t['blas_threads']}; own kernels {first_t['torch_cpu_capability']}")
print(f"PyTorch loaded: {', '.join(first_t['blas_libraries'])}")
same = c_threads == t_threads and c_kern == t_kern
print("same thread count and the same OpenBLAS kernels on both sides: " + ("yes" if same else "NO (timings are not comparable)"))
print(f"steps: 1 warm-up + {first_c['steps']} timed per process, {max(r['round'] for r in rows)} processes per side, alternating; "
      "time = median of all timed steps of a side")
print()
hdr = (f"{'size':<7} {'method':<9} {'loralab tok/s':>13} {'PyTorch tok/s':>13} {'ratio':>6} {'paired':>6} {'pair range':>11} "
       f"{'loralab MB':>10} {'PyTorch MB':>10} "
       f"{'first loss loralab':>18} {'first loss PyTorch':>18} {'|diff|':>8} {'3-step rel diff':>15} {'max|dlogit|':>11}  parity")
print(hdr)
print("-" * len(hdr))
fails = 0
for size, method in cases:
    t = side(size, method, "torch")
    t_step = statistics.median([s for r in t for s in r["step_s"]])
    ft, l3t = t[0]["first_loss"], t[0]["losses"][3]
    for prec in ("fp32", "bf16"):
        c = side(size, method, "loralab", prec)
        if not c:
            continue
        c_step = statistics.median([s for r in c for s in r["step_s"]])
        ntok = c[0]["B"] * c[0]["T"]
        c_tps, t_tps = ntok / c_step, ntok / t_step
        c_mb, t_mb = max(r["peak_rss_mb"] for r in c), max(r["peak_rss_mb"] for r in t)
        # the processes of one round ran back to back: their ratio sees the same machine, which
        # drifts by tens of percent over minutes on a shared VM
        pairs = [statistics.median(tr["step_s"]) / statistics.median(cr["step_s"])
                 for cr in c for tr in t if tr["round"] == cr["round"]]
        fc = c[0]["first_loss"]
        d1 = abs(fc - ft)
        d3 = abs(c[0]["losses"][3] - l3t) / abs(l3t)
        key = "max_abs_logit_diff" if prec == "fp32" else "max_abs_logit_diff_bf16"
        dl = max(r.get(key, float("nan")) for r in t)
        # every process must reproduce its side's losses: the runs are deterministic
        stable = all(r["losses"] == c[0]["losses"] for r in c) and all(r["losses"] == t[0]["losses"] for r in t)
        # fp32 must match PyTorch; bf16 rounds the base products' inputs, so its loss moves by about
        # 1e-4 relative (the table shows by how much) and is held to 2e-3.
        tol = 1e-4 if prec == "fp32" else 2e-3 * abs(ft)
        ok = d1 < tol and d3 < (1e-4 if prec == "fp32" else 2e-3) and stable and c[0]["trainable"] == t[0]["trainable"]
        fails += not ok
        label = method if prec == "fp32" else method + "+bf16"
        prange = f"{min(pairs):.2f}-{max(pairs):.2f}"
        print(f"{size:<7} {label:<9} {c_tps:>13.0f} {t_tps:>13.0f} {c_tps / t_tps:>6.2f} {statistics.median(pairs):>6.2f} "
              f"{prange:>11} {c_mb:>10.0f} {t_mb:>10.0f} "
              f"{fc:>18.9f} {ft:>18.9f} {d1:>8.1e} {d3:>15.1e} {dl:>11.1e}  {'ok' if ok else 'FAIL'}")
print()
print("ratio = loralab tokens/s / PyTorch tokens/s (> 1: loralab faster), from the medians over all steps of a side;")
print("paired = the median over rounds of the ratio within a round (the two sides' processes ran back to back), and")
print("pair range its smallest and largest. MB = peak RSS (ru_maxrss) of the process,")
print("PyTorch's including the torch library itself. Parity: |first-loss diff| < 1e-4 and relative difference of the")
print("loss after 3 AdamW steps < 1e-4 (bf16 rows: 2e-3), the same losses in every process of a side, the same")
print("trainable-parameter count.")
print("Losses after 0..3 steps (loralab / PyTorch):")
for size, method in cases:
    t = side(size, method, "torch")
    for prec in ("fp32", "bf16"):
        c = side(size, method, "loralab", prec)
        if c:
            label = method if prec == "fp32" else method + "+bf16"
            print(f"  {size:<7} {label:<9} " + "  ".join(f"{a:.7f}/{b:.7f}" for a, b in zip(c[0]["losses"][:4], t[0]["losses"][:4])))
print()
print("FAIL: parity" if fails else "parity: ok")
sys.exit(1 if fails else 0)
EOF
cat "$tmp/table.txt"
cp "$tmp/table.txt" "$out"
echo "wrote $out" >&2
exit "$status"
