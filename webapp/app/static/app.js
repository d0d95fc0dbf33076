// The streambridge page: one list of events in stream order, each shown once.
(function () {
  "use strict";
  var script = document.currentScript;
  var statusEl = document.getElementById("status");
  var list = document.getElementById("messages");
  var notice = document.getElementById("notice");
  var form = document.getElementById("send");
  var sendError = document.getElementById("send-error");
  var csrf = document.querySelector('meta[name="csrf-token"]');
  var compareIds = StreamBridge.compareIds;
  var HISTORY_ON_LOAD = 20;  // events per room shown when the page opens
  // Rows kept: the oldest go. Each new row costs layout in proportion to the list (42 ms
  // at 20,000 rows, bench/page_rows.py), so a tab left open would starve its own pings.
  var MAX_ROWS = 500;

  function setStatus(state, detail) {
    var text = state;
    if (state === "reconnecting") {
      text = detail && detail.attempt ? "reconnecting (attempt " + detail.attempt + ")" : "reconnecting…";
    } else if (state === "offline" && detail) {
      text = "offline (" + detail + ")";
    }
    statusEl.textContent = text;
    statusEl.className = "status " + state;
    statusEl.dataset.state = state;
  }

  function render(channel, body, meta) {
    var li = document.createElement("li");
    li.className = "message" + (meta.replayed ? " replayed" : "");
    li.dataset.id = meta.id;
    li.dataset.entry = meta.entry || "";
    var head = document.createElement("div");
    head.className = "meta";
    var time = document.createElement("time");
    var when = new Date(Number(String(meta.id).split("-")[0]));
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleTimeString();
    var chan = document.createElement("span");
    chan.className = "channel";
    chan.textContent = channel;
    head.append(time, " ", chan);
    var from = document.createElement("span");
    from.className = "from";
    // Who sent it: a user (through the form or /api/), or the system (any producer).
    // "from <name>" can never read "system" (user names have no spaces).
    from.textContent = typeof meta.from === "string" ? "from " + meta.from : "system";
    head.append(" ", from);
    if (meta.replayed) {
      var tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "caught up";
      head.append(" ", tag);
    }
    var text = typeof body === "string";
    var content = document.createElement(text ? "p" : "pre");
    content.className = "body";
    // Always text, never HTML: bodies come from any producer.
    content.textContent = text ? body : JSON.stringify(body, null, 2);
    li.append(head, content);
    return li;
  }

  var shown = new Set();  // shard/position: history and live may bring the same event
  function show(channel, body, meta) {
    var key = (meta.shard || 0) + "/" + meta.id;
    if (shown.has(key)) return;
    shown.add(key);
    // Follow new messages only if the reader is already at the bottom.
    var atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    var li = render(channel, body, meta);
    li.dataset.key = key;
    // Stream order, even if an older id arrives late (e.g. from another bridge).
    var before = list.lastElementChild;
    while (before && compareIds(before.dataset.id, meta.id) > 0) before = before.previousElementSibling;
    list.insertBefore(li, before ? before.nextSibling : list.firstChild);
    while (list.childElementCount > MAX_ROWS) {
      var oldest = list.firstElementChild;
      shown.delete(oldest.dataset.key);  // an event this old is dropped again below
      oldest.remove();
    }
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  var sb = StreamBridge.connect({
    path: script.dataset.socketioPath,
    storageKey: script.dataset.user,
    onUnauthorized: function () { window.location.assign(script.dataset.loginUrl); }
  });
  sb.onStatus(function (state, detail) {
    setStatus(state, detail);
    roomsChanged();  // rooms on request are asked for again on each connection
  });
  sb.onAny(show);
  sb.onRecovery(function (info) {
    statusEl.dataset.recovered = String(info.recovered);
    if (info.recovered === false) {
      notice.textContent = "Some earlier messages could not be recovered (" +
        (info.reason || "history gap") + "). Newer messages will keep arriving; reload to start fresh.";
      notice.hidden = false;
    }
  });

  // Rooms on request: the ones this tab asked for are asked for again after a reload,
  // from where the tab was (its position as stored, before this connect's recovery).
  var joinForm = document.getElementById("join");
  var joinError = document.getElementById("join-error");
  var roomList = document.getElementById("rooms");
  var roomsKey = "streambridge:rooms:" + script.dataset.user;
  var resumeAt = JSON.parse(JSON.stringify(sb.position.shards));

  // Who is online in each room the page is in: granted ones (from the server, for
  // good) and subscribed ones (while subscribed).
  var granted = JSON.parse(script.dataset.rooms || "[]");
  var online = Object.create(null);  // room -> names present
  function watchPresence(room) {
    if (room in online) return;
    online[room] = [];
    sb.onPresence(room, function (change) {
      if (!(room in online)) return;
      online[room] = change.users;
      renderRooms();
    });
  }
  granted.forEach(watchPresence);

  // The page's first view: the last events of the broadcast, its own room and its
  // granted rooms, from their history (live and replayed ones join them, each once).
  function loadHistory(room) {
    var url = script.dataset.historyUrl + "?limit=" + HISTORY_ON_LOAD +
      (room ? "&room=" + encodeURIComponent(room) : "");
    fetch(url, {credentials: "same-origin"}).then(function (res) {
      return res.ok ? res.json() : null;
    }).then(function (page) {
      if (!page || !Array.isArray(page.events)) return;
      page.events.forEach(function (e) {
        if (e && e.meta && typeof e.meta.id === "string" && typeof e.channel === "string") {
          show(e.channel, e.body, e.meta);
        }
      });
    }).catch(function () { /* no history: live events still come */ });
  }
  [null, "user:" + script.dataset.user].concat(granted).forEach(loadHistory);

  // Rooms asked to be left and not yet answered: the server may still send their events
  // until it has left them, so they stay listed (marked) until then.
  var leaving = Object.create(null);
  function renderRooms() {
    roomList.textContent = "";
    var joined = sb.joined();
    var subscribed = sb.rooms().concat(Object.keys(leaving)).filter(function (room, i, all) {
      return granted.indexOf(room) < 0 && all.indexOf(room) === i;
    });
    granted.concat(subscribed.sort()).forEach(function (room) {
      var li = document.createElement("li");
      li.dataset.room = room;
      var name = document.createElement("span");
      name.className = "room";
      name.textContent = room;  // text, never HTML
      var who = document.createElement("span");
      who.className = "online";
      who.dataset.online = (online[room] || []).join(",");
      who.textContent = online[room] && online[room].length ? "online: " + online[room].join(", ") : "";
      li.append(name, " ", who);
      if (leaving[room]) {
        li.className = "leaving";
        li.append(" leaving…");
      } else if (granted.indexOf(room) < 0) {
        // Asked for, not yet answered: the room's events do not come yet.
        if (joined.indexOf(room) < 0) {
          li.className = "joining";
          li.append(" joining…");
        }
        var leave = document.createElement("button");
        leave.type = "button";
        leave.textContent = "Leave";
        leave.setAttribute("aria-label", "Leave " + room);
        leave.addEventListener("click", function () {
          delete online[room];  // unsubscribing stops its presence too
          var asked = leaving[room] = {};
          sb.unsubscribe(room).then(function (answer) {
            if (leaving[room] === asked) delete leaving[room];
            if (!answer.ok && answer.reason !== "not subscribed on request") {
              joinError.textContent = "Could not leave " + room + ": " + answer.reason;
              joinError.hidden = false;
            }
            roomsChanged();
          });
          roomsChanged();
        });
        li.append(" ", leave);
      }
      roomList.append(li);
    });
  }
  function roomsChanged() {
    // A room still being asked for keeps the position it is asked from over a reload.
    var kept = {rooms: sb.rooms(), pending: sb.pending()};
    try { sessionStorage.setItem(roomsKey, JSON.stringify(kept)); } catch (e) { /* private mode */ }
    renderRooms();
  }
  sb.onSubscription(function (answer) {
    if (answer.ok) watchPresence(answer.room);
    if (!answer.ok && !answer.retry) {
      joinError.textContent = "Not subscribed to " + (answer.room || "that room") + ": " + answer.reason;
      joinError.hidden = false;
    } else if (answer.ok && answer.recovered === false) {
      notice.textContent = "Some earlier messages of " + answer.room + " could not be recovered (" +
        (answer.reason || "history gap") + ").";
      notice.hidden = false;
    }
    roomsChanged();
  });
  try {
    var kept = JSON.parse(sessionStorage.getItem(roomsKey)) || {};
    (kept.rooms || []).forEach(function (room) {
      if (typeof room !== "string") return;
      var from = (kept.pending || {})[room] || {positions: resumeAt};
      sb.subscribe(room, {position: from});
    });
  } catch (e) { /* nothing stored */ }
  renderRooms();  // kept rooms show as joining until answered
  joinForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    joinError.hidden = true;
    var input = joinForm.elements.room;
    sb.subscribe(input.value.trim()).then(function (answer) {
      if (answer.ok) input.value = "";
    });
    roomsChanged();
  });

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    sendError.hidden = true;
    var bodyInput = form.elements.body;
    var headers = {"Content-Type": "application/json"};
    if (csrf) headers["X-CSRFToken"] = csrf.content;
    fetch(script.dataset.apiUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: headers,
      body: JSON.stringify({channel: form.elements.channel.value, body: bodyInput.value})
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
  window.streambridgePage = sb;
})();
