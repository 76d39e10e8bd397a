// Runs the official Durable Streams server conformance suite against the
// server whose base URL is in CONFORMANCE_BASE_URL (started by `make test`).
import { runConformanceTests } from "@durable-streams/server-conformance-tests";

const baseUrl = process.env.CONFORMANCE_BASE_URL ?? "http://127.0.0.1:4438";

runConformanceTests({
  baseUrl,
  subscriptions: true,
  longPollTimeoutMs: Number(process.env.CONFORMANCE_LONG_POLL_MS ?? 1000),
});
