// Load generator for bench/run.py: many socket.io clients in one Node process.
// Commands arrive as JSON lines on stdin; answers go as JSON lines to stdout.
//   {"cmd": "connect", "url", "path", "cookie", "clients", "slow_ms"?, "auth"?}
//   {"cmd": "report"}      -> latency histogram, counts, CPU since the last report; resets
//   {"cmd": "count"}       -> events received since the last report (no reset)
//   {"cmd": "disconnect"}  -> closes every client
//   {"cmd": "exit"}
// Latency: the event body carries {"t": <epoch ms when produced>}; receipt time is
// performance.timeOrigin + performance.now() (same machine clock, sub-ms resolution).
import { io } from "socket.io-client";
import readline from "node:readline";

let sockets = [];
let hist = new Map();        // latency bucket (0.1 ms) -> count
let received = 0;
let perClient = [];          // events received per client since last report
let lastIds = [];            // last stream id seen per client
let idsSeen = [];            // Set of ids per client (only when tracking)
let recoveries = [];
let shedReconnects = 0;
let cpuMark = process.cpuUsage();
let wallMark = performance.now();

const now = () => performance.timeOrigin + performance.now();
const send = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// A slow client: after each event it stops reading its TCP socket for `ms`, like a
// client on a poor link. Unlike busy-waiting, this costs the load generator nothing.
function throttle(socket, ms) {
  const transport = socket.io.engine && socket.io.engine.transport;
  const raw = transport && transport.ws && transport.ws._socket;
  if (raw && !raw.isPaused()) {
    raw.pause();
    setTimeout(() => raw.resume(), ms);
  }
}

function connect(msg) {
  const n = msg.clients;
  let connected = 0;
  const track = !!msg.track_ids;
  for (let i = 0; i < n; i++) {
    const index = sockets.length;
    perClient.push(0);
    lastIds.push(msg.auth ? msg.auth.last_id : null);
    idsSeen.push(track ? new Set() : null);
    let epoch = msg.auth ? msg.auth.epoch : null;
    const socket = io(msg.url, {
      path: msg.path,
      transports: ["websocket"],
      extraHeaders: { Cookie: msg.cookie, Origin: msg.url },
      perMessageDeflate: msg.deflate ? { threshold: 0 } : false,
      reconnectionDelay: 200,
      reconnectionDelayMax: 1000,
      auth: (cb) => cb({ last_id: lastIds[index], epoch }),
    });
    let first = true;
    socket.on("connect", () => {
      if (first) {
        first = false;
        connected++;
        if (connected === n) send({ event: "connected", clients: n });
      } else {
        shedReconnects++;
      }
    });
    socket.on("streambridge:recovery", (info) => {
      recoveries.push(info.recovered);
      if (info.epoch) epoch = info.epoch;
    });
    socket.on("connect_error", (err) => send({ event: "connect_error", message: String(err.message) }));
    socket.on("bench", (body, meta) => {
      const latency = now() - body.t;
      const bucket = Math.max(0, Math.round(latency * 10));
      hist.set(bucket, (hist.get(bucket) || 0) + 1);
      received++;
      perClient[index]++;
      if (meta && meta.id) {
        lastIds[index] = meta.id;
        if (meta.epoch) epoch = meta.epoch;
        if (track) idsSeen[index].add(meta.id);
      }
      if (msg.slow_ms) throttle(socket, msg.slow_ms);
    });
    sockets.push(socket);
  }
}

function report() {
  const cpu = process.cpuUsage(cpuMark);
  const wall = (performance.now() - wallMark) / 1000;
  send({
    event: "report",
    received,
    per_client_min: perClient.length ? Math.min(...perClient) : 0,
    per_client_max: perClient.length ? Math.max(...perClient) : 0,
    unique_min: idsSeen.some((s) => s) ? Math.min(...idsSeen.filter((s) => s).map((s) => s.size)) : null,
    connected: sockets.filter((s) => s.connected).length,
    reconnects: shedReconnects,
    recoveries,
    hist: Object.fromEntries(hist),
    cpu_s: (cpu.user + cpu.system) / 1e6,
    wall_s: wall,
    rss_mb: process.memoryUsage().rss / 1e6,
  });
  hist = new Map();
  received = 0;
  perClient = perClient.map(() => 0);
  recoveries = [];
  shedReconnects = 0;
  cpuMark = process.cpuUsage();
  wallMark = performance.now();
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const msg = JSON.parse(line);
  if (msg.cmd === "connect") connect(msg);
  else if (msg.cmd === "report") report();
  else if (msg.cmd === "count") {
    const tracked = idsSeen.filter((s) => s);
    send({ event: "count", received, per_client_min: perClient.length ? Math.min(...perClient) : 0,
           unique_min: tracked.length ? Math.min(...tracked.map((s) => s.size)) : null,
           connected: sockets.filter((s) => s.connected).length });
  }
  else if (msg.cmd === "disconnect") {
    sockets.forEach((s) => s.disconnect());
    sockets = []; perClient = []; lastIds = []; idsSeen = [];
    send({ event: "disconnected" });
  } else if (msg.cmd === "exit") process.exit(0);
});
send({ event: "started" });
