// brainharmonic's page: shows the live state (GET /api/state, then WS /ws) and sends commands (POST /api/cmd).
// Plain JavaScript, no libraries, no build step. Every command is the MQTT schema; every reply or error is shown
// as the service words it.
"use strict";

const GM = ["Acoustic Grand Piano", "Bright Acoustic Piano", "Electric Grand Piano", "Honky-tonk Piano",
  "Electric Piano 1", "Electric Piano 2", "Harpsichord", "Clavinet", "Celesta", "Glockenspiel", "Music Box",
  "Vibraphone", "Marimba", "Xylophone", "Tubular Bells", "Dulcimer", "Drawbar Organ", "Percussive Organ",
  "Rock Organ", "Church Organ", "Reed Organ", "Accordion", "Harmonica", "Tango Accordion",
  "Acoustic Guitar (nylon)", "Acoustic Guitar (steel)", "Electric Guitar (jazz)", "Electric Guitar (clean)",
  "Electric Guitar (muted)", "Overdriven Guitar", "Distortion Guitar", "Guitar Harmonics", "Acoustic Bass",
  "Electric Bass (finger)", "Electric Bass (pick)", "Fretless Bass", "Slap Bass 1", "Slap Bass 2", "Synth Bass 1",
  "Synth Bass 2", "Violin", "Viola", "Cello", "Contrabass", "Tremolo Strings", "Pizzicato Strings",
  "Orchestral Harp", "Timpani", "String Ensemble 1", "String Ensemble 2", "Synth Strings 1", "Synth Strings 2",
  "Choir Aahs", "Voice Oohs", "Synth Voice", "Orchestra Hit", "Trumpet", "Trombone", "Tuba", "Muted Trumpet",
  "French Horn", "Brass Section", "Synth Brass 1", "Synth Brass 2", "Soprano Sax", "Alto Sax", "Tenor Sax",
  "Baritone Sax", "Oboe", "English Horn", "Bassoon", "Clarinet", "Piccolo", "Flute", "Recorder", "Pan Flute",
  "Blown Bottle", "Shakuhachi", "Whistle", "Ocarina", "Lead 1 (square)", "Lead 2 (sawtooth)", "Lead 3 (calliope)",
  "Lead 4 (chiff)", "Lead 5 (charang)", "Lead 6 (voice)", "Lead 7 (fifths)", "Lead 8 (bass + lead)",
  "Pad 1 (new age)", "Pad 2 (warm)", "Pad 3 (polysynth)", "Pad 4 (choir)", "Pad 5 (bowed)", "Pad 6 (metallic)",
  "Pad 7 (halo)", "Pad 8 (sweep)", "FX 1 (rain)", "FX 2 (soundtrack)", "FX 3 (crystal)", "FX 4 (atmosphere)",
  "FX 5 (brightness)", "FX 6 (goblins)", "FX 7 (echoes)", "FX 8 (sci-fi)", "Sitar", "Banjo", "Shamisen", "Koto",
  "Kalimba", "Bagpipe", "Fiddle", "Shanai", "Tinkle Bell", "Agogo", "Steel Drums", "Woodblock", "Taiko Drum",
  "Melodic Tom", "Synth Drum", "Reverse Cymbal", "Guitar Fret Noise", "Breath Noise", "Seashore", "Bird Tweet",
  "Telephone Ring", "Helicopter", "Applause", "Gunshot"];
const LEVELS = { "-1": "calm", "0": "neutral", "1": "aroused" };
const $ = (id) => document.getElementById(id);

const S = {
  snap: null,            // the latest frame
  frameT: 0,             // its music time (s) …
  frameAt: 0,            // … and when it arrived (performance.now() ms)
  notes: new Map(),      // id → [id, instrument, pitch, velocity, time, duration]
  tokens: new Map(),     // window end time (s) → token
  band: null,            // band shown on the scalp
  layout: null,
  choices: null,
  ws: null,
  retry: 500,
  builtFor: "",          // instrument names the controls were built for
};

function musicNow() {
  if (!S.snap || !S.snap.running) return S.frameT;
  return S.frameT + (performance.now() - S.frameAt) / 1000;
}

