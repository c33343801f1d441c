#!/usr/bin/env bash
# Container smoke test: the image builds with podman and runc from base
# images made on this host (base-images.sh, no image registry needed), PRIMS
# serves inside it, /healthz answers, run_code works over streamable HTTP,
# SIGTERM ends it cleanly (exit 0, not killed); and which sandbox tier PRIMS
# gets in a container, with which permission.
#
#   examples/docker/smoke.sh            # needs root, podman, runc, debootstrap, python3
#
# CI does not run it: CI machines have no podman by default, and making the
# base images and building the image takes minutes on two cores.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${IMAGE:-localhost/prims:smoke}
PORT=${PORT:-19000}
name=prims-smoke-$$
# crun refuses hosts with hybrid cgroups; runc works everywhere podman does.
# No healthcheck timers: they need systemd, which this host does not run.
run=(podman run --runtime "${RUNTIME:-runc}" --no-healthcheck)
# podman raises RLIMIT_NOFILE/NPROC for the container by default; a podman
# that itself lacks CAP_SYS_RESOURCE (as in this test's own container) cannot.
limits=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
tmp=$(mktemp -d)
cleanup() { podman rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "base images (Debian packages only)"
"$repo/examples/docker/base-images.sh"

step "build $IMAGE"
start=$SECONDS
# The host's module cache is lent to the build (overlay: writes are dropped),
# so go mod download needs no network.
podman build --runtime "${RUNTIME:-runc}" --format docker \
  -v "$(go env GOMODCACHE):/root/go/pkg/mod:O" \
  --build-arg GO_IMAGE=localhost/prims-base/golang:bookworm \
  --build-arg RUNTIME_IMAGE=localhost/prims-base/python:bookworm \
  --build-arg VERSION="$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo dev)" \
  -t "$IMAGE" "$repo" >"$tmp/build.log" 2>&1 || { tail -30 "$tmp/build.log"; exit 1; }
echo "built in $((SECONDS - start)) s: $(podman image inspect "$IMAGE" --format '{{.Id}} {{.Size}} bytes')"
"${run[@]}" --rm "${limits[@]}" "$IMAGE" version

# tier CONFIG...: what prims doctor reports and what a run really does.
tier() {
  local label=$1; shift
  local t out rc=0
  t=$("${run[@]}" --rm "${limits[@]}" "$@" "$IMAGE" doctor 2>&1 | sed -n 's/^Tier for --isolation=auto: //p')
  out=$("${run[@]}" --rm "${limits[@]}" "$@" "$IMAGE" run -c 'import os; print("uid", os.getuid(), "pid", os.getpid())' 2>&1) || rc=$?
  printf '%-34s doctor: %-10s run: rc=%s %s\n' "$label" "${t:-?}" "$rc" "$(echo "$out" | tail -1)"
}

step "sandbox tier inside the container"
# Docker's default seccomp profile allows unshare, mount and clone's
# namespace flags only with CAP_SYS_ADMIN; podman's allows them. This
# profile is podman's with Docker's rules for those calls, to see what a
# Docker user gets.
python3 - "$tmp/docker-like.json" <<'EOF'
import json, sys
p = json.load(open("/usr/share/containers/seccomp.json"))
ns = {"unshare", "mount", "umount", "umount2", "pivot_root", "setns", "clone", "clone3"}
for r in p["syscalls"]:
    if r["action"] == "SCMP_ACT_ALLOW" and not r.get("includes") and not r.get("args"):
        r["names"] = [n for n in r["names"] if n not in ns]
p["syscalls"].append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
    "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]})
p["syscalls"].append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})
json.dump(p, open(sys.argv[1], "w"))
EOF
tier "podman defaults" 
tier "Docker-like seccomp" --security-opt seccomp="$tmp/docker-like.json"
# What Kubernetes' "restricted" pods get (RuntimeDefault seccomp is
# Docker-like, no capabilities, no privilege escalation, read-only root).
tier "Docker-like, cap-drop ALL, nnp, ro" --security-opt seccomp="$tmp/docker-like.json" \
  --cap-drop ALL --security-opt no-new-privileges --read-only \
  -e TMPDIR=/tmp -e XDG_CACHE_HOME=/tmp/.cache # --read-only puts a tmpfs on /tmp
