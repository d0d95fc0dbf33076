/* streambridge browser client, on top of the socket.io client (window.io).
 *
 *   const sb = StreamBridge.connect({path: "/ws/socket.io"});
 *   sb.on("message", (body, meta) => { ... });       // meta.id, meta.replayed
 *   sb.onRecovery((info) => { if (!info.recovered) location.reload(); });
 *   sb.onStatus((state, detail) => { ... });          // connected | reconnecting | offline
 *
 * It connects with the last stream id it saw in each shard (kept in sessionStorage, so
 * a reload in the same tab resumes), drops ids it has already delivered, and tells you
 * when the server could not recover the history. meta.shard is set when the stream is
 * sharded: ids are ordered within one shard (a room's events are all in one shard).
 */
(function (root) {
  "use strict";
  var RECOVERY = "streambridge:recovery";
  var MAX_SEEN = 20000;

  function parseId(id) {
    var parts = String(id).split("-");
    return [Number(parts[0]), Number(parts[1] || 0)];
  }
  function compareIds(a, b) {
    var x = parseId(a), y = parseId(b);
    return x[0] - y[0] || x[1] - y[1];
  }

  function shardOf(meta) { return String(meta.shard || 0); }

  // Per shard: {last_id, epoch}.
  function Position(key) {
    this.key = key;
    this.shards = {};
    try {
      var stored = JSON.parse(sessionStorage.getItem(key)) || {};
      this.shards = stored.last_id ? {"0": stored} : (stored.shards || {});
    } catch (e) { this.shards = {}; }
  }
  Position.prototype.save = function () {
    try { sessionStorage.setItem(this.key, JSON.stringify({shards: this.shards})); } catch (e) { /* private mode */ }
  };
  Position.prototype.advance = function (shard, id, epoch) {
    var at = this.shards[shard];
    if (!at || (epoch && epoch !== at.epoch)) at = this.shards[shard] = {epoch: epoch || null};
    if (!at.last_id || compareIds(id, at.last_id) > 0) at.last_id = id;
  };
  Position.prototype.set = function (shard, id, epoch) {
    this.shards[shard] = {last_id: id, epoch: epoch || null};
  };

  function connect(options) {
    options = options || {};
    var io = options.io || root.io;
    var key = "streambridge:" + (options.storageKey || "position") + ":" + (options.path || "/ws/socket.io");
    var position = new Position(key);
    var seen = new Set();
    var handlers = {};
    var anyHandlers = [];
    var recoveryHandlers = [];
    var statusHandlers = [];
    var attempts = 0;

    function status(state, detail) {
      statusHandlers.forEach(function (h) { h(state, detail); });
    }
    function remember(id) {
      seen.add(id);
      if (seen.size > MAX_SEEN) {
        var oldest = seen.values().next().value;
        seen.delete(oldest);
      }
    }

    var socket = io(options.url, {
      path: options.path || "/ws/socket.io",
      transports: options.transports || ["websocket", "polling"],
      withCredentials: true,
      auth: function (cb) {
        // Shard 0 also in the old form, for servers from before sharding.
        var first = position.shards["0"] || {};
        cb({positions: position.shards, last_id: first.last_id || null, epoch: first.epoch || null});
      }
    });

    socket.on("connect", function () { attempts = 0; status("connected"); });
    socket.on("disconnect", function (reason) {
      if (reason === "io client disconnect") status("offline", reason);
      else if (reason === "io server disconnect") status("offline", "closed by the server");
      else status("reconnecting", {attempt: attempts, reason: reason});
    });
    socket.io.on("reconnect_attempt", function (n) { attempts = n; status("reconnecting", {attempt: n}); });
    socket.io.on("reconnect_failed", function () { status("offline", "gave up"); });
    socket.on("connect_error", function (err) {
      var message = (err && err.message) || "error";
      if (message === "not logged in") {
        socket.disconnect();
        status("offline", message);
        if (options.onUnauthorized) options.onUnauthorized();
        return;
      }
      status(socket.active ? "reconnecting" : "offline", {attempt: attempts, reason: message});
    });
    socket.on(RECOVERY, function (info) {
      // Where the server says this client now is: complete from here on. After a
      // failed recovery its word replaces ours (ours may name an id the server no
      // longer has, e.g. lost in a failover, and would be refused again and again).
      var at = (info && info.positions) || {};
      var mark = info && info.recovered === false ? "set" : "advance";
      Object.keys(at).forEach(function (shard) { position[mark](shard, at[shard].last_id, at[shard].epoch); });
      position.save();
      recoveryHandlers.forEach(function (h) { h(info || {}); });
    });
    socket.onAny(function (channel, body, meta) {
      if (channel === RECOVERY || !meta || typeof meta.id !== "string") return;
      var key = shardOf(meta) + "/" + meta.id;
      if (seen.has(key)) return;  // redelivered: already shown
      remember(key);
      position.advance(shardOf(meta), meta.id, meta.epoch);
      position.save();
      (handlers[channel] || []).forEach(function (h) { h(body, meta); });
      anyHandlers.forEach(function (h) { h(channel, body, meta); });
    });

    return {
      socket: socket,
      position: position,
      on: function (channel, handler) { (handlers[channel] = handlers[channel] || []).push(handler); return this; },
      onAny: function (handler) { anyHandlers.push(handler); return this; },
      onRecovery: function (handler) { recoveryHandlers.push(handler); return this; },
      onStatus: function (handler) { statusHandlers.push(handler); return this; },
      close: function () { socket.disconnect(); }
    };
  }

  root.StreamBridge = {connect: connect, compareIds: compareIds};
})(window);