function colourOf(name) {
  const names = Object.keys((S.snap && S.snap.instruments) || {});
  const i = Math.max(0, names.indexOf(name));
  return `hsl(${(i * 67 + 200) % 360} 75% 62%)`;
}

function zColour(z) {
  if (z === null || z === undefined) return "#3a3f4b";
  const a = Math.max(-1, Math.min(1, z / 3));
  return a >= 0 ? `rgb(${Math.round(60 + 195 * a)}, ${Math.round(70 + 40 * (1 - a))}, ${Math.round(90 * (1 - a))})`
                : `rgb(${Math.round(60 * (1 + a))}, ${Math.round(110 + 60 * -a)}, ${Math.round(120 + 135 * -a)})`;
}

function fmt(v, digits = 2) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits);
}

// ------------------------------------------------------------------------------------------------ messages

function say(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = kind || "";
}

async function send(cmd) {
  let body;
  try {
    const r = await fetch("/api/cmd", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(cmd),
    });
    body = await r.json();
  } catch (e) {
    say(`The service did not answer (${e.message}); is it still running?`, "error");
    return null;
  }
  if (body.ok) {
    say(`${body.cmd}: done${body.result && body.result.note ? " — " + body.result.note : ""}`, "ok");
  } else {
    say(body.message || "The command was refused.", "error");
  }
  return body;
}

// ------------------------------------------------------------------------------------------------ state

function apply(snap) {
  if (snap.full) {
    S.notes.clear();
    S.tokens.clear();
    if (snap.layout) S.layout = snap.layout;
    if (snap.choices) S.choices = snap.choices;
  }
  for (const row of snap.notes) S.notes.set(row[0], row);
  const ids = new Set(snap.notes.map((r) => r[0]));
  for (const [id, row] of S.notes) {
    if (row[4] > snap.t && !ids.has(id)) S.notes.delete(id);  // composed, then cancelled before it sounded
  }
  for (const [t, k] of snap.tokens) S.tokens.set(t, k);
  const horizon = snap.t - snap.history;
  for (const [id, row] of S.notes) if (row[4] + row[5] < horizon) S.notes.delete(id);
  for (const t of S.tokens.keys()) if (t < horizon) S.tokens.delete(t);
  S.snap = snap;
  S.frameT = snap.t;
  S.frameAt = performance.now();
  render(snap);
}

function render(snap) {
  document.body.classList.toggle("readonly", !!snap.readonly);
  $("history").textContent = fmt(snap.history, 0);
  $("stream").textContent = snap.stream ? `${snap.stream.name} · ${snap.stream.n_channels} ch @ ${fmt(snap.stream.sfreq, 0)} Hz` : "waiting for the EEG stream…";
  renderPlan(snap.music);
  renderBrain(snap.brain, snap.calibration);
  renderInstruments(snap.instruments);
  renderHealth(snap.health, snap.web);
  const last = [...S.tokens.entries()].pop();
  $("token").textContent = last ? last[1] : "–";
  buildChoices();
}

function renderPlan(m) {
  $("recording").hidden = !(m && m.recording);
  if (!m) return;
  $("chord").textContent = m.chord || "–";
  $("key").textContent = `${m.key} ${m.scale.replace("_", " ")}`;
  $("tempo").textContent = fmt(m.tempo, 1);
  $("beat").textContent = m.beat === null ? "–" : Math.floor(m.beat);
  $("level").textContent = m.level === null ? "–" : `${LEVELS[String(m.level)]}${m.centre ? " · " + m.centre + " " + (m.tonality || "") : ""}`;
  $("arousal").textContent = fmt(m.arousal);
  const bar = $("arousal-bar");
  const a = m.arousal || 0;
  bar.style.left = `${50 + Math.min(0, a) * 50}%`;
  bar.style.width = `${Math.abs(a) * 50}%`;
  $("mode").textContent = m.mode;
}

