// Drives the published AI transports' client code against a Django server.
// Run by tests/acceptance/test_ai_transports.py: one scenario per run, JSON
// lines on stdout ({"phase":"progress",...} while reading, then one
// {"phase":"done",...}); the test may cut the TCP connections in between.
import { parseArgs } from "node:util"
import { createDurableChatTransport } from "@durable-streams/aisdk-transport"
import {
  durableStreamConnection,
  materializeSnapshotFromDurableStream,
} from "@durable-streams/tanstack-ai-transport"
import { readUIMessageStream } from "ai"

const { values: args } = parseArgs({
  options: {
    scenario: { type: "string" },
    base: { type: "string" },
    chat: { type: "string" },
    prompt: { type: "string", default: "hello" },
    "progress-every": { type: "string", default: "1" },
    "stop-after": { type: "string", default: "5" },
    "timeout-ms": { type: "string", default: "30000" },
  },
})
const base = args.base.replace(/\/$/, "")
// A browser logs an unhandled rejection and goes on; node would exit. The
// client library leaves one behind when a read's connection drops.
const unhandled = []
process.on("unhandledRejection", (reason) => unhandled.push(String(reason)))
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n")
setTimeout(() => {
  emit({ phase: "timeout" })
  process.exit(3)
}, Number(args["timeout-ms"])).unref()

async function drain(readable, onChunk) {
  const chunks = []
  const reader = readable.getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) return chunks
    chunks.push(value)
    if (onChunk && onChunk(value, chunks) === false) {
      await reader.cancel()
      return chunks
    }
  }
}

function deltas(chunks) {
  return chunks.filter((c) => c.type === "text-delta").map((c) => c.delta)
}

async function uiMessageText(chunks) {
  // The AI SDK's own chunk processor: throws on chunks useChat would reject.
  const stream = new ReadableStream({
    start(controller) {
      for (const c of chunks) controller.enqueue(c)
      controller.close()
    },
  })
  let last
  for await (const message of readUIMessageStream({ stream })) last = message
  return (last?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("")
}

const userMessage = (text) => ({ id: `u-${Date.now()}`, role: "user", parts: [{ type: "text", text }] })

async function aisdk(api) {
  // One generation, read to its end (the stream's closure). The test may cut
  // the connection mid-generation: the read then fails, and the page resumes
  // as useChat does, with reconnectToStream (the generation replayed from its
  // first chunk, then followed live).
  const transport = createDurableChatTransport({
    api,
    reconnectApi: `${base}/api/aisdk/chat/${args.chat}/stream`,
  })
  const readable = await transport.sendMessages({
    trigger: "submit-message",
    chatId: args.chat,
    messageId: undefined,
    messages: [userMessage(args.prompt)],
    abortSignal: new AbortController().signal,
  })
  const progress = (c, all) => {
    if (c.type === "text-delta") emit({ phase: "progress", deltas: deltas(all).length })
  }
  let first = []
  let chunks
  let dropped = null
  try {
    chunks = await drain(readable, (c, all) => {
      first = all
      progress(c, all)
    })
  } catch (error) {
    dropped = String(error)
    const resumed = await transport.reconnectToStream({ chatId: args.chat })
    if (resumed === null) throw new Error("reconnectToStream found no running generation")
    chunks = await drain(resumed)
  }
  const reconnectAfterEnd = await transport.reconnectToStream({ chatId: args.chat })
  emit({
    phase: "done",
    dropped,
    unhandled,
    first: dropped ? first : [],
    chunks,
    text: await uiMessageText(chunks),
    reconnectAfterEnd: reconnectAfterEnd === null ? null : "stream",
  })
}

async function aisdkReload() {
  // The page goes away mid-generation (its read is aborted), comes back and
  // resumes with useChat's reconnectToStream: the running generation's
  // stream is replayed from its start and followed to its end.
  const transport = createDurableChatTransport({ api: `${base}/api/aisdk/chat` })
  const before = await transport.reconnectToStream({ chatId: args.chat })
  const page = new AbortController()
  const readable = await transport.sendMessages({
    trigger: "submit-message",
    chatId: args.chat,
    messageId: undefined,
    messages: [userMessage(args.prompt)],
    abortSignal: page.signal,
  })
  const stopAfter = Number(args["stop-after"])
  const first = await drain(readable, (c, all) => deltas(all).length < stopAfter)
  page.abort()
  const resumed = await transport.reconnectToStream({ chatId: args.chat })
  if (resumed === null) throw new Error("reconnectToStream found no running generation")
  const replay = await drain(resumed)
  const after = await transport.reconnectToStream({ chatId: args.chat })
  emit({
    phase: "done",
    beforeStart: before === null ? null : "stream",
    first,
    replay,
    text: await uiMessageText(replay),
    reconnectAfterEnd: after === null ? null : "stream",
  })
}

async function tanstack() {
  // A live session: subscribe, send, read the reply to RUN_FINISHED (the test
  // cuts the connection mid-reply); then a reload: materialize the snapshot
  // and resume from its offset for a second turn.
  const sendUrl = `${base}/api/tanstack/chat?id=${args.chat}`
  const readUrl = `${base}/api/tanstack/chat-stream?id=${args.chat}`
  const connection = durableStreamConnection({ sendUrl, readUrl })
  const live = new AbortController()
  const chunks = []
  let contents = 0
  let drops = 0
  // Send only once the subscription has its first chunk (the session's
  // snapshot): a read that starts after the echo is stored would see the
  // user's message in the snapshot instead of as chunks.
  let subscribed
  const firstChunk = new Promise((resolve) => (subscribed = resolve))
  const finished = (async () => {
    // A dropped read fails; subscribing again on the same connection goes on
    // from the offset of the last batch it delivered.
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        for await (const chunk of connection.subscribe(live.signal)) {
          chunks.push(chunk)
          subscribed()
          if (chunk.type === "TEXT_MESSAGE_CONTENT") emit({ phase: "progress", deltas: ++contents })
          if (chunk.type === "RUN_FINISHED" || chunk.type === "RUN_ERROR") return
        }
      } catch (error) {
        drops++
      }
    }
  })()
  const user = { id: "user-1", role: "user", parts: [{ type: "text", content: args.prompt }] }
  await firstChunk
  await connection.send([user], {})
  await finished
  live.abort()

  const snapshot = await materializeSnapshotFromDurableStream({ readUrl })
  const resumed = durableStreamConnection({ sendUrl, readUrl, initialOffset: snapshot.offset })
  const again = new AbortController()
  const secondTurn = []
  const second = (async () => {
    for await (const chunk of resumed.subscribe(again.signal)) {
      secondTurn.push(chunk)
      if (chunk.type === "RUN_FINISHED" || chunk.type === "RUN_ERROR") return
    }
  })()
  const user2 = { id: "user-2", role: "user", parts: [{ type: "text", content: "again" }] }
  await resumed.send([user, user2], {})
  await second
  again.abort()
  emit({ phase: "done", drops, chunks, snapshot: snapshot.messages, secondTurn })
}

const scenarios = {
  aisdk: () => aisdk(`${base}/api/aisdk/chat`),
  "aisdk-await": () => aisdk(`${base}/api/aisdk/chat?mode=await`),
  "aisdk-reload": aisdkReload,
  tanstack,
}
try {
  await scenarios[args.scenario]()
  process.exit(0)
} catch (error) {
  emit({ phase: "error", message: String(error?.stack ?? error) })
  process.exit(1)
}
