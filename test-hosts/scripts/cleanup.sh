# Sourced by the runner scripts: runs a test-hosts runner in the
# background and, when it ends or is killed, removes whatever it left:
# its namespaces (names `w<tag><pid % 100000>x<n>`, see
# `test_hosts::unique_name`), the processes in them, /etc/netns entries
# and scratch files. The runners clean up after themselves; this is for
# SIGINT/SIGTERM, which skip their destructors.
#
#   run_and_clean "$runner" args...    # exits with the runner's status

cleanup_run() {
  local p=$(($1 % 100000)) ns pid
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^w[a-z]+${p}x[0-9]+$"); do
    for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" || true
    rm -rf "/etc/netns/$ns"
  done
  rm -rf /tmp/wow-test-hosts/w*"${p}"x*
}

run_and_clean() {
  "$@" &
  local pid=$! rc=0
  # `|| true`: the callers run under `set -e`, and wait returns the kill.
  trap "kill -9 $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; cleanup_run $pid; exit 130" INT TERM
  wait $pid || rc=$?
  cleanup_run $pid
  exit $rc
}