function renderBrain(b, calib) {
  const c = calib || { progress: 0, calibrating: true };
  $("calib").textContent = c.calibrating ? `${Math.round(c.progress * 100)} % of ${fmt(c.baseline_s, 0)} s` : "done";
  $("calib-bar").style.width = `${Math.round(c.progress * 100)}%`;
  if (!b) return;
  $("window").textContent = `window ${b.index} · t ${fmt(b.t_end, 1)} s`;
  const groups = b.groups;
  const bands = Object.keys(Object.values(groups)[0] ? Object.values(groups)[0].z : {});
  if (!S.band || !bands.includes(S.band)) S.band = bands.includes("alpha") ? "alpha" : bands[0];
  const bandBox = $("bands");
  if (bandBox.dataset.bands !== bands.join(",")) {
    bandBox.dataset.bands = bands.join(",");
    bandBox.replaceChildren(...bands.map((name) => {
      const btn = document.createElement("button");
      btn.textContent = name;
      btn.type = "button";
      btn.dataset.band = name;
      btn.onclick = () => { S.band = name; renderBrain(S.snap.brain, S.snap.calibration); };
      return btn;
    }));
  }
  for (const btn of bandBox.children) btn.classList.toggle("on", btn.dataset.band === S.band);
  // the table: one row per group, one column per band
  const table = $("groups");
  table.tHead.innerHTML = "<tr><th>group</th>" + bands.map((x) => `<th>${x}</th>`).join("") + "<th>good</th></tr>";
  const rows = Object.entries(groups).map(([name, g]) => {
    const cells = bands.map((x) => {
      const z = g.z[x];
      return `<td class="${z > 0 ? "pos" : z < 0 ? "neg" : ""}" data-testid="z-${name}-${x}">${fmt(z)}</td>`;
    });
    return `<tr><td>${name}${g.held ? " <span class=muted>(" + g.held + ")</span>" : ""}</td>${cells.join("")}<td>${g.n_good}</td></tr>`;
  });
  table.tBodies[0].innerHTML = rows.join("");
  const bad = new Map(b.bad.map(([ch, why]) => [ch, why]));
  $("bad").textContent = bad.size ? "bad: " + [...bad].map(([ch, why]) => `${ch} (${why})`).join(", ") : "";
  drawScalp(groups, bad);
}

function drawScalp(groups, bad) {
  const svg = $("scalp");
  const layout = S.layout;
  if (!layout || !layout.channels) return;
  const ns = "http://www.w3.org/2000/svg";
  if (svg.dataset.built !== "1") {
    svg.dataset.built = "1";
    const head = document.createElementNS(ns, "circle");
    head.setAttribute("r", "0.5"); head.setAttribute("class", "head");
    const nose = document.createElementNS(ns, "path");
    nose.setAttribute("d", "M -0.06 -0.495 L 0 -0.58 L 0.06 -0.495"); nose.setAttribute("class", "head");
    svg.append(head, nose);
    for (const ch of layout.channels) {
      const g = document.createElementNS(ns, "g");
      g.setAttribute("transform", `translate(${ch.x} ${-ch.y})`);
      const dot = document.createElementNS(ns, "circle");
      dot.setAttribute("r", "0.05"); dot.setAttribute("class", "ch"); dot.dataset.ch = ch.name;
      dot.dataset.testid = `ch-${ch.name}`;
      const title = document.createElementNS(ns, "title");
      dot.append(title);
      const label = document.createElementNS(ns, "text");
      label.textContent = ch.name.replace(/^EEG\s*/i, "").slice(0, 4);
      const cross = document.createElementNS(ns, "path");
      cross.setAttribute("d", "M -0.035 -0.035 L 0.035 0.035 M -0.035 0.035 L 0.035 -0.035");
      cross.setAttribute("class", "cross"); cross.style.display = "none";
      g.append(dot, label, cross);
      svg.append(g);
    }
  }
  for (const g of svg.querySelectorAll("g")) {
    const dot = g.querySelector("circle");
    const name = dot.dataset.ch;
    const ch = layout.channels.find((c) => c.name === name);
    const grp = ch && ch.group ? groups[ch.group] : null;
    const z = grp ? grp.z[S.band] : null;
    const isBad = bad.has(name);
    dot.style.fill = grp ? zColour(z) : "none";
    dot.classList.toggle("bad", isBad);
    g.querySelector(".cross").style.display = isBad ? "" : "none";
    dot.querySelector("title").textContent = `${name} · ${ch && ch.group ? ch.group : "no group"} · ${S.band} z ${fmt(z)}${isBad ? " · bad: " + bad.get(name) : ""}`;
  }
}

