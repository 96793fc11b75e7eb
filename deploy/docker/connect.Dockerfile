# syntax=docker/dockerfile:1
# lethe-connect: the runner of WEBHOOK and CONNECTOR systems (sdk/connect)
# as its own container image. Build it from the repository root, which is
# the build context:
#
#   docker build -f deploy/docker/connect.Dockerfile -t lethe-connect:dev .
#
# The final image is distroless (no shell, no package manager), runs as the
# unprivileged user 65532 ("nonroot") and writes only to /data (the
# systems' ledgers), so it runs with a read-only root filesystem. It trusts
# the image's system CA certificates for webhook endpoints and processors'
# APIs, beside --webhook-ca.

FROM golang:1.26 AS build
WORKDIR /src
# A static binary: the distroless "static" image has no C library.
ENV CGO_ENABLED=0

# The workspace's module files first, so that the dependency download is
# cached until a go.mod or go.sum changes. go.work names every module, so
# each one's go.mod must be present even when its sources are not needed.
COPY go.work go.work.sum ./
COPY gen/go/go.mod gen/go/go.sum gen/go/
COPY platform/go.mod platform/go.sum platform/
COPY sdk/go.mod sdk/go.sum sdk/
COPY services/consent/go.mod services/consent/go.sum services/consent/
COPY services/dsar/go.mod services/dsar/go.sum services/dsar/
COPY services/registry/go.mod services/registry/go.sum services/registry/
COPY services/retention/go.mod services/retention/go.sum services/retention/
COPY tools/go.mod tools/go.sum tools/
COPY deploy/go.mod deploy/go.sum deploy/
RUN --mount=type=cache,target=/go/pkg/mod go mod download

# The sources of the modules lethe-connect is built from (the builtin
# connectors are embedded from sdk/connect/connector/builtin).
COPY gen/go gen/go
COPY sdk sdk
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/lethe-connect ./sdk/connect/cmd/lethe-connect
# The ledgers' folder, handed to the runtime user below.
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/lethe-connect /lethe-connect
COPY --from=build --chown=65532:65532 /out/data /data
VOLUME ["/data"]
# The claim check (https; see deploy/base/connect.yaml).
EXPOSE 8443
# Numeric, so that Kubernetes can verify runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["/lethe-connect"]
