// Reconnect storms for bench/recovery.py: many socket.io clients opened at once, each
// with its own cookie and positions, as /streambridge.js would reconnect them.
// Commands arrive as JSON lines on stdin; answers go as JSON lines to stdout.
//   {"cmd": "connect", "url", "path", "clients": [{"cookie", "positions"?}], "expect"?}
//       -> {"event": "connected"} once every client is connected, then
//          {"event": "ready", ...} once every one has its recovery notice and, when
//          "expect" is given, that many events of its own since connecting
//   {"cmd": "close"}  -> {"event": "closed"}
//   {"cmd": "exit"}
import { io } from "socket.io-client";
import readline from "node:readline";

let sockets = [];
const send = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function compare(a, b) {
  const [am, as] = a.split("-").map(BigInt);
  const [bm, bs] = b.split("-").map(BigInt);
  return am === bm ? (as < bs ? -1 : as > bs ? 1 : 0) : am < bm ? -1 : 1;
}

function connect(msg) {
  const started = performance.now();
  const state = msg.clients.map((c) => ({
    positions: { ...(c.positions || {}) },
    recovery: null,
    recoveredMs: null,
    entries: [],
    errors: [],
  }));
  let done = 0;
  let connected = 0;
  const expect = msg.expect || 0;
  const check = (s) => {
    if (!s.counted && s.recovery && s.entries.length >= expect) {
      s.counted = true;
      if (++done === state.length) {
        send({
          event: "ready",
          elapsed_ms: performance.now() - started,
          clients: state.map((x) => ({
            recovered: x.recovery.recovered,
            replayed: x.recovery.replayed,
            reason: x.recovery.reason || null,
            recovered_ms: x.recoveredMs,
            entries: x.entries,
            positions: x.positions,
            errors: x.errors,
          })),
        });
      }
    }
  };
  msg.clients.forEach((c, i) => {
    const s = state[i];
    const socket = io(msg.url, {
      path: msg.path,
      transports: ["websocket"],
      reconnection: false,
      extraHeaders: { Cookie: c.cookie, Origin: msg.url },
      auth: { positions: s.positions },
    });
    socket.on("connect", () => {
      if (++connected === state.length) send({ event: "connected" });
    });
    socket.on("streambridge:recovery", (info) => {
      s.recovery = info;
      s.recoveredMs = performance.now() - started;
      for (const [shard, at] of Object.entries(info.positions || {})) {
        const mine = s.positions[shard];
        if (!info.recovered || !mine || compare(at.last_id, mine.last_id) > 0) s.positions[shard] = at;
      }
      check(s);
    });
    socket.on("bench", (body, meta) => {
      s.entries.push(meta.entry);
      const shard = String(meta.shard || 0);
      const mine = s.positions[shard];
      if (!mine || compare(meta.id, mine.last_id) > 0) s.positions[shard] = { last_id: meta.id, epoch: meta.epoch };
      check(s);
    });
    socket.on("connect_error", (err) => s.errors.push(String(err.message)));
    sockets.push(socket);
  });
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const msg = JSON.parse(line);
  if (msg.cmd === "connect") connect(msg);
  else if (msg.cmd === "close") {
    sockets.forEach((s) => s.disconnect());
    sockets = [];
    send({ event: "closed" });
  } else if (msg.cmd === "exit") process.exit(0);
});
send({ event: "started" });