function renderInstruments(insts) {
  const box = $("instruments");
  const names = Object.keys(insts || {});
  if (S.builtFor !== names.join(",")) {
    S.builtFor = names.join(",");
    box.replaceChildren(...names.map(buildInstrument));
  }
  for (const name of names) {
    const i = insts[name];
    const el = box.querySelector(`[data-inst="${CSS.escape(name)}"]`);
    if (!el) continue;
    el.classList.toggle("silent", i.silent);
    el.querySelector(".mute").classList.toggle("on", i.muted);
    el.querySelector(".mute").textContent = i.muted ? "muted" : "mute";
    el.querySelector(".solo").classList.toggle("on", i.solo);
    el.querySelector(".notes").textContent = i.sounding.length ? "♪ " + i.sounding.join(" ") : "";
    const prog = el.querySelector(".prog");
    if (document.activeElement !== prog) prog.value = String(i.program);
    for (const [cls, key] of [[".low", "low"], [".high", "high"]]) {
      const input = el.querySelector(cls);
      if (document.activeElement !== input && !input.dataset.dirty) input.value = String(i[key]);
    }
  }
}

function buildInstrument(name) {
  const el = document.createElement("div");
  el.className = "inst";
  el.dataset.inst = name;
  el.style.setProperty("--c", colourOf(name));
  const label = document.createElement("span");
  label.className = "name"; label.textContent = name;
  const notes = document.createElement("span");
  notes.className = "notes";
  const mute = document.createElement("button");
  mute.className = "mute ctl-only"; mute.type = "button"; mute.dataset.testid = `mute-${name}`;
  mute.onclick = () => {
    const muted = S.snap.instruments[name] && S.snap.instruments[name].muted;
    send({ cmd: muted ? "unmute" : "mute", instrument: name });
  };
  const solo = document.createElement("button");
  solo.className = "solo ctl-only"; solo.type = "button"; solo.textContent = "solo"; solo.dataset.testid = `solo-${name}`;
  solo.onclick = () => {
    const on = S.snap.instruments[name] && S.snap.instruments[name].solo;
    send({ cmd: "solo", instrument: on ? null : name });
  };
  const prog = document.createElement("select");
  prog.className = "prog ctl-only"; prog.dataset.testid = `program-${name}`; prog.setAttribute("aria-label", `${name} program`);
  GM.forEach((g, k) => { const o = document.createElement("option"); o.value = String(k); o.textContent = `${k} ${g}`; prog.append(o); });
  prog.onchange = () => send({ cmd: "set_program", instrument: name, program: Number(prog.value) });
  const reg = document.createElement("form");
  reg.className = "ctl ctl-only";
  const low = document.createElement("input");
  low.type = "number"; low.className = "low"; low.dataset.testid = `low-${name}`; low.setAttribute("aria-label", `${name} lowest note`);
  const high = document.createElement("input");
  high.type = "number"; high.className = "high"; high.dataset.testid = `high-${name}`; high.setAttribute("aria-label", `${name} highest note`);
  for (const input of [low, high]) input.oninput = () => { input.dataset.dirty = "1"; };
  const set = document.createElement("button");
  set.textContent = "register"; set.dataset.testid = `register-${name}`;
  reg.append(low, high, set);
  reg.onsubmit = (e) => {
    e.preventDefault();
    delete low.dataset.dirty; delete high.dataset.dirty;
    send({ cmd: "set_register", instrument: name, low: Number(low.value), high: Number(high.value) });
  };
  el.append(label, mute, solo, prog, reg, notes);
  return el;
}

