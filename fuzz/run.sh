#!/bin/sh
# Runs the fuzz targets named (default: all of them) for FUZZ_SECONDS each (default 60), one
# after another, each from its committed seeds plus the corpus earlier runs grew. Stops at the
# first finding; libFuzzer saves the input under artifacts/<target>/. See README.md.
set -eu
seconds=${FUZZ_SECONDS:-60}
cd "$(dirname "$0")"
targets=${*:-$(cargo +nightly fuzz list)}
for target in $targets; do
    seeds="seeds/$target"
    options=""
    case $target in
        # The policy loader's own test files: every valid example, every kind of mistake.
        policy_yaml) seeds="../api/tests/valid ../api/tests/broken" ;;
        # Longer than the 16 KiB request line detection waits for at most, and let inputs
        # grow to that length at once.
        detect) options="-max_len=20000 -len_control=0" ;;
    esac
    mkdir -p "corpus/$target"
    echo "== fuzz $target for ${seconds}s"
    # A single input taking 10 s is a finding too (the parsers' budgets should bound it).
    # shellcheck disable=SC2086 # $seeds and $options are lists.
    cargo +nightly fuzz run "$target" "corpus/$target" $seeds -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 $options
done
