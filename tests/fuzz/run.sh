#!/bin/sh
# run.sh: runs libFuzzer targets for a fixed time each and prints a summary table (`make fuzz`,
# `make fuzz-long`).
#
#   tests/fuzz/run.sh [--corpus DIR] [--runs N] FUZZ_BUILD_DIR SECONDS TARGET...
#       (TARGET: safetensors, tokenizer, config, jsonl, adapter_config, report, yaml_run)
#
# For each target: the saved crash inputs of tests/fuzz/regressions/TARGET/ are replayed first
# (each must pass), then FUZZ_BUILD_DIR/fuzz_TARGET runs for SECONDS (or N executions, whichever
# comes first) with tests/fuzz/SEEDS.dict when there is one. SEEDS is the target's seed folder:
# tests/fuzz/TARGET/, except yaml_run, which shares config's seeds and dictionary.
#   - Without --corpus (`make fuzz`, CI): on a scratch copy of the seeds, so the committed corpus
#     never grows.
#   - With --corpus DIR (`make fuzz-long`): DIR/TARGET/ is the working corpus, kept between runs
#     and grown by each (libFuzzer writes new inputs into the first folder it is given); the seeds
#     are read beside it every time, so a fresh clone starts from them.
# One target runs at a time, single-threaded: the machine is shared.
# A crash, leak, timeout or out-of-memory input is copied to FUZZ_BUILD_DIR/crashes/TARGET/ and
# the script exits 1 after the table; such an input belongs in tests/fuzz/regressions/TARGET/
# with a test in tests/test_faults.c once the bug is fixed (docs/TESTING.md).
# The table (also written to FUZZ_BUILD_DIR/summary.md) gives the seconds each target took and
# libFuzzer's final numbers: `cov` (covered code edges) and `ft` (features) of its DONE line,
# runs and exec/s from -print_final_stats, and the corpus size at the end.
set -u
corpus_root="" max_runs=-1
while [ $# -gt 0 ]; do
    case $1 in
    --corpus) corpus_root=$2; shift 2 ;;
    --runs) max_runs=$2; shift 2 ;;
    *) break ;;
    esac
done
[ $# -ge 3 ] || { echo "usage: $0 [--corpus DIR] [--runs N] FUZZ_BUILD_DIR SECONDS TARGET..." >&2; exit 2; }
build=$1 secs=$2
shift 2
here=$(dirname "$0")
scratch=$(mktemp -d "${TMPDIR:-/tmp}/loralab-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$scratch"' EXIT
trap 'exit 130' INT TERM

entry_of() {
    case $1 in
    safetensors) echo "st_parse" ;;
    tokenizer) echo "tok_parse_json" ;;
    config) echo "config_load_text + sweep_expand" ;;
    jsonl) echo "data_parse_jsonl" ;;
    adapter_config) echo "adapter_config_parse (+ adapter_create)" ;;
    report) echo "report_write on a fuzzed database" ;;
    yaml_run) echo "config_load_text + sweep_expand + preflight + slurm_emit" ;;
    *) echo "LLVMFuzzerTestOneInput" ;;
    esac
}

seeds_of() {
    case $1 in
    yaml_run) echo config ;;
    *) echo "$1" ;;
    esac
}

maxlen_of() {
    case $1 in
    tokenizer) echo 65536 ;;
    adapter_config) echo 8192 ;;
    *) echo 4096 ;;
    esac
}

summary=$build/summary.md
{
    echo "| target | entry point | seconds | runs | exec/s | cov | ft | corpus | crashes |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} >"$summary"
failed=0
for t in "$@"; do
    bin=$build/fuzz_$t
    [ -x "$bin" ] || { echo "run.sh: $bin is missing (make fuzz builds it)" >&2; exit 2; }
    reg=$here/regressions/$t
    if [ -d "$reg" ] && [ -n "$(ls -A "$reg" 2>/dev/null)" ]; then
        if ! "$bin" "$reg"/* >"$scratch/$t.replay.log" 2>&1; then
            echo "run.sh: $t: a saved regression input crashes again:" >&2
            tail -n 30 "$scratch/$t.replay.log" >&2
            failed=1
        fi
    fi
    seeds=$here/$(seeds_of "$t")
    mkdir -p "$scratch/$t.art"
    if [ -n "$corpus_root" ]; then
        work=$corpus_root/$t
        mkdir -p "$work"
        before=$(find "$work" -type f | wc -l | tr -d ' ')
        echo "fuzz_$t: $secs s (or $max_runs runs) on $before kept inputs in $work, plus the seeds" >&2
    else
        work=$scratch/$t
        mkdir -p "$work"
        [ -d "$seeds" ] && cp "$seeds"/* "$work"/ 2>/dev/null
        echo "fuzz_$t: $secs s on $(find "$work" -type f | wc -l | tr -d ' ') seeds" >&2
    fi
    extra=""
    [ -n "$corpus_root" ] && [ -d "$seeds" ] && extra=$seeds
    dict=""
    [ -f "$seeds.dict" ] && dict="-dict=$seeds.dict"
    t0=$(date +%s)
    # shellcheck disable=SC2086 # dict and extra are one optional word each
    "$bin" -max_total_time="$secs" -runs="$max_runs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -max_len="$(maxlen_of "$t")" $dict -artifact_prefix="$scratch/$t.art/" "$work" $extra \
        >"$scratch/$t.log" 2>&1
    rc=$?
    took=$(($(date +%s) - t0))
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$scratch/$t.log" | tail -n 1)
    [ -n "$done_line" ] || done_line=$(grep -E '^#[0-9]+' "$scratch/$t.log" | tail -n 1)
    cov=$(printf '%s\n' "$done_line" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(printf '%s\n' "$done_line" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    corp=$(printf '%s\n' "$done_line" | sed -n 's/.*corp: \([0-9]*\)\/.*/\1/p')
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log")
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$scratch/$t.log")
    crashes=$(find "$scratch/$t.art" -type f | wc -l | tr -d ' ')
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        failed=1
        mkdir -p "$build/crashes/$t"
        cp "$scratch/$t.art"/* "$build/crashes/$t"/ 2>/dev/null
        cp "$scratch/$t.log" "$build/crashes/$t/fuzz.log"
        [ "$crashes" -ne 0 ] || crashes="exit $rc"
        echo "run.sh: fuzz_$t found a problem (inputs and log in $build/crashes/$t/):" >&2
        grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$scratch/$t.log" | head -n 12 >&2
    fi
    # shellcheck disable=SC2016 # the backquotes are Markdown
    printf '| %s | `%s` | %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$(entry_of "$t")" "$took" "${runs:-?}" \
        "${eps:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes" >>"$summary"
done
echo
cat "$summary"
echo "(cov: code edges covered; ft: libFuzzer features; corpus: inputs kept; one thread each)"
exit $failed
