// The session page: the session's durable stream materialized by the official
// @durable-streams/state StreamDB into TanStack DB collections, rendered live.
//
// One stream carries every State Protocol event of the session (see
// example_project/sessions/schema.py): `chunk` rows keyed `messageId:seq`,
// `presence` rows keyed `actorId:deviceId`, `agent` rows keyed `agentId`.
// Writes go to the Django views (which check membership), with an X-Txid the
// page then awaits in its StreamDB: the write is in the stream, rendered by
// the same path as everyone else's.
//
// Built by esbuild (make sessions-ui) into ../static/sessions/session.js.

import { createStateSchema } from "@durable-streams/state";
import { createLiveQueryCollection, createStreamDB, eq } from "@durable-streams/state/db";

const config = JSON.parse(document.getElementById("session-config").textContent);

// --- schema: a Standard Schema validator per row type ---------------------------

function rowSchema(name, fields) {
  return {
    "~standard": {
      version: 1,
      vendor: "django-durable-streams-sessions",
      validate(value) {
        if (typeof value !== "object" || value === null) {
          return { issues: [{ message: `a ${name} must be an object` }] };
        }
        const missing = fields.filter((field) => !(field in value));
        return missing.length
          ? { issues: [{ message: `a ${name} needs ${missing.join(", ")}` }] }
          : { value };
      },
    },
  };
}

export const sessionSchema = createStateSchema({
  chunks: {
    schema: rowSchema("chunk", ["messageId", "actorId", "role", "chunk", "seq", "createdAt"]),
    type: "chunk",
    primaryKey: "id", // the event key, `${messageId}:${seq}`
  },
  presence: {
    schema: rowSchema("presence", ["actorId", "deviceId", "userName", "status"]),
    type: "presence",
    primaryKey: "id", // the event key, `${actorId}:${deviceId}`
  },
  agents: {
    schema: rowSchema("agent", ["agentId", "agentName", "triggers", "endpoint"]),
    type: "agent",
    primaryKey: "agentId",
  },
});

const db = createStreamDB({
  streamOptions: { url: config.streamUrl, contentType: "application/json" },
  state: sessionSchema,
  live: "sse",
});
window.sessionDB = db; // for the console (and the browser test)

// --- messages: chunks grouped by messageId, in seq order ------------------------

const messagesEl = document.getElementById("messages");
const messages = new Map(); // messageId -> {chunks: Map(seq -> payload), first, el}

function messageOf(row) {
  let message = messages.get(row.messageId);
  if (!message) {
    message = { id: row.messageId, chunks: new Map(), first: row, el: null };
    messages.set(row.messageId, message);
  }
  if (row.seq === 0 || row.createdAt < message.first.createdAt) message.first = row;
  return message;
}

function materialize(message) {
  // Text is the deltas in seq order; a gap (a chunk not arrived yet) stops it.
  const parts = [];
  let state = "streaming";
  let error = null;
  for (let seq = 0; seq < message.chunks.size + 1; seq++) {
    const payload = message.chunks.get(seq);
    if (!payload) break;
    if (payload.type === "message") {
      parts.push(payload.text);
      state = "done";
    } else if (payload.type === "delta") parts.push(payload.text);
    else if (payload.type === "finish") state = "done";
    else if (payload.type === "error") {
      state = "error";
      error = payload.error;
    }
  }
  return { text: parts.join(""), state, error };
}

function insertInOrder(message) {
  // Messages are ordered by the creation time of their first chunk.
  let before = null;
  for (const el of messagesEl.children) {
    if (el.dataset.createdAt > message.first.createdAt) {
      before = el;
      break;
    }
  }
  messagesEl.insertBefore(message.el, before);
}

function render(message) {
  if (!message.el) {
    const el = document.createElement("li");
    el.className = `message ${message.first.role}`;
    if (message.first.actorId === config.actorId) el.classList.add("mine");
    el.dataset.messageId = message.id;
    el.dataset.actorId = message.first.actorId;
    const who = document.createElement("div");
    who.className = "who";
    const body = document.createElement("div");
    body.className = "text";
    el.append(who, body);
    message.el = el;
  }
  const { el } = message;
  el.dataset.createdAt = message.first.createdAt;
  el.querySelector(".who").textContent =
    `${message.first.actorName || message.first.actorId}` +
    (message.first.actorId === config.actorId ? " (you)" : "");
  const { text, state, error } = materialize(message);
  el.querySelector(".text").textContent = text + (error ? ` [${error}]` : "");
  el.dataset.state = state;
  if (!el.isConnected || el.dataset.placedAt !== message.first.createdAt) {
    el.dataset.placedAt = message.first.createdAt;
    insertInOrder(message);
  }
}

