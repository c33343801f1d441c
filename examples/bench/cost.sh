#!/usr/bin/env bash
# What a fresh sandbox costs against a bare spawn of the same interpreter,
# in one run, as ratios: CPU per run (bare, bubblewrap, PRIMS with its
# zygote (the default), with the warm pool (--zygote=false) and cold
# (--warm 0)), what a new session costs, print(1) throughput at
# concurrency 4 over `prims serve`, the run_code round trip, and the
# latency of `prims run -c`. Installs Debian's bubblewrap when bwrap is
# missing (as root, or through sudo), so that it can be measured alongside.
#
#   examples/bench/cost.sh            # 30 iterations each
#   N=100 examples/bench/cost.sh
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
N=${N:-30}

if ! command -v bwrap >/dev/null; then
	sudo=
	[ "$(id -u)" = 0 ] || sudo=sudo
	if command -v apt-get >/dev/null; then
		$sudo apt-get install -y -qq bubblewrap >/dev/null || echo "cost.sh: could not install bubblewrap; measuring without it" >&2
	else
		echo "cost.sh: no apt-get; install bubblewrap to measure it" >&2
	fi
fi

cd "$repo"
go test -run '^$' -bench 'CPUPerRun|CPUFirstRun|ServeThroughput|RunCode$|RunCLI' -benchtime "${N}x" .
