#!/usr/bin/env bash
# Runs siprelay's cargo-fuzz targets (fuzz/fuzz_targets/) on their corpora.
#
#   scripts/fuzz.sh list                 the targets
#   scripts/fuzz.sh TARGET SECONDS       one target for SECONDS
#   scripts/fuzz.sh all SECONDS          each target in turn, SECONDS each
#
# Needs the nightly toolchain (`rustup toolchain install nightly`); installs
# cargo-fuzz if it is missing. New corpus entries go to fuzz/corpus/TARGET;
# a crash stops the run, is written to fuzz/artifacts/TARGET/ and makes the
# script exit non-zero. Extra libFuzzer flags may be given in FUZZ_ARGS
# (e.g. FUZZ_ARGS="-runs=10000000 -jobs=1"). Shrink a corpus after long runs
# with `cargo +nightly fuzz cmin TARGET -- -max_len=N`.
set -euo pipefail

cd "$(dirname "$0")/.."

targets() {
    sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^siprelay-fuzz$'
}

# Longest input each target is given: most frames and messages are small;
# WAV files and config files get room to be real ones.
max_len() {
    case "$1" in
        wav | config) echo 65536 ;;
        sip_validate) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

need_tools() {
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        echo "fuzz.sh: the nightly Rust toolchain is needed (cargo-fuzz uses -Zsanitizer);" >&2
        echo "         install it with: rustup toolchain install nightly" >&2
        exit 1
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "fuzz.sh: installing cargo-fuzz" >&2
        cargo install --locked cargo-fuzz
    fi
}

run() {
    local target=$1 seconds=$2
    targets | grep -qx "$target" || { echo "fuzz.sh: no target $target (see: $0 list)" >&2; exit 2; }
    mkdir -p "fuzz/corpus/$target"
    echo "== $target for ${seconds}s" >&2
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=5 \
        -max_len="$(max_len "$target")" -print_final_stats=1 ${FUZZ_ARGS:-}
}

case "${1:-}" in
    list) targets ;;
    all)
        [[ $# -eq 2 && $2 =~ ^[0-9]+$ ]] || usage
        need_tools
        for t in $(targets); do run "$t" "$2"; done
        ;;
    "" | -h | --help) usage ;;
    *)
        [[ $# -eq 2 && $2 =~ ^[0-9]+$ ]] || usage
        need_tools
        run "$1" "$2"
        ;;
esac
