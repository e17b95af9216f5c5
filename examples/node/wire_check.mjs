// Drives a running MABEAM system from Node.js with the plain `nats` client: spawn a `demo`
// agent, call it, get a 404 for an unknown action, publish and receive CloudEvents, and read the
// agent's KV record. Prints one JSON object with what it saw; exits 1 on any mismatch.
//
//   NATS_URL=nats://127.0.0.1:4222 MABEAM_PREFIX=mabeam node wire_check.mjs
import { connect, headers, JSONCodec } from "nats";

const url = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
const prefix = process.env.MABEAM_PREFIX ?? "mabeam";
const agentId = process.env.AGENT_ID ?? "node-demo";
const json = JSONCodec();

function check(condition, message) {
  if (!condition) {
    console.error(`wire check failed: ${message}`);
    process.exit(1);
  }
}

function errorCode(msg) {
  return msg.headers?.get("Nats-Service-Error-Code") || null;
}

// A CloudEvent in either content mode of the NATS binding: structured (content-type
// application/cloudevents+json, the whole event as JSON: what MABEAM publishes) or binary
// (the attributes in ce- headers, the data as the body).
function cloudEvent(msg) {
  const contentType = msg.headers?.get("content-type") || "";
  if (contentType.toLowerCase().startsWith("application/cloudevents")) {
    return json.decode(msg.data);
  }
  const attribute = (name) => decodeURIComponent(msg.headers?.get(`ce-${name}`) || "");
  return {
    specversion: attribute("specversion"),
    type: attribute("type"),
    source: attribute("source"),
    id: attribute("id"),
    data: json.decode(msg.data),
  };
}

const nc = await connect({ servers: url, name: "mabeam-node-example" });
const seen = {};

// 1. Lifecycle events are CloudEvents: listen before spawning.
const started = nc.subscribe(`${prefix}.events.agent.started`, { max: 1 });

// 2. Spawn a demo agent through the runners' queue group.
const spawned = await nc.request(`${prefix}.ctl.spawn`, json.encode({ type: "demo", id: agentId }), { timeout: 5000 });
check(errorCode(spawned) === null, `spawn failed: ${spawned.string()}`);
seen.spawned = json.decode(spawned.data);
check(seen.spawned.id === agentId && seen.spawned.status === "running", "spawn reply is not the record");

for await (const message of started) {
  const event = cloudEvent(message);
  seen.started_event = {
    specversion: event.specversion,
    type: event.type,
    source: event.source,
    id: event.id,
    data_id: event.data.id,
  };
}
check(seen.started_event.specversion === "1.0" && seen.started_event.type === "agent.started", "started event");

// 3. Call an action; then an action that does not exist.
const counter = await nc.request(`${prefix}.agent.${agentId}.increment`, json.encode({ by: 2 }), { timeout: 5000 });
seen.increment = json.decode(counter.data);
check(seen.increment.counter === 2, "increment did not count to 2");
const unknown = await nc.request(`${prefix}.agent.${agentId}.fly`, json.encode({}), { timeout: 5000 });
seen.unknown_action = { code: errorCode(unknown), body: json.decode(unknown.data) };
check(seen.unknown_action.code === "404", "unknown action is not 404");

// 4. Publish a CloudEvent in binary mode and receive it on a wildcard subscription.
const echo = nc.subscribe(`${prefix}.events.node.*.hello`, { max: 1 });
const h = headers();
h.set("ce-specversion", "1.0");
h.set("ce-id", "node-1");
h.set("ce-source", "/clients/node");
h.set("ce-type", "node.js.hello");
h.set("ce-time", new Date().toISOString());
h.set("content-type", "application/json");
nc.publish(`${prefix}.events.node.js.hello`, json.encode({ from: "node" }), { headers: h });
for await (const message of echo) {
  const event = cloudEvent(message);
  seen.echo = { subject: message.subject, source: event.source, data: event.data };
}
check(seen.echo.data.from === "node", "own event not received");

// 5. Read the agent's record from the registry bucket.
const kv = await nc.jetstream().views.kv(`${prefix.replaceAll(".", "_")}_agents`);
const entry = await kv.get(agentId);
seen.kv_record = json.decode(entry.value);
check(seen.kv_record.id === agentId && seen.kv_record.type === "demo", "KV record");

await nc.drain();
console.log(JSON.stringify(seen));
