# weft's Makefile. Every tool it runs is built from pinned modules under
# hack/tools into bin/ (git-ignored) the first time it is needed.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

K8S_VERSION ?= v1.37.2
BIN := $(CURDIR)/bin
ASSETS := $(BIN)/k8s/$(K8S_VERSION)
CONTROLLER_GEN := $(BIN)/controller-gen
BENCHSTAT := $(BIN)/benchstat
HELM := $(BIN)/helm
GOLANGCI_LINT := $(BIN)/golangci-lint
LOGCHECK := $(BIN)/logcheck
KUBECTL := $(ASSETS)/kubectl
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/weftmesh/weft/internal/version.version=$(VERSION)
# go test flags; CI may add -race or -count.
TEST_FLAGS ?=
# How many test binaries go test runs at once (and how many packages it
# compiles at once): one per core of the 2-core CI machine. The heavy
# packages each start their own kube-apiserver and etcd; more at once makes
# the run no shorter and every wait longer.
TEST_P ?= 2
# The binaries the tests run (weft, the demo), built once before go test.
TEST_BIN := $(BIN)/test

# timed runs a phase and prints how long it took, for hack/ci-cold.sh:
# $(call timed,<phase>,<command>); the command must hold no comma.
define timed
@echo '$(2)'; start=$$(date +%s); $(2); echo "==> phase $(1): $$(( $$(date +%s) - start )) s"
endef

export KUBEBUILDER_ASSETS := $(ASSETS)

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRDs and RBAC under config/ and the chart's CRDs.
	$(CONTROLLER_GEN) rbac:roleName=weft-controller crd:allowDangerousTypes=false paths="./api/...;./controllers/...;./internal/watch/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	$(MAKE) --no-print-directory chart-crds

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate the deepcopy code of the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	$(call timed,vet,go vet ./...)

.PHONY: verify
verify: $(CONTROLLER_GEN) ## Fail when 'make generate manifests' would change files, or gofmt would.
	$(call timed,verify,hack/verify-generated.sh)

.PHONY: lint
lint: $(GOLANGCI_LINT) $(LOGCHECK) ## Lint the code: golangci-lint (.golangci.yml) and logcheck (logr calls), both pinned in hack/tools/lint.
	$(call timed,lint,$(GOLANGCI_LINT) run ./... && $(LOGCHECK) -check-value ./...)

FUZZTIME ?= 30s
# How long make test fuzzes each target, after the tests.
TEST_FUZZTIME ?= 5s

# make test runs every fuzz target's corpus (seeds and the inputs that
# once failed) as ordinary tests, then fuzzes each target for
# TEST_FUZZTIME (on a cold cache the instrumented builds cost about five
# minutes more; TEST_FUZZTIME=0 leaves fuzzing out). make fuzz fuzzes each
# for FUZZTIME.
.PHONY: test
test: tools verify vet lint test-binaries ## Run every test against a real kube-apiserver and etcd (builds them the first time), then fuzz each target briefly.
	$(call timed,go-test,WEFT_TEST_BINARIES=$(TEST_BIN) go test -p $(TEST_P) -timeout 20m $(TEST_FLAGS) ./...)
	$(call timed,fuzz,hack/fuzz.sh $(TEST_FUZZTIME))

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 30s); a failing input lands in its package's testdata/fuzz.
	$(call timed,fuzz,hack/fuzz.sh $(FUZZTIME))

.PHONY: test-binaries
test-binaries: ## Build the binaries the tests run (weft, the demo) into bin/test, with go test's flags.
	$(call timed,test-binaries,go build -o $(TEST_BIN)/weft . && go build -o $(TEST_BIN)/demo ./hack/demo)

BASE ?= HEAD~1
BENCH_COUNT ?= 6

.PHONY: bench-compare
bench-compare: $(BENCHSTAT) ## Compare the translation, model and endpoint-change benchmarks at BASE (default HEAD~1) with the working tree (benchstat).
	hack/bench-compare.sh $(BASE) $(BENCH_COUNT)

$(BENCHSTAT):
	hack/build-tools.sh benchstat

.PHONY: test-short
test-short: ## Run the unit tests only (no API server).
	go test -short ./...

##@ Build

.PHONY: build
build: ## Build the weft binary into bin/, and bin/kubectl-weft (the same binary, as a kubectl plugin).
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/weft .
	ln -sf weft $(BIN)/kubectl-weft

.PHONY: demo
demo: build tools ## Quick start: a local API server with weft and the samples running against it.
	go run ./hack/demo -weft $(BIN)/weft

##@ Packaging

# The image docker-build makes; CONTAINER_TOOL may be podman.
IMG ?= ghcr.io/weftmesh/weft:$(VERSION)
CONTAINER_TOOL ?= docker
CHART := charts/weft

.PHONY: chart-crds
chart-crds: ## Copy the generated CRDs into the chart, byte for byte (make manifests runs it).
	rm -f $(CHART)/files/crds/*.yaml
	cp config/crd/bases/*.yaml $(CHART)/files/crds/

.PHONY: helm-lint
helm-lint: $(HELM) ## Lint the chart strictly and render it with its defaults and with the injector on.
	$(HELM) lint --strict $(CHART)
	$(HELM) template weft $(CHART) --namespace weft-system >/dev/null
	$(HELM) template weft $(CHART) --namespace weft-system --set injector.enabled=true,certManager.enabled=true >/dev/null

.PHONY: test-chart
test-chart: $(HELM) tools test-binaries ## Test the chart and the Argo CD health checks against a real API server.
	WEFT_TEST_BINARIES=$(TEST_BIN) go test -count=1 $(TEST_FLAGS) ./test/chart/... ./hack/argocd/...

.PHONY: docker-build
docker-build: ## Build the image IMG with the version stamped (needs Docker or CONTAINER_TOOL).
	$(CONTAINER_TOOL) build --build-arg VERSION=$(VERSION) -t $(IMG) .

##@ Tools

.PHONY: tools
tools: ## Build kube-apiserver, etcd, kubectl, kube-controller-manager, helm, controller-gen, the linters, Prometheus and promtool, cert-manager's controllers and an OpenTelemetry collector into bin/.
	$(call timed,tools,hack/build-tools.sh all)

$(CONTROLLER_GEN):
	hack/build-tools.sh controller-gen

$(HELM):
	hack/build-tools.sh helm

$(GOLANGCI_LINT):
	hack/build-tools.sh golangci-lint

$(LOGCHECK):
	hack/build-tools.sh logcheck
