#!/usr/bin/env bash
# `make fuzz`: runs every fuzz target for FUZZ_SECONDS with libFuzzer via
# cargo-fuzz and prints a summary table.
#
# Stable toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer=address,
# -Cpasses=sancov-module...), which stable rustc accepts with
# RUSTC_BOOTSTRAP=1; no nightly toolchain is needed.
#
# The seed corpus fuzz/corpus/<target>/ is only read; what libFuzzer finds is
# kept in fuzz/target/corpus/<target>/ (ignored by git) and reused by the
# next run. Crash inputs land in fuzz/artifacts/<target>/: copy one to
# fuzz/regressions/<target>/ so `make test` replays it.
set -uo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-request_body token jwks config list_answer condition dpop_proof}
export RUSTC_BOOTSTRAP=1
LOGS=fuzz/target/logs
mkdir -p "$LOGS"

echo "== building the fuzz targets (cargo fuzz, RUSTC_BOOTSTRAP=1, $(rustc --version))"
cargo fuzz build --fuzz-dir fuzz || exit 1

failed=()
for t in $TARGETS; do
  mkdir -p "fuzz/target/corpus/$t" "fuzz/artifacts/$t"
  echo "== fuzzing $t for ${SECONDS_EACH}s"
  cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/target/corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -max_len=8192 -print_final_stats=1 \
    >"$LOGS/$t.log" 2>&1
  rc=$?
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^==[0-9]+==ERROR|panicked at|^artifact_prefix|Test unit written' "$LOGS/$t.log" | tail -5
  [ $rc -eq 0 ] || failed+=("$t")
done

echo
echo "== fuzz summary (${SECONDS_EACH}s per target; logs in $LOGS/)"
printf '%-13s %12s %9s %7s %7s %14s %8s %s\n' target execs exec/s cov ft corpus new result
for t in $TARGETS; do
  log="$LOGS/$t.log"
  last=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -1)
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  execs=$(stat number_of_executed_units)
  [ -n "$execs" ] || execs=$(sed -E 's/^#([0-9]+).*/\1/' <<<"$last")
  field() { grep -oE "$1: [^ ]+" <<<"$last" | awk '{print $2}'; }
  result=ok
  [[ " ${failed[*]} " == *" $t "* ]] && result="FAILED ($(ls fuzz/artifacts/$t 2>/dev/null | head -1))"
  printf '%-13s %12s %9s %7s %7s %14s %8s %s\n' "$t" "${execs:--}" "$(stat average_exec_per_sec)" \
    "$(field cov)" "$(field ft)" "$(field corp)" "$(stat new_units_added)" "$result"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found failures in: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
