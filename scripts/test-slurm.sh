#!/usr/bin/env bash
# `make test-slurm`: the cluster path on a real one-node SLURM (scripts/slurm-local.sh), through the
# real binary. A 6-run sweep of a micro model is run once as one process (the reference) and once
# emitted as a 3-task array and submitted with sbatch from another folder; then:
#   1. the merged shard databases equal the reference run for run (status, final eval loss to the bit);
#   2. one task re-submitted alone (--array=1) changes nothing;
#   3. a task cancelled mid-run (scancel) and re-submitted finishes every run of its shard, with the
#      same numbers as the reference;
#   4. merging the shards twice reports added, then unchanged, runs.
# Prints what it checked; exits 1 on the first failure. Where SLURM cannot start (not root, packages
# missing), it says "skipped" and why, and exits 0: CI's log shows it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/build/loralab"
[ -x "$bin" ] || { echo "test-slurm: build/loralab is missing (make loralab)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/loralab-slurm.XXXXXX")
cluster="$work/cluster"
cleanup() {
  "$root/scripts/slurm-local.sh" stop "$cluster" >/dev/null 2>&1 || true
  if [ "${LORALAB_KEEP_TEST_DIR:-}" ]; then echo "test-slurm: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { echo "test-slurm: FAILED: $*" >&2; exit 1; }
ok() { echo "test-slurm: ok: $*"; }

set +e
env_line=$("$root/scripts/slurm-local.sh" start "$cluster" 2>"$work/start.err")
rc=$?
set -e
if [ $rc -eq 3 ]; then
  echo "test-slurm: skipped: $(cat "$work/start.err")"
  exit 0
fi
[ $rc -eq 0 ] || fail "slurm-local.sh start exited $rc: $(cat "$work/start.err")"
eval "$env_line"
ok "SLURM started ($(sinfo -h -o '%N %c CPUs %m MB %T'))"

# ---- the sweep: a micro model pretrained on a small text, 6 LoRA runs ------------------------------
mkdir -p "$work/co/data" "$work/elsewhere"
co="$work/co"
ln -s "$bin" "$co/loralab"
awk 'BEGIN { srand(1); split("the state of union is strong and we will act.", w, " ");
             for (i = 0; i < 7000; i++) printf "%s ", w[int(rand() * 10) + 1]; }' > "$co/data/train.txt"
head -c 4000 "$co/data/train.txt" > "$co/data/valid.txt"
cp "$co/data/valid.txt" "$co/data/test.txt"
cat > "$co/micro.yaml" <<YAML
hidden_size: 32
num_hidden_layers: 2
num_attention_heads: 2
num_key_value_heads: 1
intermediate_size: 64
max_position_embeddings: 64
rms_norm_eps: 1.0e-5
rope_theta: 10000.0
tie_word_embeddings: false
initializer_range: 0.02
YAML
cat > "$co/st.yaml" <<YAML
name: st
base: {preset: $co/micro.yaml, data: $co/data, tokenizer: bytes, steps: 40, batch: 4, seq: 32, lr: 0.003}
task: {type: lm, data: $co/data}
output: {dir: $co/out}
train: {steps: 400, batch: 4, seq: 32, log_every: 20, eval_every: 100, eval_batches: 4}
adapter: {targets: [q_proj, v_proj]}
sweep:
  grid:
    adapter.r: [1, 2, 4]
    train.lr: [0.001, 0.002]
YAML
cd "$co"
./loralab sweep st.yaml --jobs 1 --threads 1 --db results/reference.db > "$work/reference.log" 2>&1 \
  || fail "the reference sweep failed: $(tail -n 5 "$work/reference.log")"
finals() { sqlite3 "$1" "SELECT key, status, printf('%.17g', eval_loss) FROM runs ORDER BY key"; }
[ "$(finals results/reference.db | grep -c '|done|')" -eq 6 ] || fail "reference: $(finals results/reference.db)"
ok "reference sweep: 6 runs done in one process"

./loralab sweep st.yaml --emit-slurm --tasks 3 --threads 1 > "$work/emit.log" || fail "emit: $(cat "$work/emit.log")"
grep -q -- "--chdir=$co" st.sbatch || fail "st.sbatch has no --chdir=$co"

