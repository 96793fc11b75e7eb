#!/usr/bin/env bash
# Check through the production chain against a bare gRPC server, side by
# side, with ghz at 50 concurrent callers on one connection (see
# BenchmarkCheckAgainstBareGRPC and docs/benchmarks.md, "Check against
# bare gRPC"). Usage, from anywhere in the repository:
#
#   tools/load/check.sh [CALLS_PER_RUN]
#
# CALLS_PER_RUN (default 50000) is how many Checks each of the ten ghz
# runs sends; each CheckBatch run sends a twentieth as many calls. The
# script installs the pinned ghz into .bin when it is missing, prints the
# machine's load before and after, and the benchmark's figures: the two
# sides' Check and CheckBatch rates and p99s and their ratios.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
calls=${1:-50000}
if [[ -z ${LETHE_GHZ:-} && ! -x $root/.bin/ghz ]]; then
  make -C "$root" ghz
fi
export LETHE_GHZ=${LETHE_GHZ:-$root/.bin/ghz}
echo "load before: $(uptime)"
cd "$root/tools"
go test -run '^$' -bench 'CheckAgainstBareGRPC$' -benchtime "${calls}x" -count 1 -timeout 30m -v \
  ./lethe/internal/flows/consent/
echo "load after: $(uptime)"
