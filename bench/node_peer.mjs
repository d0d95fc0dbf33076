// The Node peer of bench/compare.py: a socket.io 4 server with
// @socket.io/redis-streams-adapter, as its documentation sets it up. Events reach it the
// way the adapter's own servers send them: a BROADCAST message XADDed to its stream
// (bench/compare.py's producer writes those entries).
//   node bench/node_peer.mjs <port> <redis url> <socket.io path>
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createClient } from "redis";
import { createAdapter } from "@socket.io/redis-streams-adapter";

const [port, url, path] = process.argv.slice(2);
const redisClient = createClient({ url });
await redisClient.connect();

const httpServer = createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end('{"status":"ok"}');
  } else {
    res.writeHead(404);
    res.end();
  }
});
const io = new Server(httpServer, {
  path,
  transports: ["websocket", "polling"],
  adapter: createAdapter(redisClient, { blockTimeInMs: 1000 }),
});
io.on("connection", () => {});
process.on("SIGTERM", () => {
  io.close();
  redisClient.quit().finally(() => process.exit(0));
});
httpServer.listen(Number(port), "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ event: "listening", port: Number(port) }) + "\n");
});
