#!/usr/bin/env bash
# Pack PRIMS as an MCP Bundle (.mcpb) for Claude Desktop with the real
# @anthropic-ai/mcpb CLI from npm: one binary per platform (a universal
# macOS binary, Windows amd64, Linux amd64), the manifest validated, the
# bundle packed, and its launch command checked by rendering it with mcpb's
# own config code and running the Linux binary with it.
#
#   examples/mcpb/pack.sh                 # -> dist/mcpb/prims-VERSION.mcpb
#   VERSION=1.2.3 examples/mcpb/pack.sh   # at a release
#
# Needs Go, Node 20+, npm and Python 3. .ci/release-check runs it.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
VERSION=${VERSION:-$(git describe --tags --always 2>/dev/null | sed 's/^v//' || echo 0.0.0)}
# mcpb wants a semantic version; a commit id becomes 0.0.0-<id>.
[[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || VERSION=0.0.0-$VERSION
OUT=${OUT:-$repo/dist/mcpb}
MCPB_VERSION=2.1.2
TOOLS=${MCPB_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/prims-ci/mcpb-$MCPB_VERSION}

echo "== mcpb CLI @anthropic-ai/mcpb@$MCPB_VERSION (node $(node --version))"
if [[ ! -x $TOOLS/node_modules/.bin/mcpb ]]; then
  mkdir -p "$TOOLS"
  npm install --prefix "$TOOLS" --no-audit --no-fund --silent "@anthropic-ai/mcpb@$MCPB_VERSION"
fi
mcpb() { "$TOOLS/node_modules/.bin/mcpb" "$@"; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/server" "$OUT"

echo "== binaries (version $VERSION)"
build() { # GOOS GOARCH OUTPUT
  CGO_ENABLED=0 GOOS=$1 GOARCH=$2 go build -ldflags "-s -w -X main.buildVersion=$VERSION" -o "$3" .
}
build linux amd64 "$stage/server/prims-linux"
build windows amd64 "$stage/server/prims.exe"
build darwin amd64 "$stage/darwin-amd64"
build darwin arm64 "$stage/darwin-arm64"
# The bundle has one command per OS, not per architecture: join the two
# macOS binaries into one universal (fat) Mach-O, as lipo does.
python3 - "$stage/server/prims-darwin" "$stage/darwin-amd64" "$stage/darwin-arm64" <<'EOF'
import struct, sys
out, ins = sys.argv[1], sys.argv[2:]
align = 14  # 16 KiB, the page size of arm64 macOS
slices = []
for path in ins:
    data = open(path, "rb").read()
    magic, cpu, sub = struct.unpack("<III", data[:12])
    assert magic == 0xFEEDFACF, path + " is not a 64-bit Mach-O"
    slices.append((cpu, sub, data))
up = lambda n: (n + (1 << align) - 1) & ~((1 << align) - 1)
header = struct.pack(">II", 0xCAFEBABE, len(slices))
offset, body = up(8 + 20 * len(slices)), b""
for cpu, sub, data in slices:
    header += struct.pack(">IIIII", cpu, sub, offset, len(data), align)
    body += b"\0" * (offset - 8 - 20 * len(slices) - len(body)) + data
    offset = up(offset + len(data))
open(out, "wb").write(header + body)
EOF
chmod 0755 "$stage/server/"*
rm "$stage/darwin-amd64" "$stage/darwin-arm64"
# Go's own Mach-O reader must find both architectures, each a whole binary.
cat >"$stage/fatcheck.go" <<'EOF'
package main

import (
	"debug/macho"
	"fmt"
	"os"
)

func main() {
	f, err := macho.OpenFat(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, a := range f.Arches {
		if _, err := a.Section("__text"), a.Symtab; a.Type != macho.TypeExec {
			fmt.Fprintf(os.Stderr, "%v: not an executable (%v)\n", a.Cpu, err)
			os.Exit(1)
		}
		fmt.Printf("  %v slice, %d bytes at %d\n", a.Cpu, a.Size, a.Offset)
	}
	if len(f.Arches) != 2 {
		os.Exit(1)
	}
}
EOF
echo "server/prims-darwin (universal):"
(cd "$stage" && GOFLAGS= go run fatcheck.go server/prims-darwin)
rm "$stage/fatcheck.go"
ls -l "$stage/server"

python3 - "$repo/examples/mcpb/manifest.json" "$stage/manifest.json" "$VERSION" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
m["version"] = sys.argv[3]
json.dump(m, open(sys.argv[2], "w"), indent=2)
EOF
cp LICENSE "$stage/"

echo "== mcpb validate"
mcpb validate "$stage/manifest.json"

echo "== launch check: the command mcpb renders from the manifest starts PRIMS with those settings"
NODE_PATH="$TOOLS/node_modules" node --input-type=module - "$stage" <<'EOF'
import { createRequire } from "node:module";
import { spawn, spawnSync } from "node:child_process";
import { createInterface } from "node:readline";
import { readFileSync } from "node:fs";
const require = createRequire(process.env.NODE_PATH + "/");
const { getMcpConfigForManifest } = await import(require.resolve("@anthropic-ai/mcpb"));
const dir = process.argv[2];
const manifest = JSON.parse(readFileSync(dir + "/manifest.json", "utf8"));
const render = (userConfig) => getMcpConfigForManifest({
  manifest, extensionPath: dir, systemDirs: {}, userConfig, pathSeparator: "/",
});
function initialize(cfg) {
  return new Promise((resolve, reject) => {
    const p = spawn(cfg.command, cfg.args, { stdio: ["pipe", "pipe", "inherit"] });
    const timer = setTimeout(() => { p.kill(); reject(new Error("no answer to initialize in 30s")); }, 30000);
    createInterface({ input: p.stdout }).on("line", (line) => {
      const m = JSON.parse(line);
      if (m.id !== 1) return;
      clearTimeout(timer);
      p.stdin.end();
      m.result?.serverInfo ? resolve(m) : reject(new Error("initialize: " + line));
    });
    p.on("exit", (code) => reject(new Error(`prims stdio exited (${code}) before answering initialize`)));
    p.stdin.write(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: {
      protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "pack.sh", version: "0" } } }) + "\n");
  });
}

async function check(label, userConfig, want) {
  const cfg = await render(userConfig);
  console.log(`${label}: ${cfg.command.replace(dir, "<bundle>")} ${cfg.args.join(" ")}`);
  // prims doctor takes the same flags as prims stdio and prints what they set.
  const r = spawnSync(cfg.command, ["doctor", ...cfg.args.slice(1)], { encoding: "utf8" });
  const out = r.stdout + r.stderr;
  for (const w of want) {
    if (!out.includes(w)) {
      console.error(out);
      throw new Error(`${label}: prims doctor did not say ${JSON.stringify(w)}`);
    }
  }
  // And prims stdio answers initialize with those arguments (stdin stays
  // open until the answer is read: a closed stdin ends the session).
  const reply = await initialize(cfg);
  console.log(`  doctor: ${want.join("; ")}; stdio: initialize answered by ${reply.result.serverInfo.name} ${reply.result.serverInfo.version}`);
}
const cases = [
  ["defaults", {}, ["memory 2GiB", "code: none"]],
  ["chosen", { allowed_hosts: "api.example.com, *.example.org:8443", memory_mib: 512, timeout_s: 30, python: "python3" },
    ["memory 512MiB", "api.example.com, *.example.org:8443"]],
  ["network on", { network: true }, ["code: the host's whole network"]],
];
for (const [label, uc, want] of cases) await check(label, uc, want);
EOF

echo "== mcpb pack"
bundle=$OUT/prims-$VERSION.mcpb
rm -f "$bundle"
mcpb pack "$stage" "$bundle"
mcpb info "$bundle"
sha256sum "$bundle" | tee "$bundle.sha256"
