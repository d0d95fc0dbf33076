// A Node.js producer: append one event to the stream with the `redis` npm package.
//   REDIS_URL=redis://localhost:6379/0 node producer.mjs message '{"text": "hi"}' [room]
// Prints the stream id. The body is JSON text; it is checked here before XADD.
// Sharded streams (STREAMBRIDGE_SHARDS=N): the key is <stream>:{crc32(room) % N}. On a
// Redis Cluster set STREAMBRIDGE_CLUSTER=1 and REDIS_URL to any one node.
import { crc32 } from "node:zlib";
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
try {
  JSON.parse(body);
} catch (err) {
  console.error(`body is not JSON: ${err.message}`);
  process.exit(2);
}

const url = process.env.REDIS_URL || "redis://localhost:6379/0";
const cluster = ["1", "true", "yes"].includes(process.env.STREAMBRIDGE_CLUSTER || "0");
const client = cluster ? createCluster({ rootNodes: [{ url }] }) : createClient({ url });
client.on("error", (err) => console.error("redis:", err.message));
await client.connect();
const fields = { channel, body };
if (room) fields.room = room;
const shards = Number(process.env.STREAMBRIDGE_SHARDS || 1);
const stream = process.env.STREAMBRIDGE_STREAM || "events";
// One room, one shard: the same CRC-32 as Python's zlib.crc32 (and every other language's).
const key = shards > 1 ? `${stream}:{${crc32(room || "") % shards}}` : stream;
const id = await client.xAdd(key, "*", fields, {
  TRIM: { strategy: "MAXLEN", strategyModifier: "~", threshold: Number(process.env.STREAMBRIDGE_MAXLEN || 100000) },
});
console.log(id);
await client.close();