function onChunkChanges(changes) {
  const touched = new Set();
  for (const change of changes) {
    if (change.type === "delete") continue;
    const row = change.value;
    let payload;
    try {
      payload = JSON.parse(row.chunk);
    } catch {
      continue;
    }
    const message = messageOf(row);
    message.chunks.set(row.seq, payload);
    touched.add(message);
  }
  const atBottom = messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 40;
  for (const message of touched) render(message);
  if (atBottom) messagesEl.scrollTop = messagesEl.scrollHeight;
}

// --- presence and agents --------------------------------------------------------

// A live query: only the online rows, kept up to date by TanStack DB.
const online = createLiveQueryCollection({
  query: (q) => q.from({ p: db.collections.presence }).where(({ p }) => eq(p.status, "online")),
});

function renderPresence() {
  const byActor = new Map();
  for (const row of online.toArray) {
    const entry = byActor.get(row.actorId) ?? { name: row.userName, devices: 0 };
    entry.devices += 1;
    byActor.set(row.actorId, entry);
  }
  const list = document.getElementById("presence");
  list.replaceChildren(
    ...[...byActor.entries()]
      .sort((a, b) => a[1].name.localeCompare(b[1].name))
      .map(([actorId, { name, devices }]) => {
        const li = document.createElement("li");
        li.dataset.actorId = actorId;
        li.className = "online";
        li.textContent =
          name + (actorId === config.actorId ? " (you)" : "") + (devices > 1 ? ` · ${devices} tabs` : "");
        return li;
      }),
  );
}

function renderAgents() {
  const list = document.getElementById("agents");
  list.replaceChildren(
    ...db.collections.agents.toArray
      .sort((a, b) => a.agentName.localeCompare(b.agentName))
      .map((agent) => {
        const li = document.createElement("li");
        li.dataset.agentId = agent.agentId;
        li.className = "agent";
        li.textContent = `${agent.agentName} · answers ${agent.triggers}`;
        return li;
      }),
  );
}

// --- writes: through Django, awaited in the stream --------------------------------

function csrfToken() {
  return document.querySelector("input[name=csrfmiddlewaretoken]").value;
}

function newTxid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function sendMessage(text) {
  const txid = newTxid();
  const response = await fetch(config.messagesUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), "X-Txid": txid },
    body: JSON.stringify({ text }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error || `HTTP ${response.status}`);
  }
  await db.utils.awaitTxId(txid, 15000); // our message is in the stream (and rendered)
}

const composer = document.getElementById("composer");
const input = document.getElementById("message-input");
composer.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  composer.classList.add("sending");
  input.disabled = true;
  try {
    await sendMessage(text);
    input.value = "";
  } catch (error) {
    setStatus(`not sent: ${error.message}`);
  } finally {
    input.disabled = false;
    composer.classList.remove("sending");
    input.focus();
  }
});

// Presence: join now, beat every heartbeatSeconds, leave when the page goes.
const deviceId =
  sessionStorage.getItem("ds-device-id") ??
  (() => {
    const id = `tab-${newTxid().replaceAll("-", "").slice(0, 12)}`;
    sessionStorage.setItem("ds-device-id", id);
    return id;
  })();

function presenceForm(action) {
  const form = new FormData();
  form.set("csrfmiddlewaretoken", csrfToken());
  form.set("deviceId", deviceId);
  form.set("action", action);
  return form;
}

function announce(action) {
  return fetch(config.presenceUrl, { method: "POST", body: presenceForm(action) }).catch(() => {});
}

let heartbeat = null;
function join() {
  announce("join");
  clearInterval(heartbeat);
  heartbeat = setInterval(() => announce("beat"), config.heartbeatSeconds * 1000);
}
window.addEventListener("pagehide", () => {
  clearInterval(heartbeat);
  navigator.sendBeacon(config.presenceUrl, presenceForm("leave"));
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted) join(); // back from the back-forward cache
});

// --- start -----------------------------------------------------------------------

const statusEl = document.getElementById("live-status");
function setStatus(text) {
  statusEl.textContent = text;
}

db.collections.chunks.subscribeChanges(onChunkChanges, { includeInitialState: true });
online.subscribeChanges(renderPresence, { includeInitialState: true });
db.collections.agents.subscribeChanges(renderAgents, { includeInitialState: true });

try {
  await db.preload(); // caught up: everything said so far is rendered; now live
  setStatus("live");
  document.body.dataset.synced = "true";
  messagesEl.scrollTop = messagesEl.scrollHeight;
  join();
} catch (error) {
  setStatus(`cannot read the session: ${error.message}`);
}
