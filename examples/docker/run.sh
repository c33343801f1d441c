#!/usr/bin/env bash
# Build the PRIMS image and run `prims serve` in a container on
# 127.0.0.1:$PORT with a bearer token, then print the MCP URL.
#
#   examples/docker/run.sh            # build, run, print the URL
#   ENGINE=podman examples/docker/run.sh
#
# The token is generated once into $SECRETS/prims_token. The directory is
# private (0700) while the file is world-readable (0644) so that the
# container's unprivileged user can read it through the bind mount.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
ENGINE=${ENGINE:-docker}
IMAGE=${IMAGE:-prims:local}
NAME=${NAME:-prims}
PORT=${PORT:-9000}
SECRETS=${SECRETS:-$repo/examples/docker/secrets}

command -v "$ENGINE" >/dev/null || { echo "run.sh: $ENGINE not found (set ENGINE=podman?)" >&2; exit 1; }

umask 077
mkdir -p "$SECRETS"
chmod 0700 "$SECRETS"
token_file=$SECRETS/prims_token
if [[ ! -s $token_file ]]; then
  if command -v openssl >/dev/null; then
    openssl rand -hex 32 >"$token_file"
  else
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$token_file"
  fi
fi
chmod 0644 "$token_file"

# Full isolation needs a fresh /proc in the sandbox, which the kernel refuses
# while the container's /proc has masked parts. podman allows user
# namespaces by default, so unmask /proc there (README "Containers"); under
# Docker's default seccomp profile PRIMS runs code in its landlock tier.
extra=()
[[ $(basename "$ENGINE") == podman ]] && extra+=(--security-opt 'unmask=/proc/*')

"$ENGINE" build -t "$IMAGE" "$repo"
"$ENGINE" rm -f "$NAME" >/dev/null 2>&1 || true
# Publish on loopback only; put a TLS proxy in front to serve others.
"$ENGINE" run -d --name "$NAME" \
  -p "127.0.0.1:$PORT:9000" \
  -v "$token_file:/run/secrets/prims_token:ro" \
  --cap-drop ALL --security-opt no-new-privileges \
  --stop-timeout 40 "${extra[@]}" \
  "$IMAGE" >/dev/null

url=http://127.0.0.1:$PORT
for _ in $(seq 1 30); do
  if "$ENGINE" exec "$NAME" python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9000/healthz', timeout=2)" 2>/dev/null; then
    echo "PRIMS is up."
    echo "  MCP URL:   $url/mcp"
    echo "  Token:     $token_file  (send: Authorization: Bearer <token>)"
    echo "  Readiness: $url/readyz   Metrics: $url/metrics"
    echo "  Logs:      $ENGINE logs -f $NAME    Stop: $ENGINE stop $NAME"
    exit 0
  fi
  sleep 1
done
echo "run.sh: PRIMS did not become healthy; last logs:" >&2
"$ENGINE" logs --tail 50 "$NAME" >&2 || true
exit 1