tier "unmask=/proc/*" --security-opt 'unmask=/proc/*'
tier "unmask=/proc/*, cap-drop ALL, nnp" --security-opt 'unmask=/proc/*' --cap-drop ALL --security-opt no-new-privileges

step "serve: /healthz, run_code over HTTP, SIGTERM"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/token"
chmod 0644 "$tmp/token"
"${run[@]}" -d --name "$name" "${limits[@]}" \
  --security-opt 'unmask=/proc/*' --cap-drop ALL --security-opt no-new-privileges \
  -p "127.0.0.1:$PORT:9000" -v "$tmp/token:/run/secrets/prims_token:ro" \
  "$IMAGE" serve --addr 0.0.0.0:9000 --auth-token-file /run/secrets/prims_token --shutdown-grace 20s >/dev/null
python3 - "http://127.0.0.1:$PORT" "$(cat "$tmp/token")" <<'EOF'
import json, sys, time, urllib.request, urllib.error
base, token = sys.argv[1], sys.argv[2]

for _ in range(100):
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
            print("GET /healthz:", r.status, r.read().decode().strip()[:60])
            break
    except (urllib.error.URLError, ConnectionError):
        time.sleep(0.2)
else:
    sys.exit("/healthz never answered")
with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
    print("GET /readyz:", r.status)

def post(msg, sid=None, auth=True):
    req = urllib.request.Request(base + "/mcp", data=json.dumps(msg).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Accept", "application/json, text/event-stream")
    if auth:
        req.add_header("Authorization", "Bearer " + token)
    if sid:
        req.add_header("Mcp-Session-Id", sid)
        req.add_header("Mcp-Protocol-Version", "2025-11-25")
    with urllib.request.urlopen(req, timeout=60) as r:
        body, ctype, sid = r.read().decode(), r.headers.get("Content-Type", ""), r.headers.get("Mcp-Session-Id")
    if "text/event-stream" in ctype:  # the last data: line carries the response
        body = [l[5:] for l in body.splitlines() if l.startswith("data:")][-1] if "data:" in body else ""
    return (json.loads(body) if body.strip() else None), sid

try:
    post({"jsonrpc": "2.0", "id": 0, "method": "tools/list"}, auth=False)
    sys.exit("a request without the token was accepted")
except urllib.error.HTTPError as e:
    print("POST /mcp without the token:", e.code)
init, sid = post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "smoke", "version": "0"}}})
print("initialize:", init["result"]["serverInfo"], "session", sid[:8] + "...")
post({"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
code = "import sys, os\nprint('hello from', sys.version.split()[0], 'as uid', os.getuid())\nopen('output/a.txt','w').write('x')"
res, _ = post({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "run_code", "arguments": {"code": code}}}, sid)
sc = res["result"]["structuredContent"]
print("run_code: exit_code=%s isolation=%s stdout=%r artifacts=%s" % (
    sc["exit_code"], sc["isolation"], sc["stdout"].strip(), [a["path"] for a in sc.get("artifacts", [])]))
if sc["exit_code"] != 0 or "hello from" not in sc["stdout"]:
    sys.exit("run_code failed: %s" % json.dumps(res)[:2000])
EOF
echo "SIGTERM:"
start=$SECONDS
podman kill --signal TERM "$name" >/dev/null
rc=$(podman wait "$name")
echo "  exited with status $rc after $((SECONDS - start)) s (137 would mean it had to be killed)"
podman logs "$name" 2>&1 | tail -4 | cut -c1-200 | sed 's/^/  log: /'
[[ $rc == 0 ]] || { echo "smoke: prims did not exit cleanly on SIGTERM"; exit 1; }
echo
echo "smoke: ok"
