// A Node.js producer: append one event to the stream with the `redis` npm package.
//   REDIS_URL=redis://localhost:6379/0 node producer.mjs message '{"text": "hi"}' [room]
//   IDEMPOTENCY_KEY=order-42-paid node producer.mjs ...   # a retry is delivered once
// Prints the stream id. The body is JSON text; it is checked here before XADD.
// Sharded streams (STREAMBRIDGE_SHARDS=N, Node >= 20.15): the key is
// <stream>:{crc32(room) % N}. On a Redis Cluster set STREAMBRIDGE_CLUSTER=1 and
// REDIS_URL to any one node (its user, password and TLS apply to every node).
import { createClient, createCluster } from "redis";

const [channel, body, room] = process.argv.slice(2);
if (!channel || body === undefined) {
  console.error("usage: node producer.mjs CHANNEL BODY_JSON [ROOM]");
  process.exit(2);
}
if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(channel)) {
  console.error("channel must be 1-64 characters of A-Z a-z 0-9 _ . : -");
  process.exit(2);
}
// Socket.IO's own event names and streambridge's prefix (streambridge/contract.py).
const RESERVED = ["connect", "connect_error", "disconnect", "disconnecting", "newListener",
  "removeListener", "__disconnect_final"];
if (RESERVED.includes(channel) || channel.startsWith("streambridge:")) {
  console.error(`channel ${channel} is reserved`);
  process.exit(2);
}
try {
  JSON.parse(body);
} catch (err) {
  console.error(`body is not JSON: ${err.message}`);
  process.exit(2);
}

const url = process.env.REDIS_URL || "redis://localhost:6379/0";
const cluster = ["1", "true", "yes"].includes(process.env.STREAMBRIDGE_CLUSTER || "0");
function clusterOf(url) {
  // node-redis reaches the other nodes with `defaults`, not with the URL of the first.
  const u = new URL(url);
  const defaults = { socket: { tls: u.protocol === "rediss:" } };
  if (u.username) defaults.username = decodeURIComponent(u.username);
  if (u.password) defaults.password = decodeURIComponent(u.password);
  return createCluster({ rootNodes: [{ url }], defaults });
}
const client = cluster ? clusterOf(url) : createClient({ url });
client.on("error", (err) => console.error("redis:", err.message));
await client.connect();
const fields = { channel, body };
if (room) fields.room = room;
// IDEMPOTENCY_KEY: run again with the same key (a retry after a timeout) and the event
// is delivered once.
const idempotencyKey = process.env.IDEMPOTENCY_KEY;
if (idempotencyKey) {
  if (!/^[!-~]{1,128}$/.test(idempotencyKey)) {
    console.error("IDEMPOTENCY_KEY must be 1-128 printable ASCII characters, no space");
    process.exit(2);
  }
  fields.idempotency_key = idempotencyKey;
}
const shards = Number(process.env.STREAMBRIDGE_SHARDS || 1);
const stream = process.env.STREAMBRIDGE_STREAM || "events";
let key = stream;
if (shards > 1) {
  // One room, one shard: the same CRC-32 as Python's zlib.crc32 (and every other language's).
  const { crc32 } = await import("node:zlib");
  key = `${stream}:{${crc32(room || "") % shards}}`;
}
const id = await client.xAdd(key, "*", fields, {
  TRIM: { strategy: "MAXLEN", strategyModifier: "~", threshold: Number(process.env.STREAMBRIDGE_MAXLEN || 100000) },
});
console.log(id);
await client.close();
