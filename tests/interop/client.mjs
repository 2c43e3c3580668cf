// Interop client: proves the callboard wire protocol works from a non-Python
// NATS client (nats.js v3).
//
// Usage: node client.mjs <nats-url> [prefix]     (prefix defaults to "agents")
//
// Prints ONE JSON object on stdout and exits 0; on an unexpected error prints
// the error to stderr and exits 1.
import { randomBytes } from "node:crypto";
import { connect, createInbox, headers, Match } from "@nats-io/transport-node";
import { Svcm } from "@nats-io/services";

const REQUEST_TIMEOUT_MS = 5000;
const STATUS_WAIT_MS = 5000;

const te = new TextEncoder();
const td = new TextDecoder();

function usage() {
  process.stderr.write("usage: node client.mjs <nats-url> [prefix]\n");
  process.exit(2);
}

// Header lookup that is case-insensitive and returns null (not "") if absent.
function header(msg, name) {
  const h = msg?.headers;
  if (!h || !h.has(name, Match.IgnoreCase)) return null;
  return h.get(name, Match.IgnoreCase);
}

// Parse a reply body as JSON; keep the raw text if it is not JSON.
function decodeBody(msg) {
  const text = td.decode(msg?.data ?? new Uint8Array());
  try {
    return { body: JSON.parse(text), body_text: null };
  } catch {
    return { body: null, body_text: text };
  }
}

function describeError(err) {
  if (!err) return null;
  return {
    name: err.name ?? null,
    code: err.code ?? null,
    message: err.message ?? String(err),
    cause: err.cause
      ? { name: err.cause.name ?? null, message: err.cause.message ?? null }
      : null,
  };
}

function isNoResponders(err) {
  return Boolean(
    err &&
      ((typeof err.isNoResponders === "function" && err.isNoResponders()) ||
        err.name === "NoResponders" ||
        err.cause?.name === "NoResponders"),
  );
}

function isTimeout(err) {
  return Boolean(
    err && (err.name === "TimeoutError" || err.cause?.name === "TimeoutError"),
  );
}

// Raw request over a hand-made inbox: returns the reply Msg whatever headers
// it carries (nothing in the reply is interpreted as an error).
async function rawRequest(nc, subject, data, opts = {}) {
  const inbox = createInbox();
  const sub = nc.subscribe(inbox, { max: 1 });
  let timer;
  try {
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`raw request to ${subject} timed out`)),
        opts.timeout ?? REQUEST_TIMEOUT_MS,
      );
    });
    const first = (async () => {
      for await (const m of sub) return m;
      throw new Error(`raw request subscription to ${subject} closed`);
    })();
    nc.publish(subject, data, { reply: inbox, headers: opts.headers });
    return await Promise.race([first, timeout]);
  } finally {
    clearTimeout(timer);
    sub.unsubscribe();
  }
}

// nc.request() in nats-core 3.x only turns a 503 "no responders" status into
// an error; a reply carrying Nats-Service-Error headers resolves normally.
// Should a future version throw on it, fall back to a raw inbox request so the
// reply headers and body are still observed. `via` records which path was used.
async function requestRaw(nc, subject, data, opts = {}) {
  const o = { timeout: REQUEST_TIMEOUT_MS, ...opts };
  try {
    return { msg: await nc.request(subject, data, o), via: "request" };
  } catch (err) {
    if (isNoResponders(err) || isTimeout(err)) throw err;
    return {
      msg: await rawRequest(nc, subject, data, o),
      via: "inbox",
      request_error: describeError(err),
    };
  }
}

function errorReply(msg, via, requestError) {
  return {
    via,
    request_error: requestError ?? null,
    headers: {
      "Nats-Service-Error": header(msg, "Nats-Service-Error"),
      "Nats-Service-Error-Code": header(msg, "Nats-Service-Error-Code"),
    },
    ...decodeBody(msg),
  };
}

async function collect(iterPromise) {
  const out = [];
  for await (const item of await iterPromise) out.push(item);
  return out;
}

const byNameId = (a, b) =>
  `${a.name}\u0000${a.id}`.localeCompare(`${b.name}\u0000${b.id}`);

