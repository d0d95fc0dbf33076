// Drives streambridge.js's rooms on request with a stand-in socket (test_client_rooms.py).
// node client_rooms_harness.js <streambridge.js> '<steps as JSON>'
const timers = [];
globalThis.setTimeout = (f) => timers.push(f);  // run by the "timers" step, not by time
const { sb, socket, sent, fire } = require("./client_stand_in.js").load(process.argv[2]);
const SHORT = { "streambridge:subscribe": "sub", "streambridge:unsubscribe": "unsub" };
const requests = (name) => sent.filter((s) => SHORT[s.ev] === name);
const out = { answers: [] };
(async () => {
  for (const [name, ...args] of JSON.parse(process.argv[3])) {
    if (name === "connect") { socket.connected = true; fire("connect"); }
    else if (name === "disconnect") { socket.connected = false; fire("disconnect", "transport close"); }
    else if (name === "subscribe") sb.subscribe("r").then((a) => out.answers.push(["sub", a.ok, a.reason || null]));
    else if (name === "unsubscribe") sb.unsubscribe("r").then((a) => out.answers.push(["unsub", a.ok, a.reason || null]));
    else if (name === "answer") requests(args[0])[args[1]].cb(null, { room: "r", ...args[2] });
    else if (name === "timers") timers.splice(0).forEach((f) => f());
    await null;  // what the step resolved runs before the next step
  }
  out.sent = sent.map((s) => SHORT[s.ev] || s.ev);
  out.joined = sb.joined();
  console.log(JSON.stringify(out));
})();
