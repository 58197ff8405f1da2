// node-postgres client for `pgbatten mitm --matrix`:
//
//     node matrix_client.cjs PATH_TO_NODE_MODULES/pg
//
// Reads one JSON request per line on stdin: {"connectionString": ..., "enableChannelBinding": bool,
// "query": ...}. Connects the way an application handing node-postgres a connection string does (the
// string's sslmode, sslrootcert, sslcert and sslkey are read by pg-connection-string), runs the query and
// answers with one JSON line: {"ok": true, "value": first column of the first row} or
// {"ok": false, "error": message}. End of input ends it.
"use strict";
const readline = require("node:readline");
const pg = require(process.argv[2]);

// pg-connection-string warns once about its sslmode aliases; the matrix shows what they do instead.
process.removeAllListeners("warning");
process.on("warning", () => {});

const rl = readline.createInterface({ input: process.stdin });
const queue = [];
let busy = false;

async function handle(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch (err) {
    return { ok: false, error: `bad request: ${err.message}` };
  }
  const client = new pg.Client({
    connectionString: request.connectionString,
    enableChannelBinding: Boolean(request.enableChannelBinding),
    connectionTimeoutMillis: 10000,
    query_timeout: 20000,
  });
  client.on("error", () => {});
  try {
    await client.connect();
    const result = await client.query({ text: request.query, rowMode: "array" });
    return { ok: true, value: result.rows.length ? String(result.rows[0][0]) : "" };
  } catch (err) {
    return { ok: false, error: String(err && err.message ? err.message : err) };
  } finally {
    await client.end().catch(() => {});
  }
}

async function drain() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const answer = await handle(queue.shift());
    process.stdout.write(JSON.stringify(answer) + "\n");
  }
  busy = false;
}

process.stdout.write(JSON.stringify({ ready: true }) + "\n");
rl.on("line", (line) => {
  if (line.trim()) {
    queue.push(line);
    drain();
  }
});
