// streambridge.js loaded in Node on a stand-in socket, for the client harnesses.
// load(path) -> {sb, socket, sent (what the client emitted: {ev, data, cb}), fire(ev, ...args)}
const fs = require("fs"), vm = require("vm");

module.exports.load = function load(path) {
  const handlers = {}, sent = [];
  const socket = {
    connected: false, active: true,
    on(ev, fn) { (handlers[ev] = handlers[ev] || []).push(fn); return socket; },
    onAny() {}, io: { on() {} }, disconnect() {},
    timeout() { return { emit: (ev, data, cb) => sent.push({ ev, data, cb }) }; },
    emit(ev, data, cb) { sent.push({ ev, data, cb }); },
  };
  globalThis.window = globalThis;
  globalThis.sessionStorage = { getItem: () => null, setItem() {} };
  window.io = () => socket;
  vm.runInThisContext(fs.readFileSync(path, "utf8"));
  const fire = (ev, ...args) => (handlers[ev] || []).forEach((f) => f(...args));
  return { sb: StreamBridge.connect({}), socket, sent, fire };
};
