# syntax=docker/dockerfile:1
# The one weft image: `weft controller`, `weft init-redirect` (the injected
# init container) and the user commands. Build it with `make docker-build`
# (IMG=..., VERSION=...), which passes the version to stamp.

# The build runs on the builder's own platform and cross-compiles (the
# binary is pure Go), so multi-platform builds need no emulation.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
# VERSION is what `weft version` prints; make docker-build passes git describe.
ARG VERSION=dev
WORKDIR /src
# Modules first, so that a source change reuses the downloaded modules.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# `make build` is the one place that says how weft is built: CGO_ENABLED=0
# (a static binary), -trimpath, and the version stamped with the Makefile's
# LDFLAGS. Passing VERSION keeps make from asking git, which is not copied.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH make build VERSION=$VERSION

# Distroless static: no shell, no package manager, CA certificates and
# /etc/passwd only; the nonroot variant's default user is 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/weft /weft
USER 65532:65532
ENTRYPOINT ["/weft"]
