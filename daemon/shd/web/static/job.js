// One job: its progress, its output video with the prompt subtitles, and for each second the source frame, the
// painted frame and its prompt. New paintings appear as they are made: the page asks for what changed since its
// last answer (?since=cursor) every second while the job runs, every 5 s once it is finished. It never reloads.
"use strict";

const jobId = decodeURIComponent(location.pathname.split("/")[2]);
const rows = new Map();   // frame number -> its row element
let cursor = null;

function time(t) {
  return duration(t) + (t % 1 ? `.${String(Math.round((t % 1) * 10))}` : "");
}

function picture(kind, url, version, label) {
  if (!url) return el("div", {class: `${kind} pending`, text: label});
  const src = `${url}/thumb?v=${version}`;
  return el("a", {href: url, class: kind, target: "_blank"},
            el("img", {src: src, alt: `${kind} frame`, loading: "lazy", decoding: "async"}));
}

function frameRow(f) {
  const waiting = {extracted: "waiting", prompting: "describing…", prompted: "waiting to paint",
                   generating: "painting…", failed: "failed"}[f.state] || f.state;
  const row = el("div", {class: `frame ${f.state}`, id: `frame-${f.frame}`, "data-frame": f.frame,
                         "data-state": f.state, "data-version": f.version},
    el("div", {class: "time", text: time(f.time)}),
    picture("source", f.source, 0, ""),
    picture("painted", f.painted, f.version, waiting),
    el("div", {class: "words"},
       el("p", {class: "prompt", text: f.prompt || ""}),
       f.error ? el("p", {class: "error", text: f.error + (f.filled_with ? ` (filled: ${f.filled_with})` : "")})
               : null));
  return row;
}

function place(f) {
  const old = rows.get(f.frame);
  if (old && old.dataset.version === String(f.version)) return;
  const row = frameRow(f);
  if (old) {
    row.querySelector(".source").replaceWith(old.querySelector(".source"));  // the same picture: no new request
    old.replaceWith(row);
  } else {
    // frames usually arrive in order; keep the list sorted whatever comes
    const frames = document.getElementById("frames");
    const after = [...rows.keys()].filter(n => n > f.frame).sort((a, b) => a - b)[0];
    frames.insertBefore(row, after === undefined ? null : rows.get(after));
  }
  rows.set(f.frame, row);
}

function showVideo(doc) {
  const box = document.getElementById("result");
  if (!doc.video) { box.hidden = true; return; }
  const video = document.getElementById("video");
  if (video.dataset.src !== doc.video) {
    video.replaceChildren();
    if (doc.subtitles)
      video.append(el("track", {kind: "subtitles", src: doc.subtitles, srclang: "en", label: "Prompts", default: true}));
    video.src = doc.video;
    video.dataset.src = doc.video;
  }
  box.hidden = false;
}

function show(doc) {
  const j = doc.job;
  document.title = `shd: ${j.source}`;
  document.getElementById("source").textContent = j.source;
  const state = document.getElementById("state");
  state.textContent = j.state;
  state.className = `state ${j.state}`;
  document.getElementById("progress").replaceChildren(progressBar(j.frames));
  const facts = [`elapsed ${duration(j.elapsed)}`];
  if (j.eta !== null) facts.push(`ETA ${duration(j.eta)}`);
  if (j.frames.prompted) facts.push(`${j.frames.prompted} described`);
  if (j.filled) facts.push(`${j.filled} filled`);
  if (usd(j.cost)) facts.push(`cost ${usd(j.cost)}`);
  document.getElementById("facts").textContent = facts.join(" · ");
  const error = document.getElementById("error");
  error.textContent = j.error || "";
  error.hidden = !j.error;
  document.getElementById("actions").replaceChildren(actionButtons(j, doc.actions) || "");
  for (const f of doc.frames) place(f);
  document.getElementById("no-frames").hidden = rows.size !== 0;
  showVideo(doc);
  cursor = doc.cursor;
  return ["done", "failed", "canceled"].includes(j.state) ? 5000 : 1000;
}

poll(() => `/api/jobs/${encodeURIComponent(jobId)}` + (cursor === null ? "" : `?since=${cursor}`), show, 1000);