function renderHealth(h, web) {
  if (!h) return;
  const lat = h.latency_ms || {};
  const rows = [
    ["stream", h.connected ? `${fmt(h.rate_hz, 0)} Hz` : "not connected", !h.connected],
    ["processing p50 / p99", `${fmt(lat.processing_p50)} / ${fmt(lat.processing_p99)} ms`, lat.processing_p99 > 20],
    ["MIDI lateness p99", `${fmt(lat.midi_late_p99)} ms`, lat.midi_late_p99 > 5],
    ["dropped windows", String(h.dropped_windows), h.dropped_windows > 0],
    ["dropped chunks", String((h.queues || {}).source_dropped_chunks || 0), ((h.queues || {}).source_dropped_chunks || 0) > 0],
    ["reconnects", String(h.reconnects), h.reconnects > 0],
    ["late notes", String((h.scheduler || {}).late_dispatch || 0), ((h.scheduler || {}).late_dispatch || 0) > 0],
    ["uptime", `${fmt(h.uptime_s / 60, 1)} min`, false],
  ];
  for (const n of h.notices || []) rows.push(["notice", n, true]);
  $("health-list").innerHTML = rows.map(([k, v, warn]) =>
    `<dt>${k}</dt><dd class="${warn ? "warn" : ""}" data-testid="health-${k.split(" ")[0]}">${escapeHtml(v)}</dd>`).join("");
  if (web) $("viewers").textContent = `${web.viewers} viewer${web.viewers === 1 ? "" : "s"}`;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function buildChoices() {
  if (!S.choices || $("in-key").options.length) return;
  const fill = (sel, values) => sel.replaceChildren(...values.map((v) => { const o = document.createElement("option"); o.value = v; o.textContent = v.replace("_", " "); return o; }));
  fill($("in-key"), S.choices.keys);
  fill($("in-scale"), S.choices.scales);
  fill($("in-mode"), S.choices.modes);
  const m = S.snap && S.snap.music;
  if (m) { $("in-key").value = m.key; $("in-scale").value = m.scale; $("in-mode").value = m.mode; $("in-tempo").value = fmt(m.tempo, 0); }
}

// ------------------------------------------------------------------------------------------------ drawing

function fitCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.round(canvas.clientWidth * dpr), h = Math.round(canvas.clientHeight * dpr);
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return [ctx, canvas.clientWidth, canvas.clientHeight];
}

function drawRoll() {
  const snap = S.snap;
  const [ctx, w, h] = fitCanvas($("roll"));
  ctx.clearRect(0, 0, w, h);
  if (!snap) return;
  const insts = snap.instruments || {};
  const names = Object.keys(insts);
  if (!names.length) return;
  const now = musicNow();
  const ahead = 2.0, span = snap.history + ahead;
  const x0 = 6.5 * parseFloat(getComputedStyle(document.documentElement).fontSize) * 0.75;
  const xOf = (t) => x0 + ((t - (now - snap.history)) / span) * (w - x0);
  const lane = h / names.length;
  ctx.font = `${Math.max(11, Math.min(16, lane / 3))}px system-ui`;
  names.forEach((name, k) => {
    const top = k * lane;
    ctx.fillStyle = k % 2 ? "#121826" : "#0f1420";
    ctx.fillRect(0, top, w, lane);
    ctx.fillStyle = insts[name].silent ? "#6b7588" : colourOf(name);
    ctx.fillText(name, 6, top + 16);
  });
  const rows = new Map(names.map((n, k) => [n, k]));
  for (const row of S.notes.values()) {
    const [, inst, pitch, vel, t, dur] = row;
    const k = rows.get(inst);
    if (k === undefined || t + dur < now - snap.history || t > now + ahead) continue;
    const i = insts[inst];
    const range = Math.max(12, i.high - i.low + 1);
    const y = k * lane + lane * (1 - (pitch - i.low + 1) / range);
    const x1 = xOf(t), x2 = Math.max(x1 + 2, xOf(t + dur));
    ctx.globalAlpha = t > now ? 0.35 : 0.45 + 0.55 * (vel / 127);
    ctx.fillStyle = colourOf(inst);
    ctx.fillRect(x1, y, x2 - x1, Math.max(2, lane / range));
  }
  ctx.globalAlpha = 1;
  const xn = xOf(now);
  ctx.strokeStyle = "#ffffff"; ctx.lineWidth = 1.5;
  ctx.beginPath(); ctx.moveTo(xn, 0); ctx.lineTo(xn, h); ctx.stroke();
}

