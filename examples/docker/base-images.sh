#!/usr/bin/env bash
# Make the two base images the Dockerfile needs without an image registry,
# from Debian's packages only:
#
#   localhost/prims-base/python:bookworm       Debian 12 minbase + python3, venv, pip
#   localhost/prims-base/golang:bookworm       the same + this host's Go toolchain
#
# then build with
#   podman build --build-arg RUNTIME_IMAGE=localhost/prims-base/python:bookworm \
#                --build-arg GO_IMAGE=localhost/prims-base/golang:bookworm .
#
# Needs root, debootstrap and podman. ROOTFS (default /var/tmp/prims-rootfs)
# is kept so that a second run only re-imports it.
set -euo pipefail

ENGINE=${ENGINE:-podman}
ROOTFS=${ROOTFS:-/var/tmp/prims-rootfs}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
GOROOT_HOST=${GOROOT_HOST:-$(go env GOROOT)}
runtime_image=localhost/prims-base/python:bookworm
go_image=localhost/prims-base/golang:bookworm

if [[ ! -x $ROOTFS/usr/bin/python3 ]]; then
  rm -rf "$ROOTFS"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR"
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
fi

if ! "$ENGINE" image exists "$runtime_image"; then
  tar -C "$ROOTFS" -c . | "$ENGINE" import --change 'CMD ["/bin/bash"]' - "$runtime_image"
fi

if ! "$ENGINE" image exists "$go_image"; then
  # The Go toolchain is the host's own (the one that builds PRIMS here), so
  # the image needs nothing from outside either.
  "$ENGINE" build --runtime "${RUNTIME:-runc}" -t "$go_image" \
    --build-arg BASE="$runtime_image" -f - "$GOROOT_HOST" <<'EOF'
ARG BASE
FROM ${BASE}
COPY . /usr/local/go
ENV PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN go version
EOF
fi
"$ENGINE" images --filter reference='localhost/prims-base/*'
