/* streambridge browser client, on top of the socket.io client (window.io).
 *
 *   const sb = StreamBridge.connect({path: "/ws/socket.io"});
 *   sb.on("message", (body, meta) => { ... });       // meta.id, meta.replayed, meta.from
 *   sb.onRecovery((info) => { if (!info.recovered) location.reload(); });
 *   sb.onStatus((state, detail) => { ... });          // connected | reconnecting | offline
 *   sb.subscribe("order:123", {position: meta})       // a room on request (the app's hook decides)
 *     .then((answer) => { ... });                     // {ok, room, recovered, replayed, reason?}
 *   sb.onSubscription((answer) => { ... });           // every answer, also re-subscriptions
 *                                                     // (retry: true: asked again by itself)
 *   sb.unsubscribe("order:123");
 *   sb.rooms(); sb.joined();                          // asked for; of those, joined on this connection
 *   sb.onPresence("order:123", (change) => { ... });   // who is there: {type, room, user?, users}
 *   sb.presence("order:123").then((answer) => { ... }); // {ok, room, users: {name: connections}}
 *
 * It connects with the last stream id it saw in each shard (kept in sessionStorage, so
 * a reload in the same tab resumes), drops ids it has already delivered, and tells you
 * when the server could not recover the history. meta.shard is set when the stream is
 * sharded: ids are ordered within one shard (a room's events are all in one shard).
 * meta.from names the user who published an event through POST /api/ (absent: the
 * system). Events named "streambridge:..." are the server's own and are only accepted
 * in the shape it sends them.
 *
 * Rooms subscribed on request are subscribed again after a reconnect, from where the
 * client was when the connection dropped (the server asks the app again: a room revoked
 * meanwhile is refused, and onSubscription says so). {position} is optional: the meta
 * of the last event the page has of that room ({id, epoch, shard}), or {positions} as
 * sb.position.shards was when the page had everything of the room up to there; the
 * room's events after it are replayed first.
 *
 * Presence: in a room it is in (granted, or subscribed), the page may watch who else
 * is. sb.presence(room) reads the room (and watches it from then on); sb.onPresence
 * calls its handler with {type: "sync", users} after each read (also after a
 * reconnect), {type: "join" | "leave", user, users} as users come and go (users: the
 * names present now, sorted), and {type: "refused", reason} when the room is not one
 * the connection is in (it is asked again once the page subscribes to it). Changes
 * are numbered by the server: one already in the last read is ignored, whatever order
 * they arrive in. Unsubscribing from a room or sb.unwatchPresence(room) stops it.
 */
