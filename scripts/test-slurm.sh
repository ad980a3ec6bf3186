#!/usr/bin/env bash
# `make test-slurm`: the cluster path on a real one-node SLURM (scripts/slurm-local.sh), through the
# real binary. A 6-run sweep of a micro model is run once as one process (the reference) and once
# emitted as a 3-task array and submitted with sbatch from another folder; then:
#   1. the merged shard databases equal the reference run for run (status, final eval loss to the bit);
#   2. one task re-submitted alone (--array=1) changes nothing;
#   3. a task cancelled mid-run (scancel) leaves its running run `interrupted` with a checkpoint;
#      re-submitted, that run resumes from the checkpoint (its log names the step) and every run of
#      the shard ends with the reference's numbers, the resumed run's metric rows bitwise;
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
train: {steps: 400, batch: 4, seq: 32, log_every: 20, eval_every: 100, eval_batches: 4, checkpoint_every: 50}
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
# A run's checkpoint (train.checkpoint_every: 50) exists from its step 50 until it ends. Freeze the
# task (SIGSTOP to the batch step and its children) as soon as one appears, then look: a quiet
# machine trains these micro runs in about a second, and a frozen task cannot finish a run between
# the look and the cancellation. Caught at a run's very end (its checkpoint gone), thaw and wait for
# the next. scancel then sends SIGCONT and SIGTERM: the run stops at its next step and checkpoints.
rm -f results/st.shard*-of-3.db results/st.shard*-of-3.db-* out/st/*.ckpt
jid=$(sbatch --parsable --array=2 st.sbatch)
key=""
for _ in $(seq 3000); do
  if compgen -G "out/st/*.ckpt" > /dev/null; then
    scancel --full --signal=STOP "$jid"
    sleep 0.5
    key=$(sqlite3 results/st.shard2-of-3.db "SELECT key FROM runs WHERE status = 'running'" 2>/dev/null || true)
    [ -n "$key" ] && [ -f "out/st/$key.ckpt" ] && break
    key=""
    scancel --full --signal=CONT "$jid"
  fi
  sleep 0.02
done
[ -n "$key" ] || fail "task 2 showed no run with a checkpoint within 60 s: $(cat results/slurm/st.task2.log 2>/dev/null)"
scancel "$jid"
wait_job "$jid" 60
status=$(sqlite3 results/st.shard2-of-3.db "SELECT status FROM runs WHERE key = '$key'")
[ "$status" = interrupted ] || fail "the cancelled run $key is '$status', not interrupted"
ck="$co/out/st/$key.ckpt"
[ -f "$ck" ] || fail "the cancelled run $key left no checkpoint at $ck"
step=$(od -An -t u4 -j 80 -N 4 "$ck" | tr -d ' ')
[ "$step" -gt 0 ] && [ "$step" -lt 400 ] || fail "the checkpoint $ck is of step '$step'"
jid=$(sbatch --parsable --array=2 st.sbatch)
wait_job "$jid"
grep -qF "run $key: resumed from the checkpoint '$ck' at step $step of 400" results/slurm/st.task2.log \
  || fail "task 2's log does not say that run $key resumed at step $step: $(tail -n 20 results/slurm/st.task2.log)"
[ ! -e "$ck" ] || fail "the resumed run $key left its checkpoint $ck"
want=$(finals results/reference.db | grep -F -f <(sqlite3 results/st.shard2-of-3.db "SELECT key FROM runs"))
[ "$(finals results/st.shard2-of-3.db)" = "$want" ] \
  || fail "after scancel and re-submission shard 2 differs from the reference:
$(diff <(echo "$want") <(finals results/st.shard2-of-3.db))"
rows=$(sqlite3 results/st.shard2-of-3.db "ATTACH 'results/reference.db' AS r;
  SELECT (SELECT count(*) FROM r.metrics n JOIN r.runs b ON b.id = n.run_id WHERE b.key = '$key') || ' ' ||
         (SELECT count(*) FROM main.metrics m JOIN main.runs a ON a.id = m.run_id JOIN r.runs b ON b.key = a.key
          JOIN r.metrics n ON n.run_id = b.id AND n.split = m.split AND n.name = m.name AND n.step = m.step
          WHERE a.key = '$key' AND m.value IS n.value) || ' ' ||
         (SELECT count(*) FROM main.metrics m JOIN main.runs a ON a.id = m.run_id WHERE a.key = '$key')")
read -r n_ref n_same n_run <<< "$rows"
[ "$n_ref" -gt 0 ] && [ "$n_same" -eq "$n_ref" ] && [ "$n_run" -eq "$n_ref" ] \
  || fail "run $key's metric rows: $n_run, $n_same of the reference's $n_ref equal"
ok "task 2 cancelled mid-run; run $key resumed from its checkpoint at step $step of 400, re-submitted: every run equals the reference, its $n_ref metric rows bitwise"
echo "test-slurm: all checks passed"
