// Materializes a stream with the official TypeScript State Protocol client
// (createStreamDB from @durable-streams/state/db, on TanStack DB collections)
// and prints its collections as JSON, one line per phase:
//
//   {"phase": "preloaded", "offset": ..., "collections": {name: [row, ...]}}
//   {"phase": "txid", ...}            (with --await-txid, once that txid arrived)
//
// Usage: node materialize.mjs --url URL --collections JSON [--await-txid TXID] [--timeout-ms N]
//   --collections maps collection names to {"type": ..., "primaryKey": ...}.
// With --await-txid the stream is followed live (long-poll) and the script
// prints the first line, then waits for an event stamped with that txid: the
// client's awaitTxId, as an app awaits its own write. Exits 1 on any error.

import { parseArgs } from "node:util";
import { createStateSchema } from "@durable-streams/state";
import { createStreamDB } from "@durable-streams/state/db";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    collections: { type: "string" },
    "await-txid": { type: "string" },
    "timeout-ms": { type: "string", default: "15000" },
  },
});
if (!args.url || !args.collections) {
  console.error("usage: node materialize.mjs --url URL --collections JSON [--await-txid TXID]");
  process.exit(2);
}
const timeoutMs = Number(args["timeout-ms"]);

// A Standard Schema validator: the rows the server sends must be JSON objects.
const objectRow = {
  "~standard": {
    version: 1,
    vendor: "django-durable-streams-tests",
    validate: (value) =>
      typeof value === "object" && value !== null && !Array.isArray(value)
        ? { value }
        : { issues: [{ message: "a row must be a JSON object" }] },
  },
};

const definitions = {};
for (const [name, { type, primaryKey }] of Object.entries(JSON.parse(args.collections))) {
  definitions[name] = { schema: objectRow, type, primaryKey };
}

const db = createStreamDB({
  streamOptions: { url: args.url, contentType: "application/json" },
  state: createStateSchema(definitions),
  live: args["await-txid"] ? "long-poll" : false,
});

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: ${what}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Rows as the app sees its data: without StreamDB's insertion counter (_seq)
// and TanStack DB's virtual properties ($synced, $origin, $key, ...).
function dataOf(row) {
  return Object.fromEntries(
    Object.entries(row).filter(([field]) => field !== "_seq" && !field.startsWith("$")),
  );
}

function dump(phase) {
  const collections = {};
  for (const [name, collection] of Object.entries(db.collections)) {
    collections[name] = collection.toArray.map(dataOf);
  }
  process.stdout.write(`${JSON.stringify({ phase, offset: db.offset, collections })}\n`);
}

try {
  await within(db.preload(), "preload");
  dump("preloaded");
  if (args["await-txid"]) {
    await within(db.utils.awaitTxId(args["await-txid"], timeoutMs), "awaitTxId");
    dump("txid");
  }
  db.close();
  process.exit(0);
} catch (error) {
  console.error(error?.stack ?? String(error));
  db.close();
  process.exit(1);
}