async function main() {
  const [url, prefixArg] = process.argv.slice(2);
  if (!url) usage();
  const prefix = prefixArg || "agents";
  const taskSubject = (cap) => `${prefix}.task.${cap}`;

  const nc = await connect({ servers: url });
  try {
    // (b) subscribe to status events before any task is sent.
    const okTaskId = `interop-ok-${randomBytes(8).toString("hex")}`;
    const statusEvents = [];
    let resolveCompleted;
    const completed = new Promise((r) => (resolveCompleted = r));
    const statusSub = nc.subscribe(`${prefix}.status.>`, {
      callback: (err, m) => {
        if (err) return;
        let ev;
        try {
          ev = m.json();
        } catch {
          return; // not JSON: not a status event we can use
        }
        if (!ev || typeof ev !== "object") return;
        statusEvents.push({ subject: m.subject, event: ev });
        if (ev.task_id === okTaskId && ev.state === "completed") {
          resolveCompleted(true);
        }
      },
    });
    await nc.flush(); // make sure the server has the subscription

    // (c) a good task.
    const okHeaders = headers();
    okHeaders.set("Agent-Task-Id", okTaskId);
    const okMsg = await nc.request(
      taskSubject("math"),
      te.encode(JSON.stringify({ expression: "6*7" })),
      { timeout: REQUEST_TIMEOUT_MS, headers: okHeaders },
    );
    const ok = {
      task_id: okTaskId,
      headers: {
        "Agent-Task-Id": header(okMsg, "Agent-Task-Id"),
        "Agent-Id": header(okMsg, "Agent-Id"),
      },
      ...decodeBody(okMsg),
    };

    // (d) bad input and a body that is not JSON.
    const bad = await requestRaw(
      nc,
      taskSubject("math"),
      te.encode(JSON.stringify({ expression: "2+" })),
    );
    const badInput = errorReply(bad.msg, bad.via, bad.request_error);
    const nj = await requestRaw(
      nc,
      taskSubject("math"),
      te.encode("this is not json"),
    );
    const notJson = errorReply(nj.msg, nj.via, nj.request_error);

    // (e) a capability nobody serves.
    let noResponders;
    try {
      const m = await nc.request(
        taskSubject("nonexistent-capability-xyz"),
        te.encode(JSON.stringify({ expression: "1" })),
        { timeout: REQUEST_TIMEOUT_MS },
      );
      noResponders = {
        no_responders: false,
        error: null,
        reply: decodeBody(m),
      };
    } catch (err) {
      noResponders = {
        no_responders: isNoResponders(err),
        error: describeError(err),
        reply: null,
      };
    }

    // (f) NATS micro discovery.
    const svc = new Svcm(nc).client();
    const infos = (await collect(svc.info())).map((i) => ({
      name: i.name,
      id: i.id,
      version: i.version ?? null,
      description: i.description ?? null,
      metadata: i.metadata ?? null,
      endpoints: (i.endpoints ?? []).map((e) => ({
        name: e.name,
        subject: e.subject,
        queue_group: e.queue_group ?? null,
        metadata: e.metadata ?? null,
      })),
    }));
    const stats = (await collect(svc.stats())).map((s) => ({
      name: s.name,
      id: s.id,
      metadata: s.metadata ?? null,
      endpoints: (s.endpoints ?? []).map((e) => ({
        name: e.name,
        subject: e.subject,
        num_requests: e.num_requests,
        num_errors: e.num_errors,
      })),
    }));
    const pings = (await collect(svc.ping())).map((p) => ({
      name: p.name,
      id: p.id,
      version: p.version ?? null,
      metadata: p.metadata ?? null,
    }));

    // (g) wait (event-driven, bounded) for the ok task's "completed" event.
    let timer;
    const statusCompleted = await Promise.race([
      completed,
      new Promise((r) => (timer = setTimeout(() => r(false), STATUS_WAIT_MS))),
    ]);
    clearTimeout(timer);
    statusSub.unsubscribe();

    const okEvents = statusEvents
      .map((s) => s.event)
      .filter((ev) => ev.task_id === okTaskId);
    const allStates = [
      ...new Set(
        statusEvents.map((s) => s.event.state).filter((s) => s != null),
      ),
    ];

    // (h) one JSON object on stdout.
    const out = {
      prefix,
      ok,
      bad_input: badInput,
      not_json: notJson,
      no_responders: noResponders,
      status_completed: statusCompleted,
      status_events: okEvents,
      status_subjects: statusEvents
        .filter((s) => s.event.task_id === okTaskId)
        .map((s) => s.subject),
      all_status_states: allStates,
      services: infos.sort(byNameId),
      stats: stats.sort(byNameId),
      ping: pings.sort(byNameId),
    };
    process.stdout.write(JSON.stringify(out) + "\n");
  } finally {
    await nc.drain().catch(() => {});
  }
}

main().then(
  () => {
    process.exitCode = 0;
  },
  (err) => {
    process.stderr.write(
      `interop client failed: ${err?.stack ?? err}${
        err?.cause ? `\ncause: ${err.cause?.stack ?? err.cause}` : ""
      }\n`,
    );
    process.exitCode = 1;
  },
);
