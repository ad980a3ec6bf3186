#!/bin/sh
# run.sh: runs libFuzzer targets for a fixed time each and prints a summary table (`make fuzz`).
#
#   tests/fuzz/run.sh FUZZ_BUILD_DIR SECONDS TARGET...     (TARGET: safetensors, tokenizer, ...)
#
# For each target: the saved crash inputs of tests/fuzz/regressions/TARGET/ are replayed first
# (each must pass), then FUZZ_BUILD_DIR/fuzz_TARGET runs for SECONDS on a scratch copy of its seed
# corpus tests/fuzz/TARGET/ (so the committed corpus never grows), with tests/fuzz/TARGET.dict
# when there is one. One target runs at a time, single-threaded: the machine is shared.
# A crash, leak, timeout or out-of-memory input is copied to FUZZ_BUILD_DIR/crashes/TARGET/ and
# the script exits 1 after the table; such an input belongs in tests/fuzz/regressions/TARGET/
# with a test in tests/test_faults.c once the bug is fixed (docs/TESTING.md).
# The table (also written to FUZZ_BUILD_DIR/summary.md) takes libFuzzer's final numbers: `cov`
# (covered code edges) and `ft` (features) of its DONE line, exec/s from -print_final_stats.
set -u
[ $# -ge 3 ] || { echo "usage: $0 FUZZ_BUILD_DIR SECONDS TARGET..." >&2; exit 2; }
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
    *) echo "LLVMFuzzerTestOneInput" ;;
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
    mkdir -p "$scratch/$t" "$scratch/$t.art"
    [ -d "$here/$t" ] && cp "$here/$t"/* "$scratch/$t"/ 2>/dev/null
    dict=""
    [ -f "$here/$t.dict" ] && dict="-dict=$here/$t.dict"
    echo "fuzz_$t: $secs s on $(find "$scratch/$t" -type f | wc -l | tr -d ' ') seeds" >&2
    # shellcheck disable=SC2086 # dict is one optional word
    "$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -max_len="$(maxlen_of "$t")" $dict -artifact_prefix="$scratch/$t.art/" "$scratch/$t" \
        >"$scratch/$t.log" 2>&1
    rc=$?
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
    printf '| %s | `%s` | %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$(entry_of "$t")" "$secs" "${runs:-?}" \
        "${eps:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes" >>"$summary"
done
echo
cat "$summary"
echo "(cov: code edges covered; ft: libFuzzer features; corpus: inputs kept; one thread each)"
exit $failed
