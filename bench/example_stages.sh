#!/usr/bin/env bash
# Wall time per stage and peak RSS of the BIDS-App on the bundled example (2 participants,
# 7 runs, tiny models), the way a user runs it.
#
# usage: bench/example_stages.sh [NPROCS]
#   cold:  fresh output and work folders (every feature extracted)
#   warm:  fresh output, the cold run's feature cache (what a second pipeline or an
#          array task that shares --work-dir sees)
#   rerun: the cold run's output again (every run already up to date; resume check only)
# The stage times are the app's own "stage time:" log lines; peak RSS is GNU time's %M.
set -euo pipefail
cd "$(dirname "$0")/.."
NPROCS=${1:-$(nproc)}
scripts/make-example.sh >/dev/null
cargo build --release --quiet --bin tribe-bids
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { # name out work
  /usr/bin/time -f "TIME %e %M" target/release/tribe-bids examples/bids "$2" participant \
    --models-dir examples/models -w "$3" --nprocs "$NPROCS" > "$tmp/$1.log" 2>&1
  wall=$(awk '/^TIME/{print $2}' "$tmp/$1.log"); rss=$(awk '/^TIME/{print $3}' "$tmp/$1.log")
  printf '%-6s wall %6.2f s   peak RSS %5d MiB\n' "$1" "$wall" $((rss / 1024))
  sed -n 's/.*stage time: \(.*\): \([0-9.]*\) s/\1\t\2/p' "$tmp/$1.log" | sed 's/\x1b\[[0-9;]*m//g' |
    awk -F'\t' '{printf "         %-26s %6.2f s\n", $1, $2}'
}
echo "tribe-bids on examples/bids, --nprocs $NPROCS, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
run cold "$tmp/out1" "$tmp/work"
run warm "$tmp/out2" "$tmp/work"
run rerun "$tmp/out1" "$tmp/work"
