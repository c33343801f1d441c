// A real TypeScript SDK client for TestTypeScriptClient: it launches
// prims stdio, calls run_code with a program that writes a file, and prints
// the content types of the result. The SDK's schema rejects the whole
// result if any content type is unknown to its protocol version.
// Usage: TS_SDK_DIR=<dir with node_modules> node client.mjs PRIMS ARGS...
import path from "node:path";

const sdk = path.join(process.env.TS_SDK_DIR, "node_modules", "@modelcontextprotocol", "sdk", "dist", "esm");
const { Client } = await import(path.join(sdk, "client", "index.js"));
const { StdioClientTransport } = await import(path.join(sdk, "client", "stdio.js"));

const [command, ...args] = process.argv.slice(2);
const transport = new StdioClientTransport({ command, args, env: { ...process.env }, stderr: "ignore" });
const client = new Client({ name: "ts-client", version: "0" });
await client.connect(transport);
const res = await client.callTool({
  name: "run_code",
  arguments: { code: "open('output/h.txt', 'w').write('hello')\nprint('wrote')" },
});
console.log(JSON.stringify({ types: res.content.map((c) => c.type), text: res.content[0].text }));
await client.close();
