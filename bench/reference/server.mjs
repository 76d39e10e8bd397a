// Starts the Node reference server for the benchmark:
//   node server.mjs PORT            in-memory store
//   node server.mjs PORT DATA_DIR   file-backed store (append-only logs + LMDB)
// Prints "READY <url>" once listening; stops cleanly on SIGTERM/SIGINT.
import { DurableStreamTestServer } from "@durable-streams/server"

const [port, dataDir] = process.argv.slice(2)
const server = new DurableStreamTestServer({
  port: Number(port),
  host: "127.0.0.1",
  ...(dataDir ? { dataDir } : {}),
})
const url = await server.start()
console.log(`READY ${url} ${dataDir ? "file" : "memory"}`)

const stop = async () => {
  // stop() waits for open keep-alive connections; do not wait forever.
  setTimeout(() => process.exit(0), 3000).unref()
  try {
    await server.stop()
  } finally {
    process.exit(0)
  }
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
