#!/usr/bin/env bash
# Builds cert-manager's controllers (this module's main package: the
# controllers of cert-manager's pkg/controller registry, pinned by go.mod)
# into bin/cert-manager-controller-<version>, linked as
# bin/cert-manager-controller, only when that version is not there yet.
# hack/build-tools.sh all runs it (make tools).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
version=$(awk '$1 == "github.com/cert-manager/cert-manager" {print $2; exit} $1 == "require" && $2 == "github.com/cert-manager/cert-manager" {print $3; exit}' "$here/go.mod")
out="$root/bin/cert-manager-controller-$version"
mkdir -p "$root/bin"
if [[ ! -x "$out" ]]; then
	echo ">> building cert-manager-controller ($version)" >&2
	start=$SECONDS
	(cd "$here" && CGO_ENABLED=0 go build -mod=mod -trimpath -o "$out.tmp" -ldflags "-s -w -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$version" .)
	mv "$out.tmp" "$out"
	echo ">> built cert-manager-controller in $((SECONDS - start))s" >&2
fi
ln -sf "cert-manager-controller-$version" "$root/bin/cert-manager-controller"
