// Helpers shared by the overview and the job page. Data from the server is only ever set as text, never as HTML.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

// Dollars as `shd status` writes them (pricing.usd): cents from a dollar up, else up to four decimals ($0.0045),
// so a job of a few frames does not read "$0.00".
function dollars(amount) {
  if (amount >= 1) return `$${amount.toFixed(2)}`;
  const [whole, cents] = amount.toFixed(4).replace(/0+$/, "").split(".");
  return `$${whole}.${(cents || "").padEnd(2, "0")}`;
}

function usd(cost) {
  return cost && typeof cost.usd === "number" ? dollars(cost.usd) : "";
}

// A bar of frames painted (and failed) out of the total, with the numbers beside it.
function progressBar(frames) {
  const total = Math.max(frames.total || 0, 1);
  const painted = el("span", {class: "painted"}), failed = el("span", {class: "failed"});
  painted.style.width = `${(100 * frames.generated) / total}%`;
  failed.style.width = `${(100 * frames.failed) / total}%`;
  const label = `${frames.generated}/${frames.total} painted` + (frames.failed ? `, ${frames.failed} failed` : "");
  return el("div", {class: "progress", title: label}, el("div", {class: "bar"}, painted, failed),
            el("span", {class: "label", text: label}));
}

// GET url (or what the function url returns) as JSON, hand each answer to `show`, and again after `every` ms (or
// as many as `show` returns). While the daemon cannot be reached, #daemon says so.
function poll(url, show, every) {
  let wait = every;
  async function tick() {
    const d = document.getElementById("daemon");
    try {
      const r = await fetch(typeof url === "function" ? url() : url, {cache: "no-store"});
      if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
      if (document.body.classList.contains("offline")) d.textContent = "";
      document.body.classList.remove("offline");
      wait = show(await r.json()) || every;
    } catch (e) {
      document.body.classList.add("offline");
      d.textContent = `not reachable (${e.message.trim()})`;
    }
    setTimeout(tick, wait);
  }
  tick();
}

// Retry or cancel a job (only offered when [web] actions = true); the header proves the request is the page's own.
// What the daemon answered goes into #notice; the next refresh shows the job's new state.
async function act(jobId, action) {
  const notice = document.getElementById("notice");
  try {
    const r = await fetch(`/api/jobs/${encodeURIComponent(jobId)}/${action}`,
                          {method: "POST", headers: {"X-Shd-Action": "1"}});
    const text = await r.text();
    let message = text;
    try { message = JSON.parse(text).message; } catch (e) { /* a plain-text refusal */ }
    notice.textContent = message;
    notice.className = r.ok ? "notice" : "notice error";
  } catch (e) {
    notice.textContent = `${action} failed: ${e.message}`;
    notice.className = "notice error";
  }
}

function actionButtons(job, allowed) {
  if (!allowed) return null;
  const box = el("span", {class: "buttons"});
  const finished = ["done", "failed", "canceled"].includes(job.state);
  if (job.state === "failed" || job.state === "canceled" || (!finished && job.frames.failed > 0))
    box.append(el("button", {type: "button", "data-action": "retry", text: "retry"}));
  if (!finished) box.append(el("button", {type: "button", "data-action": "cancel", text: "cancel"}));
  for (const b of box.querySelectorAll("button"))
    b.addEventListener("click", () => { b.disabled = true; act(job.id, b.dataset.action); });
  return box;
}
