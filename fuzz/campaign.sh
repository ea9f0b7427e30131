#!/usr/bin/env bash
# The long fuzzing campaign: every cargo-fuzz target (or the ones named) for
# --seconds each, growing fuzz/corpus/<target>, minimising it afterwards
# (`cargo fuzz cmin`), and keeping each crash's reproducer under
# fuzz/artifacts/<target>/. Prints one line per target as it goes and a
# table at the end (also written to --out as TSV).
#
#   fuzz/campaign.sh                       # all targets, 600 s each
#   fuzz/campaign.sh --seconds 60 overlay_core_node ipsec_sa_handshake
#   fuzz/campaign.sh --jobs 2              # libFuzzer workers per target
#
# Needs cargo-fuzz and a nightly-capable toolchain (RUSTC_BOOTSTRAP=1 is set,
# as .ci/run does). CI runs each target for a few seconds only; this is the
# campaign #17 asks for. Commit the minimised corpora and any reproducers.
set -euo pipefail
cd "$(dirname "$0")"

seconds=600
jobs=1
out=""
targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
export RUSTC_BOOTSTRAP=1
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo fuzz list)
fi
out=${out:-$(mktemp -d)/campaign.tsv}
echo "building ${#targets[@]} targets" >&2
cargo fuzz build >/dev/null

printf 'target\tseconds\texecutions\texec_per_s\tcorpus_before\tcorpus_after\tcrashes\tpeak_rss_mb\n' >"$out"
total_exec=0
total_crashes=0
i=0
for target in "${targets[@]}"; do
  i=$((i + 1))
  corpus=corpus/$target
  artifacts=artifacts/$target
  mkdir -p "$corpus" "$artifacts"
  before=$(find "$corpus" -type f | wc -l)
  crashes_before=$(find "$artifacts" -type f | wc -l)
  log=$(mktemp)
  echo "[$i/${#targets[@]}] $target: ${seconds}s, $jobs job(s), corpus $before" >&2
  start=$(date +%s)
  # A crash ends the run early; the reproducer lands in $artifacts and the
  # campaign goes on with the next target.
  set +e
  cargo fuzz run "$target" "$corpus" -- \
    -max_total_time="$seconds" -print_final_stats=1 -jobs="$jobs" -workers="$jobs" \
    -artifact_prefix="$artifacts/" >"$log" 2>&1
  set -e
  elapsed=$(($(date +%s) - start))
  # With -jobs, libFuzzer writes each worker's stats to fuzz-N.log.
  stats=$(cat "$log" fuzz-*.log 2>/dev/null || true)
  rm -f fuzz-*.log
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' <<<"$stats" | awk '{s+=$2} END {print s+0}')
  rss=$(grep -o 'stat::peak_rss_mb: [0-9]*' <<<"$stats" | awk '{if ($2>m) m=$2} END {print m+0}')
  cargo fuzz cmin "$target" "$corpus" >/dev/null 2>&1 || echo "  cmin failed for $target" >&2
  after=$(find "$corpus" -type f | wc -l)
  crashes=$(($(find "$artifacts" -type f | wc -l) - crashes_before))
  rate=$((elapsed > 0 ? execs / elapsed : 0))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$elapsed" "$execs" "$rate" \
    "$before" "$after" "$crashes" "$rss" >>"$out"
  echo "  $execs executions ($rate/s), corpus $before -> $after, $crashes new crash(es), peak RSS ${rss} MB" >&2
  if ((crashes > 0)); then
    echo "  reproducers:" >&2
    find "$artifacts" -type f -newer "$log" | sed 's/^/    /' >&2
  fi
  rm -f "$log"
  total_exec=$((total_exec + execs))
  total_crashes=$((total_crashes + crashes))
done

echo
column -t -s $'\t' "$out"
echo
echo "total: ${#targets[@]} targets, $total_exec executions, $total_crashes crash(es); table in $out"
((total_crashes == 0))
