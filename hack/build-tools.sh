#!/usr/bin/env bash
# Builds the pinned tools weft needs into bin/ from the Go module proxy, each
# only when the pinned version is not there yet. Usage:
#   hack/build-tools.sh [kube-apiserver|kube-controller-manager|kubectl|etcd|helm|controller-gen|golangci-lint|logcheck|prometheus|promtool|otelcol|benchstat|all]...
# Binaries land in bin/k8s/<version>/ (the KUBEBUILDER_ASSETS directory for
# envtest) and bin/ (helm, controller-gen, prometheus, promtool). Builds run one at a time: the
# machines this runs on have two cores.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/hack/tools"

K8S_VERSION=v1.37.2
K8S_MAJOR=1
K8S_MINOR=37
# pinned <module> <go.mod>: the version a tools module requires.
pinned() {
	awk -v m="$1" '{for (i = 1; i < NF; i++) if ($i == m) {print $(i + 1); exit}}' "$2"
}
ETCD_VERSION=$(pinned go.etcd.io/etcd/server/v3 "$tools/etcd/go.mod")
HELM_VERSION=$(pinned helm.sh/helm/v3 "$tools/helm/go.mod")
GEN_VERSION=$(pinned sigs.k8s.io/controller-tools "$tools/gen/go.mod")
PERF_VERSION=$(pinned golang.org/x/perf "$tools/perf/go.mod")
LINT_VERSION=$(pinned github.com/golangci/golangci-lint/v2 "$tools/lint/go.mod")
LOGCHECK_VERSION=$(pinned sigs.k8s.io/logtools "$tools/lint/go.mod")
OTELCOL_VERSION=$(pinned go.opentelemetry.io/collector/otelcol "$tools/otelcol/go.mod")
# The collector's components are weft's choice (hack/tools/otelcol): its
# binary is named by its sources too, so that a changed set is rebuilt.
OTELCOL_BUILD=$OTELCOL_VERSION-$(cat "$tools/otelcol/go.mod" "$tools/otelcol/main.go" | sha256sum | cut -c1-8)
PROM_VERSION=$(pinned github.com/prometheus/prometheus "$tools/prometheus/go.mod")
# The module v0.3MM.P is Prometheus 3.MM.P.
PROM_RELEASE=$(echo "$PROM_VERSION" | awk -F. '{printf "3.%d.%s", substr($2, 2) + 0, $3}')
# Prometheus and promtool without their service-discovery plugins (the test
# scrapes a static target): the build tag remove_all_sd keeps the file and
# HTTP discoveries only, and saves most of the cloud SDKs' compilation.
PROM_TAGS=remove_all_sd

assets="$root/bin/k8s/$K8S_VERSION"
mkdir -p "$assets"

# build <module dir> <output> <package> [ldflags] [tags]
build() {
	local dir=$1 out=$2 pkg=$3 ldflags=${4:-} tags=${5:-}
	if [[ -x "$out" ]]; then
		return 0
	fi
	echo ">> building $(basename "$out") ($pkg)" >&2
	local start=$SECONDS
	(cd "$dir" && CGO_ENABLED=0 go build -mod=mod -trimpath -tags "$tags" -o "$out.tmp" -ldflags "-s -w $ldflags" "$pkg")
	mv "$out.tmp" "$out"
	echo ">> built $(basename "$out") in $((SECONDS - start))s" >&2
}

k8s_ldflags() {
	local pkg=$1
	echo "-X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$K8S_MAJOR -X $pkg.gitMinor=$K8S_MINOR -X $pkg.gitTreeState=clean"
}

one() {
	case $1 in
	kube-apiserver | kube-controller-manager)
		build "$tools/kube" "$assets/$1" "k8s.io/kubernetes/cmd/$1" "$(k8s_ldflags k8s.io/component-base/version)"
		;;
	kubectl)
		build "$tools/kube" "$assets/kubectl" k8s.io/kubernetes/cmd/kubectl \
			"$(k8s_ldflags k8s.io/component-base/version) $(k8s_ldflags k8s.io/client-go/pkg/version)"
		;;
	etcd)
		build "$tools/etcd" "$assets/etcd" go.etcd.io/etcd/server/v3 \
			"-X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}"
		;;
	helm)
		build "$tools/helm" "$root/bin/helm-$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
			"-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
		ln -sf "helm-$HELM_VERSION" "$root/bin/helm"
		;;
	controller-gen)
		build "$tools/gen" "$root/bin/controller-gen-$GEN_VERSION" sigs.k8s.io/controller-tools/cmd/controller-gen \
			"-X sigs.k8s.io/controller-tools/pkg/version.version=$GEN_VERSION"
		ln -sf "controller-gen-$GEN_VERSION" "$root/bin/controller-gen"
		;;
	golangci-lint)
		build "$tools/lint" "$root/bin/golangci-lint-$LINT_VERSION" github.com/golangci/golangci-lint/v2/cmd/golangci-lint \
			"-X main.version=${LINT_VERSION#v} -X main.commit=none -X main.date=unknown"
		ln -sf "golangci-lint-$LINT_VERSION" "$root/bin/golangci-lint"
		;;
	logcheck)
		build "$tools/lint" "$root/bin/logcheck-$LOGCHECK_VERSION" sigs.k8s.io/logtools/logcheck
		ln -sf "logcheck-$LOGCHECK_VERSION" "$root/bin/logcheck"
		;;
	prometheus | promtool)
		build "$tools/prometheus" "$root/bin/$1-$PROM_RELEASE" "github.com/prometheus/prometheus/cmd/$1" \
			"-X github.com/prometheus/common/version.Version=$PROM_RELEASE -X github.com/prometheus/common/version.Branch=HEAD -X github.com/prometheus/common/version.Revision=$PROM_VERSION" \
			"$PROM_TAGS"
		ln -sf "$1-$PROM_RELEASE" "$root/bin/$1"
		;;
	benchstat)
		# Only for make bench-compare; make test does not need it.
		build "$tools/perf" "$root/bin/benchstat-$PERF_VERSION" golang.org/x/perf/cmd/benchstat
		ln -sf "benchstat-$PERF_VERSION" "$root/bin/benchstat"
		;;
	otelcol)
		# An OpenTelemetry collector of the fewest components the
		# observability tests need (hack/tools/otelcol/main.go).
		build "$tools/otelcol" "$root/bin/otelcol-$OTELCOL_BUILD" . "-X main.version=$OTELCOL_VERSION"
		ln -sf "otelcol-$OTELCOL_BUILD" "$root/bin/otelcol"
		;;
	assets)
		one etcd
		one kube-apiserver
		one kubectl
		one kube-controller-manager
		;;
	all)
		one controller-gen
		one assets
		one helm
		one golangci-lint
		one logcheck
		one prometheus
		one promtool
		one otelcol
		"$tools/certmanager/build.sh"
		;;
	*)
		echo "unknown tool $1" >&2
		return 2
		;;
	esac
}

[[ $# -gt 0 ]] || set -- all
for t in "$@"; do one "$t"; done
