#!/usr/bin/env bash
# Flake hunt: runs the whole test suite (`cargo test --workspace`) RUNS times
# in a row while a parallel `cargo build` of the workspace, in a target
# directory of its own, loads the machine; prints each run's pass/fail and at
# the end every test that failed at least once, with how often.
#
#   scripts/flake-hunt.sh [RUNS]      (default 10)
#
# Run as root with WOW_REQUIRE_ALL=1 so that nothing skips (an #[ignore]d
# test then counts as a failure too). LOAD=0 runs
# without the parallel build. Logs of every run are kept in LOG_DIR (default
# a fresh directory under /tmp, printed at the start). Exits non-zero when a
# run failed.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-10}
log_dir=${LOG_DIR:-$(mktemp -d /tmp/wow-flake-hunt.XXXXXX)}
mkdir -p "$log_dir"
load_dir=$(mktemp -d /tmp/wow-flake-load.XXXXXX)
echo "flake hunt: $runs runs of cargo test --workspace; logs in $log_dir"
echo "WOW_REQUIRE_ALL=${WOW_REQUIRE_ALL:-unset} user=$(id -un)"

load_pid=
stop_load() {
  if [[ -n $load_pid ]]; then
    kill -- "-$load_pid" 2>/dev/null
    wait "$load_pid" 2>/dev/null
    load_pid=
  fi
  rm -rf "$load_dir"
}
trap stop_load EXIT
trap 'exit 130' INT TERM

# Build the tests once first, so the runs time the tests, not the build.
echo "building the tests"
if ! cargo test --workspace --no-run --message-format=json >"$log_dir/build.json" 2>"$log_dir/build.log"; then
  tail -n 30 "$log_dir/build.log"
  echo "the tests do not build"
  exit 2
fi
# Test binary file name -> "CRATE-DIR KIND NAME", to name failures.
jq -r 'select(.reason == "compiler-artifact" and .executable != null)
  | "\(.executable | split("/") | last) \(.package_id | sub("#.*"; "") | split("/") | last) \(.target.kind[0]) \(.target.name)"' \
  "$log_dir/build.json" >"$log_dir/binaries"

if [[ ${LOAD:-1} != 0 ]]; then
  # A full debug build of the workspace, over and over from scratch, in its
  # own process group so that it can be stopped as a whole.
  setsid bash -c '
    while true; do
      cargo build --workspace --target-dir "$1" >/dev/null 2>&1
      rm -rf "$1"
    done' load "$load_dir/target" &
  load_pid=$!
  echo "load: cargo build --workspace in $load_dir (process group $load_pid)"
fi

# Under WOW_REQUIRE_ALL=1 an #[ignore]d test is a skip too, so a failure.
strict=0
[[ ${WOW_REQUIRE_ALL:-} == 1 ]] && strict=1
declare -A failed_count=()
failed_runs=0
for ((i = 1; i <= runs; i++)); do
  log="$log_dir/run-$i.log"
  t0=$(date +%s)
  cargo test --workspace --no-fail-fast >"$log" 2>&1
  rc=$?
  secs=$(($(date +%s) - t0))
  # Failed tests as "BINARY::TEST"; a binary that died without naming a
  # test (a crash, a signal) appears by its cargo rerun line.
  mapfile -t failures < <(awk -v strict="$strict" '
    FNR == NR { name[$1] = $2 " " $3 " " $4; next }
    /^ *Running / { exe = $NF; gsub(/[()]/, "", exe); n = split(exe, p, "/"); bin = name[p[n]]; if (bin == "") bin = $2 }
    /^test .* \.\.\. FAILED$/ { sub(/^test /, ""); sub(/ \.\.\. FAILED$/, ""); print bin "::" $0 }
    /^test .* \.\.\. ignored/ && strict { sub(/^test /, ""); sub(/ \.\.\. ignored.*$/, ""); print "ignored " bin "::" $0 }
    /^error: test failed, to rerun pass/ { sub(/.*to rerun pass /, ""); print "binary " $0 }
    /^    `-p .*`$/ { sub(/^ +/, ""); print "binary " $0 }
  ' "$log_dir/binaries" "$log" | sort -u)
  if ((rc == 0 && ${#failures[@]} > 0)); then
    rc=1
  fi
  if ((rc == 0)); then
    echo "run $i: PASS (${secs}s)"
  else
    failed_runs=$((failed_runs + 1))
    echo "run $i: FAIL (${secs}s, exit $rc)"
    if ((${#failures[@]} == 0)); then
      failures=("(no test named; see $log)")
    fi
    for f in "${failures[@]}"; do
      echo "    $f"
      failed_count[$f]=$((${failed_count[$f]:-0} + 1))
    done
  fi
done

echo
echo "summary: $((runs - failed_runs))/$runs runs passed"
if ((${#failed_count[@]})); then
  echo "failed at least once (times failed / $runs runs):"
  for f in "${!failed_count[@]}"; do
    echo "  ${failed_count[$f]}  $f"
  done | sort -rn
fi
((failed_runs == 0))
