// The operator dashboard: the overview comes over the socket (once when asked, then
// after every sample); dead letters are read and acted on over HTTP with the CSRF token.
(function () {
  "use strict";
  var script = document.currentScript;
  var base = script.dataset.base;
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var EVENT = "streambridge:dashboard";
  var statusEl = document.getElementById("status");
  var notice = document.getElementById("notice");
  var charts = {};
  var deadShown = null;  // the dead-letter total the list was last read at
  var through = {};  // per stream, the newest dead letter when the list was read
  var deadTotal = 0;
  var loading = null;  // the list's read in flight
  var again = false;  // asked for while one was in flight

  function setStatus(state, text) {
    statusEl.textContent = text || state;
    statusEl.className = "status " + state;
    statusEl.dataset.state = state;
  }

  // kind "redis" marks an outage notice, which the next push (Redis answered) clears;
  // an action's result stays until the operator's next action.
  function say(text, kind) {
    notice.textContent = text;
    notice.hidden = !text;
    notice.dataset.kind = kind || "";
  }

  function el(tag, text, className) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (className) e.className = className;
    return e;
  }

  function seconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function lastOf(values) {
    for (var i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
    return null;
  }

  function figure(value) {
    if (value === null || value === undefined) return "–";
    return Math.abs(value) >= 100 ? Math.round(value).toString() : (Math.round(value * 10) / 10).toString();
  }

  // -- charts ---------------------------------------------------------------------------
  var CHARTS = {
    rates: [["events_in", "events in /s", "#3b6fd8"], ["deliveries", "deliveries /s", "#2f9e44"]],
    latency: [["p50_ms", "p50 ms", "#3b6fd8"], ["p99_ms", "p99 ms", "#d9480f"]],
    connected: [["connected", "clients", "#7048e8"]],
    dead: [["dead_letters", "dead letters", "#c92a2a"]],
  };

  function chartData(name, series) {
    return [series.t].concat(CHARTS[name].map(function (s) { return series[s[0]]; }));
  }

  function drawCharts(series) {
    Object.keys(CHARTS).forEach(function (name) {
      var data = chartData(name, series);
      if (charts[name]) {
        charts[name].setData(data);
        return;
      }
      var box = document.getElementById("chart-" + name);
      var opts = {
        width: Math.max(300, box.clientWidth || 520),
        height: 200,
        spanGaps: false,
        scales: { y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } } },
        series: [{}].concat(CHARTS[name].map(function (s) {
          // Points too: a value between two gaps (one sample) has no line to show it.
          return { label: s[1], stroke: s[2], fill: s[2] + "14", width: 1.5, points: { show: true, size: 3 } };
        })),
        axes: [{}, { size: 50 }],
      };
      charts[name] = new uPlot(opts, data, box);
      box.dataset.ready = "true";
    });
  }

  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (name) {
      var box = document.getElementById("chart-" + name);
      charts[name].setSize({ width: Math.max(300, box.clientWidth), height: 200 });
    });
  });

  // -- streams and bridges ----------------------------------------------------------------
  function drawShards(shards) {
    var body = document.querySelector("#shards tbody");
    body.replaceChildren();
    shards.forEach(function (shard) {
      var groups = shard.groups.length ? shard.groups : [null];
      groups.forEach(function (group, i) {
        var tr = el("tr");
        tr.dataset.stream = shard.stream;
        if (i === 0) {
          var name = el("td");
          name.append(el("code", shard.stream));
          if (shard.error) name.append(el("div", shard.error, "warn"));
          name.rowSpan = groups.length;
          var length = el("td", shard.length, "num length");
          length.rowSpan = groups.length;
          var last = el("td");
          last.append(el("code", shard.last_id || "–"));
          last.rowSpan = groups.length;
          tr.append(name, length, last);
        }
        if (group === null) {
          tr.append(el("td", "no consumer group yet", "muted"), el("td"), el("td"), el("td"), el("td"));
        } else {
          var bridges = el("td", null, "bridges");
          group.consumers.forEach(function (c) {
            var b = el("span", c.name + " · " + c.state + " · seen " + seconds(c.last_seen_s) + " ago" +
              " · read " + seconds(c.idle_ms / 1000) + " ago" +
              (c.pending ? " · " + c.pending + " pending" : ""), "bridge " + c.state);
            b.dataset.state = c.state;
            bridges.append(b);
          });
          if (!group.consumers.length) bridges.append(el("span", "none", "warn"));
          var age = group.oldest_pending_age_s;
          tr.append(
            el("td", group.name),
            el("td", group.lag === null ? "?" : group.lag, "num lag"),
            el("td", group.pending, "num pending"),
            el("td", seconds(age), "num oldest" + (age !== null && age > 30 ? " warn" : "")),
            bridges
          );
        }
        body.append(tr);
      });
    });
  }

  function drawNow(overview) {
    var s = overview.series;
    ["events_in", "deliveries", "p50_ms", "p99_ms", "connected"].forEach(function (k) {
      document.getElementById("now-" + k).textContent = figure(lastOf(s[k]));
    });
    document.getElementById("now-dead_letters").textContent = overview.dead_letters;
    var when = new Date(overview.at * 1000);
    var updated = document.getElementById("updated");
    updated.dateTime = when.toISOString();
    updated.textContent = when.toLocaleTimeString();
  }

  function show(overview) {
    if (!overview || !overview.series) return;
    drawNow(overview);
    drawCharts(overview.series);
    drawShards(overview.shards);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    if (deadShown !== overview.dead_letters) loadDead();
  }

  // -- dead letters -------------------------------------------------------------------------
  function call(method, path, body) {
    var init = { method: method, credentials: "same-origin", headers: { "X-CSRFToken": csrf } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(base + path, init).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) throw new Error(data.error || r.status + " " + r.statusText);
        return data;
      });
    });
  }

  function bytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KB";
    return (n / 1024 / 1024).toFixed(1) + " MB";
  }

  function cutNote(d) {
    var names = Object.keys(d.truncated || {});
    return names.map(function (n) { return n + ": " + bytes(d.truncated[n]) + ", cut"; }).join("; ");
  }

  // One read at a time; one asked for meanwhile runs after it, so the list is never
  // older than the last request and never fetched twice at once.
  function loadDead() {
    if (loading) {
      again = true;
      return loading;
    }
    loading = readDead().then(function () {
      loading = null;
      if (again) {
        again = false;
        return loadDead();
      }
    });
    return loading;
  }

  function readDead() {
    return call("GET", "/dead?count=100").then(function (data) {
      var letters = data.dead_letters;
      var body = document.querySelector("#dead tbody");
      body.replaceChildren();
      letters.forEach(function (d) {
        var tr = el("tr");
        tr.dataset.id = d.id;
        tr.dataset.stream = d.stream;
        var fields = el("td", null, "fields");
        fields.append(el("code", JSON.stringify(d.fields)));
        var note = cutNote(d);
        if (note) fields.append(el("div", note, "muted"));
        var acts = el("td", null, "acts");
        var inspect = el("button", "Inspect");
        inspect.type = "button";
        inspect.className = "inspect";
        inspect.addEventListener("click", function () { showLetter(d); });
        var requeue = el("button", "Requeue");
        requeue.type = "button";
        requeue.className = "requeue";
        requeue.addEventListener("click", function () {
          act("requeue", { stream: d.stream, id: d.id }, "Requeue dead letter " + d.id + " to " + d.stream + "?");
        });
        var del = el("button", "Delete", "danger delete");
        del.type = "button";
        del.addEventListener("click", function () {
          act("delete", { stream: d.stream, id: d.id }, "Delete dead letter " + d.id + " for good?");
        });
        acts.append(inspect, " ", requeue, " ", del);
        var id = el("td");
        id.append(el("code", d.id));
        var stream = el("td");
        stream.append(el("code", d.stream));
        tr.append(id, stream, el("td", d.original_id), el("td", d.reason), fields, acts);
        body.append(tr);
      });
      deadShown = data.total;
      deadTotal = data.total;
      through = data.through;
      document.getElementById("now-dead_letters").textContent = data.total;
      document.getElementById("dead-count").textContent =
        "(" + letters.length + (data.total > letters.length ? " of " + data.total : "") + ")";
      document.getElementById("dead-empty").hidden = letters.length > 0;
      document.getElementById("dead").hidden = letters.length === 0;
      document.body.dataset.deadLoaded = String(Number(document.body.dataset.deadLoaded || 0) + 1);
    }).catch(function (e) { say("Dead letters: " + e.message, "redis"); });
  }

  function showLetter(d) {
    call("GET", "/dead/one?stream=" + encodeURIComponent(d.stream) + "&id=" + encodeURIComponent(d.id))
      .then(function (data) {
        document.getElementById("inspect-title").textContent = "Dead letter " + d.id;
        var note = cutNote(data.dead_letter);
        document.getElementById("inspect-body").textContent =
          (note ? "(" + note + ")\n" : "") + JSON.stringify(data.dead_letter, null, 2);
        document.getElementById("inspect").showModal();
      })
      .catch(function (e) { say("Inspect: " + e.message); });
  }

  function confirmFirst(text) {
    var dialog = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = text;
    return new Promise(function (resolve) {
      dialog.addEventListener("close", function onClose() {
        dialog.removeEventListener("close", onClose);
        resolve(dialog.returnValue === "ok");
      });
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  function act(name, body, question) {
    return confirmFirst(question).then(function (ok) {
      if (!ok) return;
      return call("POST", "/dead/" + name, body).then(function (data) {
        var done = name === "requeue" ? "Requeued " : "Deleted ";
        say(done + data.count + " dead letter" + (data.count === 1 ? "" : "s") + ".");
        return loadDead();
      }).catch(function (e) { say(name + ": " + e.message); });
    });
  }

  // "All" is all those there when the list was last read: letters that arrived since
  // stay until the operator has seen them.
  document.getElementById("requeue-all").addEventListener("click", function () {
    act("requeue", { all: true, through: through },
      "Requeue all " + deadTotal + " dead letters (those there when the list was read) to their streams?");
  });
  document.getElementById("delete-all").addEventListener("click", function () {
    act("delete", { all: true, through: through },
      "Delete all " + deadTotal + " dead letters (those there when the list was read) for good?");
  });
  document.getElementById("dead-refresh").addEventListener("click", loadDead);

  // -- the socket -----------------------------------------------------------------------------
  var socket = io({ path: script.dataset.socketioPath, transports: ["websocket", "polling"] });
  setStatus("connecting", "connecting…");
  socket.on("connect", function () {
    setStatus("connected");
    socket.emit(EVENT, { watch: true }, function (answer) {
      if (!answer || !answer.ok) {
        setStatus("offline", "refused: " + (answer && answer.error));
        return;
      }
      if (answer.error) say("Redis: " + answer.error, "redis");
      show(answer);
    });
  });
  socket.on(EVENT, function (overview) {
    if (notice.dataset.kind === "redis") say("");
    show(overview);
  });
  socket.on("disconnect", function () { setStatus("reconnecting", "reconnecting…"); });
  socket.on("connect_error", function (e) { setStatus("offline", "offline (" + e.message + ")"); });
  loadDead();
})();
