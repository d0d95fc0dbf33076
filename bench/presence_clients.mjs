// Load generator for bench/presence.py: socket.io clients that watch their room's
// presence, and "movers" that join and leave while the watchers time the news.
// Commands arrive as JSON lines on stdin; answers go as JSON lines to stdout.
//   {"cmd": "watchers", "path", "clients": [{"url", "cookie", "room"}, ...]}
//        -> {"event": "watching", "read_ms": [...]}   (each client's presence read)
//   {"cmd": "movers", "path", "clients": [{"url", "cookie", "room", "user"}, ...], "rate"}
//        -> {"event": "joined"} once each mover is connected and seen by its watchers
//   {"cmd": "leave", "rate"}  -> {"event": "left"} once every mover's leave was seen
//   {"cmd": "reread", "count"} -> {"event": "reread", "read_ms": [...]}: that many
//        watchers read their room again, one after the other (a steady-state read)
//   {"cmd": "report"}         -> join/leave delivery latencies (ms) per watcher, counts
//   {"cmd": "exit"}
// Latency: from the mover's own "connect" event (join) or its disconnect() call (leave)
// to a watcher's receipt of the change; one process, one clock.
import { io } from "socket.io-client";
import readline from "node:readline";

const PRESENCE = "streambridge:presence";
const now = () => performance.now();
const send = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const watchers = []; // [{socket, room}]
const movers = [];
const acted = new Map(); // "join:user" / "leave:user" -> when the mover acted
const latencies = { join: [], leave: [] };
const seen = { join: new Map(), leave: new Map() }; // user -> watchers that got it
const roomSize = new Map(); // room -> watchers in it
let waiting = null; // {kind, resolve}

function open(url, path, cookie) {
  return io(url, {
    path,
    transports: ["websocket"],
    extraHeaders: { Cookie: cookie, Origin: url },
    reconnection: false,
  });
}

function onChange(change) {
  const t = now();
  if (!change || (change.type !== "join" && change.type !== "leave")) return;
  const since = acted.get(change.type + ":" + change.user);
  if (since === undefined) return; // a watcher's own join, from before
  latencies[change.type].push(t - since);
  const got = seen[change.type];
  got.set(change.user, (got.get(change.user) || 0) + 1);
  if (waiting && waiting.kind === change.type) waiting.check();
}

async function watch(msg) {
  const reads = [];
  await Promise.all(
    msg.clients.map(
      (c) =>
        new Promise((resolve, reject) => {
          const socket = open(c.url, msg.path, c.cookie);
          watchers.push({ socket, room: c.room });
          roomSize.set(c.room, (roomSize.get(c.room) || 0) + 1);
          socket.on(PRESENCE, onChange);
          socket.on("connect_error", reject);
          socket.on("connect", () => {
            const t0 = now();
            socket.timeout(30000).emit(PRESENCE, { room: c.room }, (err, answer) => {
              if (err || !answer || !answer.ok) return reject(err || new Error(JSON.stringify(answer)));
              reads.push(now() - t0);
              resolve();
            });
          });
        }),
    ),
  );
  send({ event: "watching", read_ms: reads });
}

// Resolves once every mover's `kind` change reached every watcher of its room.
function allSeen(kind) {
  return new Promise((resolve) => {
    waiting = {
      kind,
      check() {
        const done = movers.every((m) => (seen[kind].get(m.user) || 0) >= roomSize.get(m.room));
        if (done) {
          waiting = null;
          resolve();
        }
      },
    };
    waiting.check();
  });
}

async function paced(items, rate, fn) {
  const start = now();
  for (let i = 0; i < items.length; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    fn(items[i]);
  }
}

async function move(msg) {
  const connected = [];
  await paced(msg.clients, msg.rate, (c) => {
    const socket = open(c.url, msg.path, c.cookie);
    movers.push({ socket, user: c.user, room: c.room });
    connected.push(
      new Promise((resolve) =>
        socket.on("connect", () => {
          acted.set("join:" + c.user, now());
          resolve();
        }),
      ),
    );
  });
  await Promise.all(connected);
  await allSeen("join");
  send({ event: "joined" });
}

async function reread(msg) {
  const reads = [];
  for (const w of watchers.slice(0, msg.count)) {
    const t0 = now();
    const answer = await w.socket.timeout(30000).emitWithAck(PRESENCE, { room: w.room });
    if (!answer || !answer.ok) throw new Error(JSON.stringify(answer));
    reads.push(now() - t0);
  }
  send({ event: "reread", read_ms: reads });
}

async function leave(msg) {
  await paced(movers, msg.rate, (m) => {
    acted.set("leave:" + m.user, now());
    m.socket.disconnect();
  });
  await allSeen("leave");
  send({ event: "left" });
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  const msg = JSON.parse(line);
  try {
    if (msg.cmd === "watchers") await watch(msg);
    else if (msg.cmd === "movers") await move(msg);
    else if (msg.cmd === "leave") await leave(msg);
    else if (msg.cmd === "reread") await reread(msg);
    else if (msg.cmd === "report") send({ event: "report", latencies });
    else if (msg.cmd === "exit") {
      watchers.forEach((w) => w.socket.disconnect());
      process.exit(0);
    }
  } catch (err) {
    send({ event: "error", error: String(err && err.message ? err.message : err) });
  }
});
send({ event: "started" });
