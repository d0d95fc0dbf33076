// streambridge page: one ordered list of events, each shown once.
(function () {
  "use strict";
  var script = document.currentScript;
  var path = script.dataset.socketioPath;
  var storageKey = "streambridge:" + script.dataset.user + ":position";
  var statusEl = document.getElementById("status");
  var list = document.getElementById("messages");
  var notice = document.getElementById("notice");
  var form = document.getElementById("send");
  var sendError = document.getElementById("send-error");
  var shown = new Set();
  var position = load();

  function load() {
    try { return JSON.parse(sessionStorage.getItem(storageKey)) || {}; } catch (e) { return {}; }
  }
  function save() {
    try { sessionStorage.setItem(storageKey, JSON.stringify(position)); } catch (e) { /* full */ }
  }
  function parseId(id) {
    var parts = String(id).split("-");
    return [Number(parts[0]), Number(parts[1] || 0)];
  }
  function compareIds(a, b) {
    var x = parseId(a), y = parseId(b);
    return x[0] - y[0] || x[1] - y[1];
  }
  function setStatus(text, kind) {
    statusEl.textContent = text;
    statusEl.className = "status " + kind;
    statusEl.dataset.state = kind;
  }
  function render(channel, body, meta) {
    var li = document.createElement("li");
    li.className = "message" + (meta.replayed ? " replayed" : "");
    li.dataset.id = meta.id;
    var head = document.createElement("div");
    head.className = "meta";
    var time = document.createElement("time");
    var when = new Date(parseId(meta.id)[0]);
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleTimeString();
    var chan = document.createElement("span");
    chan.className = "channel";
    chan.textContent = channel;
    head.append(time, " ", chan);
    if (meta.replayed) {
      var tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "caught up";
      head.append(" ", tag);
    }
    var content = document.createElement(typeof body === "string" ? "p" : "pre");
    content.className = "body";
    // Always text, never HTML: bodies come from any producer.
    content.textContent = typeof body === "string" ? body : JSON.stringify(body, null, 2);
    li.append(head, content);
    return li;
  }
  function show(channel, body, meta) {
    if (!meta || !meta.id || shown.has(meta.id)) return;  // drop duplicates
    shown.add(meta.id);
    var li = render(channel, body, meta);
    // Keep stream order even if an older id arrives late.
    var after = list.lastElementChild;
    while (after && compareIds(after.dataset.id, meta.id) > 0) after = after.previousElementSibling;
    list.insertBefore(li, after ? after.nextSibling : list.firstChild);
    if (!position.last_id || compareIds(meta.id, position.last_id) > 0) position.last_id = meta.id;
    if (meta.epoch) position.epoch = meta.epoch;
    save();
    li.scrollIntoView({block: "end"});
  }

  var socket = io({
    path: path,
    transports: ["websocket", "polling"],
    auth: function (cb) { cb({last_id: position.last_id || null, epoch: position.epoch || null}); }
  });
  socket.on("connect", function () { setStatus("connected", "connected"); });
  socket.on("disconnect", function (reason) {
    setStatus(reason === "io client disconnect" ? "offline" : "reconnecting…", reason === "io client disconnect" ? "offline" : "reconnecting");
  });
  socket.io.on("reconnect_attempt", function (n) { setStatus("reconnecting (attempt " + n + ")", "reconnecting"); });
  socket.io.on("reconnect_failed", function () { setStatus("offline", "offline"); });
  socket.on("connect_error", function (err) {
    if (err && err.message === "not logged in") { window.location.href = "/login"; return; }
    setStatus("offline (" + (err && err.message || "error") + "), retrying", "offline");
  });
  socket.on("streambridge:recovery", function (info) {
    if (info && info.epoch) { position.epoch = info.epoch; save(); }
    if (info && info.recovered === false) {
      notice.textContent = "Some earlier messages could not be recovered (" + (info.reason || "history gap") + "). Reload to start fresh.";
      notice.hidden = false;
    }
  });
  socket.onAny(function (channel, body, meta) {
    if (channel.indexOf("streambridge:") === 0) return;
    show(channel, body, meta);
  });

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    sendError.hidden = true;
    var channel = form.elements.channel.value;
    var bodyInput = form.elements.body;
    fetch("/api/", {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-Requested-With": "streambridge"},
      body: JSON.stringify({channel: channel, body: bodyInput.value})
    }).then(function (res) {
      return res.json().catch(function () { return {error: "HTTP " + res.status}; }).then(function (data) {
        if (!res.ok || !data.status) throw new Error(data.error || ("HTTP " + res.status));
        bodyInput.value = "";
      });
    }).catch(function (err) {
      sendError.textContent = "Not sent: " + err.message;
      sendError.hidden = false;
    });
  });
  window.streambridgePage = {socket: socket, position: position};
})();
