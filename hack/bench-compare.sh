#!/usr/bin/env bash
# Compares the translation, model and endpoint-change benchmarks at a base
# revision with the working tree, on this machine, in one run: both test
# binaries are built first, then run in turn COUNT times, so that the
# machine's drift over the run falls on both alike. Usage:
#   hack/bench-compare.sh [BASE [COUNT]]    (defaults HEAD~1 and 6)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
base=${1:-HEAD~1}
count=${2:-6}
out="$root/bin/bench"
rm -rf "$out" && mkdir -p "$out"
git -C "$root" worktree add -f --detach "$out/tree" "$base" >/dev/null
trap 'git -C "$root" worktree remove --force "$out/tree" 2>/dev/null || true' EXIT
for v in base new; do
	dir=$root
	[[ $v == base ]] && dir=$out/tree
	(cd "$dir" && go test -c -o "$out/$v-translate.test" ./internal/xds/translate && go test -c -o "$out/$v-server.test" ./internal/xds/server)
done
for ((i = 1; i <= count; i++)); do
	for v in base new; do
		(cd "$root/internal/xds/translate" &&
			"$out/$v-translate.test" -test.run '^$' -test.bench 'BenchmarkTranslate$/./services=1000$' -test.benchmem &&
			"$out/$v-translate.test" -test.run '^$' -test.bench 'Benchmark(TranslateChange|ModelBuild)/services=1000$' -test.benchmem) >>"$out/$v.txt"
		(cd "$root/internal/xds/server" && "$out/$v-server.test" -test.run '^$' -test.bench 'EndpointChange' -test.benchmem) >>"$out/$v.txt"
	done
done
"$root/bin/benchstat" -filter '.unit:(sec/op OR allocs/op)' base="$out/base.txt" new="$out/new.txt"
