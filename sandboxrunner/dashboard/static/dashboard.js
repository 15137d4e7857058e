// sandboxrunner dashboard: live updates by one small request a second (no framework).
// [data-refresh]: an element whose HTML the server renders (escaped) and this replaces.
// [data-log]: a job's log table; new lines come as JSON and are added as text only.
"use strict";
(function () {
  var period = Number(document.body.dataset.refreshMs) || 1000;
  var settled = { completed: 1, failed: 1, cancelled: 1 };

  function refresh(el) {
    return fetch(el.dataset.refresh, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { el.classList.add("stale"); return; }
      return r.text().then(function (html) {
        // unchanged: leave it, so open <details>, a selection or a button under the
        // pointer stay as they are
        if (html !== el.dataset.last) { el.innerHTML = html; el.dataset.last = html; }
        el.classList.remove("stale");
      });
    }).catch(function () { el.classList.add("stale"); });
  }

  function cell(row, text, cls) {
    var td = row.insertCell(-1);
    td.textContent = text;
    if (cls) { td.className = cls; }
  }

  function follow(table) {
    var url = table.dataset.log + "?after=" + encodeURIComponent(table.dataset.after || "-");
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      return r.ok ? r.json() : null;
    }).then(function (body) {
      if (!body) { return; }
      body.lines.forEach(function (line) {
        var row = table.insertRow(-1);
        cell(row, line.clock, "dim"); cell(row, line.label); cell(row, line.msg, "msg");
        table.dataset.after = line.id;
      });
      var none = document.getElementById("no-log");
      if (none && body.lines.length) { none.remove(); }
      if (settled[body.status] && !body.lines.length) { table.dataset.done = "1"; }
    }).catch(function () {});
  }

  function tick() {
    if (document.hidden) { return setTimeout(tick, period); }
    var work = [];
    document.querySelectorAll("[data-refresh]").forEach(function (el) { work.push(refresh(el)); });
    document.querySelectorAll("[data-log]:not([data-done])").forEach(function (t) { work.push(follow(t)); });
    Promise.all(work).then(function () { setTimeout(tick, period); });
  }
  setTimeout(tick, period);
})();