function drawTimeline() {
  const snap = S.snap;
  const [ctx, w, h] = fitCanvas($("timeline"));
  ctx.clearRect(0, 0, w, h);
  if (!snap) return;
  const now = musicNow(), span = snap.history;
  const xOf = (t) => ((t - (now - span)) / span) * w;
  const entries = [...S.tokens.entries()].sort((a, b) => a[0] - b[0]);
  if (!entries.length) {
    ctx.fillStyle = "#8b96aa"; ctx.font = "14px system-ui";
    ctx.fillText("no brain tokens (classic mode: run with --mode learned for the encoder's tokens)", 8, h / 2);
    return;
  }
  ctx.font = "12px system-ui";
  entries.forEach(([t, k], j) => {
    const next = j + 1 < entries.length ? entries[j + 1][0] : now;
    const a = xOf(t), b = xOf(next);
    ctx.fillStyle = `hsl(${(k * 137.5) % 360} 65% 50%)`;
    ctx.fillRect(a, 4, Math.max(1, b - a - 1), h - 8);
    if (b - a > 18) { ctx.fillStyle = "#000"; ctx.fillText(String(k), a + 3, h / 2 + 4); }
  });
}

function frame() {
  drawRoll();
  drawTimeline();
  requestAnimationFrame(frame);
}

// ------------------------------------------------------------------------------------------------ link

async function connect() {
  try {
    const r = await fetch("/api/state", { credentials: "same-origin" });
    const body = await r.json();
    if (!r.ok) { say(body.message || `The service refused the page (${r.status}).`, "error"); setLink("down"); return; }
    apply(body);
  } catch (e) {
    setLink("down");
    setTimeout(connect, Math.min(S.retry *= 2, 5000));
    return;
  }
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  S.ws = ws;
  ws.onopen = () => { S.retry = 500; setLink("live"); };
  let unacked = 0;
  ws.onmessage = (ev) => {
    const snap = JSON.parse(ev.data);
    apply(snap);
    // Acknowledge every second frame (an ack covers all frames up to it): the service sends a tab only a few
    // frames ahead of its acks, so a slow tab gets fewer frames and a frozen one is let go.
    if (++unacked >= 2 || snap.full) { ws.send(JSON.stringify({ ack: snap.seq })); unacked = 0; }
  };
  ws.onclose = () => {
    setLink("down");
    setTimeout(connect, Math.min(S.retry *= 2, 5000));
  };
}

function setLink(state) {
  document.body.classList.remove("connecting", "live", "down");
  document.body.classList.add(state);
  $("link").textContent = { live: "live", down: "reconnecting…", connecting: "connecting…" }[state];
}

function wire() {
  $("f-tempo").onsubmit = (e) => { e.preventDefault(); send({ cmd: "set_tempo", bpm: Number($("in-tempo").value) }); };
  $("f-key").onsubmit = (e) => { e.preventDefault(); send({ cmd: "set_key", key: $("in-key").value, scale: $("in-scale").value }); };
  $("f-mode").onsubmit = (e) => { e.preventDefault(); send({ cmd: "set_mode", mode: $("in-mode").value }); };
  $("f-temp").onsubmit = (e) => { e.preventDefault(); send({ cmd: "set_temperature", temperature: Number($("in-temp").value) }); };
  $("f-rec").onsubmit = (e) => {
    e.preventDefault();
    const label = $("in-label").value.trim();
    send(label ? { cmd: "start_recording", label } : { cmd: "start_recording" });
  };
  $("rec-stop").onclick = () => send({ cmd: "stop_recording" });
  $("panic").onclick = () => send({ cmd: "panic" });
  connect();
  requestAnimationFrame(frame);
}

document.addEventListener("DOMContentLoaded", wire);