wait_job() { # JOBID [timeout s]: until squeue no longer lists it
  local t=${2:-300}
  for _ in $(seq $((t * 5))); do
    [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
    sleep 0.2
  done
  fail "job $1 still queued or running after $t s: $(squeue -j "$1")"
}

# ---- 1. submitted from another folder; merged equals the reference ---------------------------------
jid=$(cd "$work/elsewhere" && sbatch --parsable "$co/st.sbatch")
wait_job "$jid"
[ -z "$(ls -A "$work/elsewhere")" ] || fail "submitting from another folder left files there: $(ls "$work/elsewhere")"
for t in 0 1 2; do
  [ -f "results/st.shard$t-of-3.db" ] || fail "task $t wrote no results/st.shard$t-of-3.db; its log: $(cat results/slurm/st.task$t.log 2>/dev/null)"
done
./loralab merge-db results/merged.db results/st.shard*-of-3.db > "$work/merge1.log"
[ "$(finals results/merged.db)" = "$(finals results/reference.db)" ] \
  || fail "merged shards differ from the reference:
$(diff <(finals results/reference.db) <(finals results/merged.db))"
ok "array of 3 tasks submitted from another folder; merged = reference, bitwise (6 runs)"
grep -q "6 added, 0 upgraded, 0 unchanged in all" "$work/merge1.log" || fail "first merge said: $(cat "$work/merge1.log")"
./loralab merge-db results/merged.db results/st.shard*-of-3.db > "$work/merge2.log"
grep -q "0 added, 0 upgraded, 6 unchanged in all" "$work/merge2.log" || fail "second merge said: $(cat "$work/merge2.log")"
ok "merge-db twice: 6 added, then 6 unchanged"

# ---- 2. one task re-submitted alone ---------------------------------------------------------------
before=$(finals results/st.shard1-of-3.db)
jid=$(sbatch --parsable --array=1 st.sbatch)
wait_job "$jid"
[ "$(finals results/st.shard1-of-3.db)" = "$before" ] || fail "re-submitting task 1 changed its shard"
grep -q "task 1 of 3" results/slurm/st.task1.log || fail "task 1's log: $(cat results/slurm/st.task1.log)"
[ "$(grep -c 'loralab: task 1 of 3' results/slurm/st.task1.log)" -eq 2 ] \
  || fail "task 1's log does not hold both attempts (open-mode append)"
ok "task 1 re-submitted alone: shard 1 of 3 again, nothing changed, its log appended"

# ---- 3. a task cancelled mid-run, then re-submitted -----------------------------------------------
rm -f results/st.shard*-of-3.db results/st.shard*-of-3.db-*
jid=$(sbatch --parsable --array=2 st.sbatch)
for _ in $(seq 600); do
  n=$(sqlite3 "results/st.shard2-of-3.db" "SELECT count(*) FROM metrics m JOIN runs r ON r.id = m.run_id WHERE r.status = 'running'" 2>/dev/null || echo 0)
  [ "${n:-0}" -gt 0 ] && break
  sleep 0.1
done
[ "${n:-0}" -gt 0 ] || fail "task 2 showed no running run within 60 s: $(cat results/slurm/st.task2.log 2>/dev/null)"
# Freeze the task (SIGSTOP to the batch step and its children) before looking, so that it cannot
# finish its runs between the check and the cancellation: a quiet machine trains these micro runs
# in well under a second. scancel then sends SIGCONT and SIGTERM, and the runs stop mid-way.
scancel --full --signal=STOP "$jid"
sleep 0.5
scancel "$jid"
wait_job "$jid" 60
status=$(sqlite3 results/st.shard2-of-3.db "SELECT group_concat(status) FROM runs WHERE status != 'pending'")
case "$status" in *done,done*) fail "task 2 finished before it could be cancelled ($status)";; esac
jid=$(sbatch --parsable --array=2 st.sbatch)
wait_job "$jid"
want=$(finals results/reference.db | grep -F -f <(sqlite3 results/st.shard2-of-3.db "SELECT key FROM runs"))
[ "$(finals results/st.shard2-of-3.db)" = "$want" ] \
  || fail "after scancel and re-submission shard 2 differs from the reference:
$(diff <(echo "$want") <(finals results/st.shard2-of-3.db))"
ok "task 2 cancelled mid-run (runs: $status), re-submitted: its runs finished, equal to the reference"
echo "test-slurm: all checks passed"
