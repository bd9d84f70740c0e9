#!/usr/bin/env bash
# Runs .ci/run as CI runs it on a new machine: in a fresh clone of a
# commit, with GOCACHE, GOMODCACHE and golangci-lint's cache pointed at new
# empty directories and no bin/, and reports the time of each phase and of the slowest test
# packages. Usage:
#   hack/ci-cold.sh [-r REV] [-b] [-k] [-o DIR]
#     -r REV  the commit to clone (default HEAD; uncommitted work is not run)
#     -b      keep the other core busy meanwhile: a loop of one-core builds
#             of the standard library (its own build cache), stopped when
#             the run ends and after 90 minutes at the latest
#     -k      keep the clone and the caches (default: removed afterwards)
#     -o DIR  where the run's directory goes (default: a new one in /tmp)
# The log is DIR/ci.log, the summary DIR/summary.txt; the exit code is
# .ci/run's.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
rev=HEAD busy=false keep=false out=
while getopts "r:bko:" opt; do
	case $opt in
	r) rev=$OPTARG ;;
	b) busy=true ;;
	k) keep=true ;;
	o) out=$OPTARG ;;
	*) sed -n '2,15p' "$0" >&2; exit 2 ;;
	esac
done
commit=$(git -C "$root" rev-parse --verify "$rev^{commit}")
if [[ -z "$out" ]]; then
	out=$(mktemp -d /tmp/weft-ci-cold.XXXXXX)
fi
mkdir -p "$out"
clone="$out/weft"
log="$out/ci.log"
summary="$out/summary.txt"

busy_pid=
cleanup() {
	if [[ -n "$busy_pid" ]]; then
		kill -- -"$busy_pid" 2>/dev/null || kill "$busy_pid" 2>/dev/null || true
		wait "$busy_pid" 2>/dev/null || true
	fi
	if ! $keep; then
		# The module cache is read-only by design.
		chmod -R u+w "$out/gomodcache" "$out/busycache" 2>/dev/null || true
		rm -rf "$clone" "$out/gocache" "$out/gomodcache" "$out/busycache"
	fi
}
trap cleanup EXIT

git clone --quiet --no-local "$root" "$clone"
git -C "$clone" checkout --quiet --detach "$commit"
# CI's clone has the steering repository's shared/ beside it.
if [[ -d "$root/../shared" && ! -e "$out/shared" ]]; then
	cp -r "$root/../shared" "$out/shared"
fi

export GOCACHE="$out/gocache" GOMODCACHE="$out/gomodcache" GOLANGCI_LINT_CACHE="$out/lintcache" CI=true
unset GOFLAGS KUBEBUILDER_ASSETS WEFT_TEST_BINARIES
mkdir -p "$GOCACHE" "$GOMODCACHE"

if $busy; then
	# One core's worth of compiling, bounded in time: -p 1 and -c=1 keep
	# the go command and the compiler to one job at a time.
	set -m
	(
		deadline=$((SECONDS + 5400))
		while ((SECONDS < deadline)); do
			GOCACHE="$out/busycache" go build -a -p 1 -gcflags=all=-c=1 -o /dev/null std >/dev/null 2>&1 || true
		done
	) &
	busy_pid=$!
	set +m
fi

echo "cold CI run of $commit in $clone (busy core: $busy); log: $log" >&2
start=$(date +%s)
set +e
(cd "$clone" && bash .ci/run </dev/null) >"$log" 2>&1
rc=$?
set -e
total=$(($(date +%s) - start))

{
	echo "commit:  $commit"
	echo "ended:   $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; other core busy: $busy"
	echo "result:  exit $rc in $total s"
	echo
	echo "phases (s):"
	sed -n 's/^==> phase \(.*\): \([0-9]*\) s$/  \1 \2/p' "$log"
	echo
	echo "tools built (s):"
	sed -n 's/^>> built \(.*\) in \([0-9]*\)s$/  \1 \2/p' "$log"
	echo
	echo "slowest test packages (s):"
	awk '$1 == "ok" || $1 == "FAIL" {t = $NF; if (t ~ /s$/) {sub(/s$/, "", t); printf "  %-6s %-60s %s\n", $1, $2, t}}' "$log" |
		sort -k3 -n -r | head -12
	if ((rc != 0)); then
		echo
		echo "failures:"
		grep -E '^(--- FAIL|FAIL|panic:)' "$log" | head -40 || true
	fi
} >"$summary"
cat "$summary"
exit "$rc"
