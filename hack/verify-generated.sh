#!/usr/bin/env bash
# Fails when 'make generate manifests' or the golden tests' -update would
# change any file, or when a Go file is not gofmt-formatted. It compares the tree before and after
# generating, so it works on a clean clone (CI) and on uncommitted work.
set -euo pipefail
cd "$(dirname "$0")/.."

snapshot() {
	find api config -type f \( -name '*.go' -o -name '*.yaml' \) -print0 | sort -z | xargs -0 sha256sum
}
before=$(snapshot)
make --no-print-directory generate manifests >/dev/null
after=$(snapshot)
if [[ "$before" != "$after" ]]; then
	echo "'make generate manifests' changed generated files; commit the result:" >&2
	diff <(echo "$before") <(echo "$after") >&2 || true
	exit 1
fi

# Golden outputs: regenerate every one (-update also deletes the outputs a
# case no longer produces) and fail when that changed, added or deleted a
# file. The injector's goldens need the API server (KUBEBUILDER_ASSETS).
goldens() {
	find . -path ./bin -prune -o -path '*/testdata/*' -type f -print0 | sort -z | xargs -0 sha256sum
}
before=$(goldens)
go test -count=1 -run 'Golden|TestInjectionThroughTheAPIServer|TestPodCertificateDelivery' ./internal/xds/translate ./internal/redirect ./internal/inject -update >/dev/null
after=$(goldens)
if [[ "$before" != "$after" ]]; then
	echo "the golden files are stale; 'go test ./... -update' changed them (commit the result):" >&2
	diff <(echo "$before") <(echo "$after") >&2 || true
	exit 1
fi

unformatted=$(gofmt -l $(git ls-files --cached --others --exclude-standard '*.go'))
if [[ -n "$unformatted" ]]; then
	echo "these files need gofmt (make fmt):" >&2
	echo "$unformatted" >&2
	exit 1
fi
echo "generated files and formatting are up to date"
