// The official MCP TypeScript SDK's client against `callboard gateway` over
// streamable HTTP: lists the tools, calls them (a result, an agent's error, progress
// then cancel), and is refused without the token. Prints one JSON object on stdout.
// Usage: node mcp_client.mjs http://127.0.0.1:PORT TOKEN
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: node mcp_client.mjs URL TOKEN");
  process.exit(2);
}

async function connect(headers) {
  const client = new Client({ name: "callboard-interop", version: "0.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(`${url}/mcp`), {
    requestInit: { headers },
  });
  await client.connect(transport);
  return client;
}

const out = {};
const client = await connect({ Authorization: `Bearer ${token}` });
try {
  const listed = await client.listTools();
  out.tools = listed.tools.map((t) => t.name).sort();
  out.math_schema = listed.tools.find((t) => t.name === "math")?.inputSchema;

  out.math = await client.callTool({ name: "math", arguments: { expression: "6*7" } });
  out.refuse = await client.callTool({ name: "refuse", arguments: { input: "please" } });

  // progress, then cancel: abort once the agent has reported its first step
  const controller = new AbortController();
  out.progress = [];
  try {
    await client.callTool({ name: "steps", arguments: { count: 1, hold: true } }, undefined, {
      signal: controller.signal,
      onprogress: (p) => {
        out.progress.push({ progress: p.progress, message: p.message });
        controller.abort("the interop client cancels");
      },
      timeout: 30000,
    });
    out.cancel = "not cancelled";
  } catch (err) {
    out.cancel = String(err?.name ?? err);
  }
} finally {
  await client.close();
}

try {
  const intruder = await connect({});
  await intruder.listTools();
  out.without_token = "allowed";
  await intruder.close();
} catch (err) {
  out.without_token = String(err?.message ?? err);
}

process.stdout.write(JSON.stringify(out) + "\n");
process.exit(0);