(function (root) {
  "use strict";
  var PREFIX = "streambridge:";
  var RECOVERY = PREFIX + "recovery";
  var SUBSCRIBE = PREFIX + "subscribe";
  var UNSUBSCRIBE = PREFIX + "unsubscribe";
  var PRESENCE = PREFIX + "presence";
  var ANSWER_TIMEOUT_MS = 60000;  // the server may wait out a catch-up first
  var RETRY_MS = [1000, 2000, 5000, 10000, 30000];  // after a passing refusal (retry: true)
  // The wait before asking again after the n-th passing refusal in a row (0-based),
  // spread so that clients refused together do not come back together.
  function retryDelay(n) {
    return RETRY_MS[Math.min(n, RETRY_MS.length - 1)] * (0.5 + Math.random() / 2);
  }
  var MAX_SEEN = 20000;
  var STREAM_ID = /^\d{1,20}-\d{1,20}$/;

  // The server's recovery notice, exactly in the shape the server sends it: one
  // argument, no meta (stream events always have one). Anything else is not trusted.
  function isRecovery(args) {
    var info = args[0];
    if (args.length !== 1 || !info || typeof info !== "object" || Array.isArray(info)) return false;
    if (typeof info.recovered !== "boolean" || typeof info.replayed !== "number") return false;
    if (info.reason !== undefined && typeof info.reason !== "string") return false;
    var at = info.positions;
    if (at === undefined) return true;
    if (!at || typeof at !== "object" || Array.isArray(at)) return false;
    return Object.keys(at).every(function (shard) {
      var p = at[shard];
      return /^\d{1,4}$/.test(shard) && p && typeof p === "object" &&  // MAX_SHARDS 1024
        typeof p.last_id === "string" && STREAM_ID.test(p.last_id) &&
        (p.epoch === null || typeof p.epoch === "string");
    });
  }

  // One failing handler must not stop the others, nor the client's bookkeeping.
  function call(handler, args) {
    try {
      handler.apply(null, args);
    } catch (err) {
      setTimeout(function () { throw err; });  // reported, not swallowed
    }
  }

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
    var handlers = Object.create(null);  // channels such as "constructor" are names, not keys of Object
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

    // Rooms on request: room -> {acked, from (wire positions or null), waiters, asking
    // (requests sent and not yet answered), afterAnswer (what waits for their answers)}.
    var subscriptions = Object.create(null);
    var subscriptionHandlers = [];
    var resumeFrom = null;  // where the client was when its connection dropped

    function answered(room, answer) {
      var sub = subscriptions[room];
      if (sub && !answer.ok && answer.retry === true) {
        // Too many requests, or a catch-up under way: asked again later, same position.
        setTimeout(function () {
          if (subscriptions[room] === sub && socket.connected) ask(room);
        }, retryDelay(sub.retries++));
      } else if (sub) {
        if (answer.ok) { sub.acked = true; sub.retries = 0; }
        else delete subscriptions[room];  // refused (or revoked): not asked for again
        sub.waiters.splice(0).forEach(function (resolve) { resolve(answer); });
      }
      // A room whose presence is watched (or was refused for want of it): read it now;
      // refused, so is its presence.
      var watching = presence[room];
      if (watching && answer.retry !== true) {
        if (answer.ok && (watching.asked || watching.handlers.length)) askPresence(room);
        else if (!answer.ok && watching.asked) {
          presenceAnswered(room, watching, {ok: false, room: room, reason: answer.reason});
        }
      }
      subscriptionHandlers.forEach(function (h) { call(h, [answer]); });
    }
    function ask(room) {
      var sub = subscriptions[room];
      if (sub.acked) {
        // Asked again after a reconnect: from where the connection dropped, kept until
        // answered (another drop meanwhile must not move it past what was missed).
        sub.from = resumeFrom && {positions: resumeFrom};
        sub.acked = false;
      }
      var request = {room: room};
      if (sub.from) request.positions = sub.from.positions;
      sub.asking++;
      socket.timeout(ANSWER_TIMEOUT_MS).emit(SUBSCRIBE, request, function (err, answer) {
        if (--sub.asking === 0) sub.afterAnswer.splice(0).forEach(function (f) { f(); });
        if (subscriptions[room] !== sub) return;  // unsubscribed meanwhile
        if (err) return;  // no answer (the connection dropped): asked again on reconnect
        if (!answer || typeof answer !== "object" || typeof answer.ok !== "boolean") {
          answer = {ok: false, room: room, reason: "malformed answer"};
        }
        answered(room, answer);
      });
    }
    function wirePosition(position) {
      if (!position || typeof position !== "object") return null;
      if (position.positions && typeof position.positions === "object") return {positions: position.positions};
      var id = position.id || position.last_id;
      if (typeof id !== "string" || !STREAM_ID.test(id)) return null;
      var at = {};
      at[shardOf(position)] = {last_id: id, epoch: position.epoch || null};
      return {positions: at};
    }

    // Presence: room -> {users: name -> connections, floor: the last read's number (null
    // until one is answered), latest: the newest number in the view, seqOf: name -> number of its last change, reading: reads
    // in flight, kept: changes received while any is (applied again over each answer),
    // handlers, waiters, retries, asked: watching (asked again after a reconnect),
    // connection: how many times the connection dropped (older answers are ignored)}.
    var presence = Object.create(null);

    function watched(room) {
      return presence[room] || (presence[room] = {
        users: Object.create(null), floor: null, latest: 0, seqOf: Object.create(null), reading: 0,
        kept: [], handlers: [], waiters: [], retries: 0, asked: false, connection: 0
      });
    }
    function names(p) { return Object.keys(p.users).sort(); }
    function tell(p, event) { p.handlers.forEach(function (h) { call(h, [event]); }); }
    function askPresence(room) {
      var p = presence[room];
      var sub = subscriptions[room];
      p.asked = true;
      if (sub && !sub.acked) return;  // being subscribed: asked once that is answered
      p.reading++;
      var connection = p.connection;
      socket.timeout(ANSWER_TIMEOUT_MS).emit(PRESENCE, {room: room}, function (err, answer) {
        // Stopped meanwhile, or asked on a connection that has dropped since.
        if (presence[room] !== p || p.connection !== connection) return;
        p.reading--;
        if (!err) presenceAnswered(room, p, answer);  // no answer: asked again on reconnect
        if (!p.reading) p.kept = [];
      });
    }
    function presenceAnswered(room, p, answer) {
      var valid = answer && typeof answer === "object" && answer.ok === true &&
        typeof answer.seq === "number" && answer.users && typeof answer.users === "object";
      if (!valid) {
        if (answer && answer.retry === true) {
          setTimeout(function () {
            if (presence[room] === p && socket.connected) askPresence(room);
          }, retryDelay(p.retries++));
          return;
        }
        p.asked = false;  // refused: asked again when the room is subscribed
        if (!answer || typeof answer !== "object" || typeof answer.ok !== "boolean") {
          answer = {ok: false, room: room, reason: "malformed answer"};
        }
        tell(p, {type: "refused", room: room, reason: answer.reason, users: names(p)});
        p.waiters.splice(0).forEach(function (resolve) { resolve(answer); });
        return;
      }
      p.retries = 0;
      // An answer older than the view (reads that crossed) changes nothing: what came
      // after it is in the view already, or still to come as changes.
      if (p.floor === null || answer.seq >= p.latest) {
        p.users = Object.create(null);
        Object.keys(answer.users).forEach(function (name) {
          var count = answer.users[name];
          if (typeof count === "number" && count > 0) p.users[name] = count;
        });
        p.floor = p.latest = answer.seq;
        p.seqOf = Object.create(null);
        tell(p, {type: "sync", room: room, users: names(p)});
        p.kept.forEach(function (change) { applyPresence(room, p, change); });
      }
      var users = Object.assign({}, p.users);
      p.waiters.splice(0).forEach(function (resolve) { resolve({ok: true, room: room, users: users}); });
    }
    function applyPresence(room, p, change) {
      if (change.seq <= p.floor || change.seq <= (p.seqOf[change.user] || 0)) return;
      p.seqOf[change.user] = change.seq;
      p.latest = Math.max(p.latest, change.seq);
      var present = change.user in p.users;
      if (change.type === "join" ? present : !present) return;  // nothing new
      if (change.type === "join") p.users[change.user] = 1;
      else delete p.users[change.user];
      tell(p, {type: change.type, room: room, user: change.user, users: names(p)});
    }
    socket.on(PRESENCE, function (change) {
      if (arguments.length !== 1 || !change || typeof change !== "object" || typeof change.room !== "string") return;
      var p = presence[change.room];
      if (!p || !p.asked) return;
      if (change.type === "stale") {  // the server may have missed changes: read again
        if (socket.connected) askPresence(change.room);
        return;
      }
      if ((change.type !== "join" && change.type !== "leave") || typeof change.user !== "string" ||
          typeof change.seq !== "number") return;
      if (p.reading) p.kept.push(change);  // applied again over the answer
      if (p.floor !== null) applyPresence(change.room, p, change);
    });

    socket.on("connect", function () {
      attempts = 0;
      // Rooms asked for again first: status handlers then see them as not yet joined
      // (sb.joined()), and one that subscribes is not asked for twice.
      Object.keys(subscriptions).forEach(ask);
      Object.keys(presence).forEach(function (room) { if (presence[room].asked) askPresence(room); });
      status("connected");
    });
    socket.on("disconnect", function (reason) {
      Object.keys(presence).forEach(function (room) {
        var p = presence[room];
        p.floor = null;  // changes missed meanwhile: the view waits for a new read
        p.connection++;
        p.reading = 0;
        p.kept = [];
      });
      resumeFrom = JSON.parse(JSON.stringify(position.shards));
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
    socket.on(RECOVERY, function () {
      var args = Array.prototype.slice.call(arguments);
      if (!isRecovery(args)) return;
      var info = args[0];
      // Where the server says this client now is: complete from here on. After a
      // failed recovery its word replaces ours (ours may name an id the server no
      // longer has, e.g. lost in a failover, and would be refused again and again).
      var at = info.positions || {};
      var mark = info.recovered === false ? "set" : "advance";
      Object.keys(at).forEach(function (shard) { position[mark](shard, at[shard].last_id, at[shard].epoch); });
      position.save();
      recoveryHandlers.forEach(function (h) { call(h, [info]); });
    });
    socket.onAny(function (channel, body, meta) {
      if (typeof channel !== "string" || channel.indexOf(PREFIX) === 0) return;  // the server's own
      if (!meta || typeof meta !== "object" || typeof meta.id !== "string" || !STREAM_ID.test(meta.id)) return;
      var key = shardOf(meta) + "/" + meta.id;
      // The same stream entry published again under a newer position (its ack was lost
      // with the last second of a Redis that persists every second): shown already.
      var entry = typeof meta.entry === "string" ? shardOf(meta) + "/" + meta.epoch + "/" + meta.entry : null;
      var shown = seen.has(key) || (entry && seen.has(entry));
      // Past this event before any handler runs: an event a handler cannot process is
      // never asked for again (no reconnect-and-replay loop).
      position.advance(shardOf(meta), meta.id, meta.epoch);
      position.save();
      if (shown) return;  // redelivered: already shown
      remember(key);
      if (entry) remember(entry);
      (handlers[channel] || []).forEach(function (h) { call(h, [body, meta]); });
      anyHandlers.forEach(function (h) { call(h, [channel, body, meta]); });
    });

    return {
      socket: socket,
      position: position,
      on: function (channel, handler) { (handlers[channel] = handlers[channel] || []).push(handler); return this; },
      onAny: function (handler) { anyHandlers.push(handler); return this; },
      onRecovery: function (handler) { recoveryHandlers.push(handler); return this; },
      onStatus: function (handler) { statusHandlers.push(handler); return this; },
      onSubscription: function (handler) { subscriptionHandlers.push(handler); return this; },
      subscribe: function (room, opts) {
        return new Promise(function (resolve) {
          var earlier = subscriptions[room];  // asked again before the answer: both get it
          subscriptions[room] = {
            acked: false, from: wirePosition(opts && opts.position), retries: 0,
            waiters: (earlier ? earlier.waiters : []).concat([resolve]), asking: 0, afterAnswer: []
          };
          if (socket.connected) ask(room);  // else when it connects
        });
      },
      unsubscribe: function (room) {
        var sub = subscriptions[room];
        delete subscriptions[room];
        if (sub) sub.waiters.splice(0).forEach(function (resolve) {
          resolve({ok: false, room: room, reason: "unsubscribed"});
        });
        return new Promise(function (resolve) {
          var retries = 0;
          function send() {
            // Not connected: the next connection is in no room on request.
            if (!socket.connected) return resolve({ok: true, room: room});
            socket.timeout(ANSWER_TIMEOUT_MS).emit(UNSUBSCRIBE, {room: room}, function (err, answer) {
              if (!err && answer && answer.ok === false && answer.retry === true) {
                return setTimeout(send, retryDelay(retries++));
              }
              // Left: the server stops its presence too (a granted room is not left).
              if (!err && answer && answer.ok === true && !subscriptions[room]) delete presence[room];
              resolve(err ? {ok: false, room: room, reason: "no answer"} : answer);
            });
          }
          // Asked for and not yet answered: after the answer, which the server may give
          // after an unsubscribe that overtook it (joining the room then).
          if (sub && sub.asking) sub.afterAnswer.push(send);
          else send();
        });
      },
      rooms: function () { return Object.keys(subscriptions); },
      // Of those, the rooms the server has said it joined (and not asked again since).
      joined: function () {
        if (!socket.connected) return [];  // a connection's rooms on request go with it
        return Object.keys(subscriptions).filter(function (room) { return subscriptions[room].acked; });
      },
      presence: function (room) {
        var p = watched(room);
        return new Promise(function (resolve) {
          p.waiters.push(resolve);
          if (socket.connected) askPresence(room);
          else p.asked = true;  // when it connects
        });
      },
      onPresence: function (room, handler) {
        var p = watched(room);
        p.handlers.push(handler);
        if (!p.asked) {
          if (socket.connected) askPresence(room);
          else p.asked = true;
        }
        return this;
      },
      unwatchPresence: function (room) {
        var p = presence[room];
        delete presence[room];
        if (p) p.waiters.splice(0).forEach(function (resolve) { resolve({ok: false, room: room, reason: "stopped"}); });
        if (socket.connected) socket.emit(PRESENCE, {room: room, watch: false});
      },
      // Rooms asked for and not yet answered, with the position each is asked from
      // (a page that keeps its rooms over a reload asks for these from there).
      pending: function () {
        var out = {};
        Object.keys(subscriptions).forEach(function (room) {
          var sub = subscriptions[room];
          if (!sub.acked && sub.from) out[room] = sub.from;
        });
        return out;
      },
      close: function () { socket.disconnect(); }
    };
  }

  root.StreamBridge = {connect: connect, compareIds: compareIds};
})(window);
