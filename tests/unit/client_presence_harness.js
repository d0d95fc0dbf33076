// Drives streambridge.js's presence view with a stand-in socket (test_client_presence.py).
// node client_presence_harness.js <streambridge.js> '<steps as JSON>'
const { sb, socket, sent, fire } = require("./client_stand_in.js").load(process.argv[2]);
const seen = [];
const asks = () => sent.filter((s) => s.ev === "streambridge:presence" && s.cb);
const change = (type, user, seq) => fire("streambridge:presence", { room: "r", type, user, seq });
const out = {};
const STEPS = JSON.parse(process.argv[3]);
for (const [name, ...args] of STEPS) {
  if (name === "watch") sb.onPresence("r", (e) => seen.push([e.type, e.user || null, e.users.join(",")]));
  else if (name === "connect") { socket.connected = true; fire("connect"); }
  else if (name === "disconnect") { socket.connected = false; fire("disconnect", "transport close"); }
  else if (name === "answer") asks()[args[0]].cb(null, { ok: true, room: "r", seq: args[1], users: args[2] });
  else if (name === "refuse") asks()[args[0]].cb(null, { ok: false, room: "r", reason: "no" });
  else if (name === "change") change(...args);
  else if (name === "stale") fire("streambridge:presence", { room: "r", type: "stale" });
  else if (name === "subscribe") sb.subscribe("r");
  else if (name === "subscribed") sent.filter((s) => s.ev === "streambridge:subscribe").pop()
      .cb(null, { ok: true, room: "r", recovered: true, replayed: 0 });
}
out.seen = seen;
out.asks = asks().length;
console.log(JSON.stringify(out));
