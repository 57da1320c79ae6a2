// The overview: the daemon's state, every job at work, the inbox, recent results; refreshed every 2 s.
"use strict";

function jobLink(job) {
  return el("a", {href: `/jobs/${encodeURIComponent(job.id)}`, class: "job", text: job.source});
}

function fill(tableId, emptyId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
  document.getElementById(tableId).hidden = rows.length === 0;
  document.getElementById(emptyId).hidden = rows.length !== 0;
}

function show(doc) {
  const d = doc.daemon;
  const daemon = document.getElementById("daemon");
  daemon.textContent = d.paused ? `paused: ${d.paused}` : `running (pid ${d.pid}), ${doc.in_flight} in flight`;
  daemon.className = d.paused ? "daemon paused" : "daemon running";
  document.getElementById("spend").textContent = doc.spend
    ? `spent ${dollars(doc.spend.today_usd)} today, ${dollars(doc.spend.month_usd)} this month` : "";
  fill("active", "no-active", doc.jobs.map(j => el("tr", {"data-job": j.id},
    el("td", {}, jobLink(j)), el("td", {class: `state ${j.state}`, text: j.state}), el("td", {}, progressBar(j.frames)),
    el("td", {text: duration(j.elapsed)}), el("td", {text: duration(j.eta)}), el("td", {text: usd(j.cost)}),
    el("td", {}, actionButtons(j, doc.actions)))));
  fill("recent", "no-recent", doc.recent.map(j => el("tr", {"data-job": j.id},
    el("td", {}, jobLink(j)), el("td", {class: `state ${j.state}`, text: j.state}),
    el("td", {text: `${j.frames.generated}/${j.frames.total}` + (j.frames.failed ? ` (${j.frames.failed} failed)` : "")}),
    el("td", {text: duration(j.elapsed)}), el("td", {text: usd(j.cost)}), el("td", {class: "error", text: j.error || ""}),
    el("td", {}, actionButtons(j, doc.actions)))));
  const inbox = document.getElementById("inbox");
  inbox.replaceChildren(...doc.inbox.map(f => el("li", {text: `${f.name} (${(f.size / 1e6).toFixed(1)} MB, ` +
                                                          `changed ${Math.round(f.age)} s ago)`})));
  document.getElementById("no-inbox").hidden = doc.inbox.length !== 0;
}

poll("/api/status", show, 2000);
