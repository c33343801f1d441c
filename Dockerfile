# PRIMS as an HTTP MCP server: prims serve on python:3.12-slim.
#
#   docker build -t prims .
#   docker run -p 127.0.0.1:9000:9000 \
#     -v /path/to/token:/run/secrets/prims_token:ro prims
#
# examples/docker/run.sh does both and prints the MCP URL;
# examples/docker/smoke.sh builds it with podman from base images made
# locally (examples/docker/base-images.sh) and checks it end to end.

# The base images are arguments so that a host without access to an image
# registry can build from images it made itself (see base-images.sh).
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=python:3.12-slim

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# A static binary: it runs on any base image, including distroless ones.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.buildVersion=${VERSION}" -o /out/prims . \
 && /out/prims version

FROM ${RUNTIME_IMAGE}
# The MCP Registry entry (examples/registry/server.json) this image belongs to.
LABEL io.modelcontextprotocol.server.name="io.github.prims-mcp/prims"
# An unprivileged user owns the process; workspaces live in its TMPDIR.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/prims prims \
 && install -d -o prims -g prims -m 0700 /home/prims/work
COPY --from=build /out/prims /usr/local/bin/prims
USER prims:prims
WORKDIR /home/prims
ENV TMPDIR=/home/prims/work
EXPOSE 9000
# python:3.12-slim has no curl; its own Python makes the probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9000/healthz', timeout=3).status == 200 else 1)"]
# The token is read from a file (a mounted secret), never from the command
# line. Mount one at /run/secrets/prims_token, or override the command to
# use --oauth-issuer.
ENTRYPOINT ["prims"]
CMD ["serve", "--addr", "0.0.0.0:9000", "--auth-token-file", "/run/secrets/prims_token"]
