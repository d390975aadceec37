// facestack console: plain JavaScript against the gateway's /v1 API (docs/gateway.md). No build step,
// no external resources. The API key lives in sessionStorage only (forgotten when the tab closes).
"use strict";

const KEY_STORE = "facestack.apiKey";
const API = new URL("../v1/", document.baseURI);  // served at /console/: the API is beside it
const $ = (id) => document.getElementById(id);

// ---- small DOM helpers ----------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
// Replaces a node's children, skipping the null/false of optional parts.
function put(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}
const fixed = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
const table = (head, rows) => el("div", { class: "table-wrap" }, el("table", {},
  el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
  el("tbody", {}, rows)));
const definitions = (pairs) => el("dl", {}, pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));

// ---- API key --------------------------------------------------------------------------------------
function apiKey() { return sessionStorage.getItem(KEY_STORE) || ""; }
function showKeyState() {
  $("key-state").textContent = apiKey() ? "Key set for this tab." : "No key set.";
}
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
  $("api-key").value = "";
  showKeyState();
  clearMessages();
  refreshPanel();
});
$("forget-key").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); showKeyState(); });

// ---- calling the API; every error answer is shown with its code and detail -----------------------
class Problem extends Error {
  constructor(status, body, retryAfter) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status; this.body = body; this.retryAfter = retryAfter;
  }
}

async function call(method, path, { json, form } = {}) {
  const headers = { "X-API-Key": apiKey() };
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) body = form;
  let response;
  try {
    response = await fetch(new URL(path, API), { method, headers, body });
  } catch (err) {
    throw new Problem(0, { code: "network_error", detail: `the gateway could not be reached (${err.message})` });
  }
  const text = await response.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch { data = { detail: text.slice(0, 300) }; }
  if (!response.ok) throw new Problem(response.status, data, response.headers.get("Retry-After"));
  return data;
}

const EXPLAIN = {
  401: "The API key is missing or not recognised. Paste a valid key above (make run prints one; " +
       "python -m gateway.auth new mints more).",
  403: "The key is valid but lacks the scope for this action: \"verify\" for detect, verify and identify; " +
       "\"enrol\" for subjects and photos; \"admin\" for creating and erasing galleries.",
  429: "Too many requests: this key's rate limit, or the server's queue, is full. Nothing was done; try again",
  503: "A backend (Triton or Milvus) is unavailable; try again",
};

// Codes worth a sentence more than their detail (client-side codes have no HTTP status).
const EXPLAIN_CODE = {
  camera_denied: "The browser refused this page the camera, so nothing was captured or sent. Allow the camera " +
    "for this site (the camera icon in the address bar, or the browser's site settings), then start again.",
  webcam_unavailable: "No camera could be opened. The camera works only over https or from localhost, " +
    "needs a connected camera that no other application holds, and needs the browser's permission.",
  challenge_used: "A challenge is answered once (and a passed one binds one verify): start a new challenge.",
  challenge_not_found: "The challenge is unknown, belongs to another tenant, or has been purged: start a new one.",
  liveness_failed: "The verify was refused: the liveness challenge was not passed, was already used for a verify, " +
    "expired, or the first photo is not the person who passed it.",
};

// Messages belong to the last action: a new one clears them.
function clearMessages() { $("problem").hidden = true; $("receipt").hidden = true; put($("enrol-result")); }

function showProblem(err) {
  if (!(err instanceof Problem)) throw err;
  const body = err.body;
  const box = $("problem");
  const explain = EXPLAIN[err.status] || EXPLAIN_CODE[body.code];
  const when = err.retryAfter ? ` in ${err.retryAfter} s (Retry-After).` : ".";
  put(box,
    el("p", {}, el("strong", {}, err.status ? `HTTP ${err.status} ` : ""), el("span", { class: "code" }, body.code || "error"),
      ": ", el("span", { class: "detail" }, body.detail || body.title || "")),
    explain ? el("p", { class: "explain" }, explain + (err.status === 429 || err.status === 503 ? when : "")) : null,
    Array.isArray(body.errors) && body.errors.length ? el("ul", { class: "errors" }, body.errors.map(problemItem)) : null,
    body.request_id ? el("p", { class: "hint" }, "request id ", el("code", {}, body.request_id)) : null,
  );
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
}

function problemItem(item) {
  if (item.loc) return el("li", {}, el("code", {}, item.loc.join(".")), `: ${item.msg}`);
  return el("li", {}, el("code", {}, item.field || ""), " ", el("span", { class: "code" }, item.code || ""),
    `: ${withoutField(item)}`);
}

// "image[1]: no face found" -> "no face found" where the field is shown beside it anyway.
const withoutField = (item) => (item.detail || "").replace(`${item.field}: `, "");

// Runs an action for a form or button: clears old messages, shows any problem.
async function run(action) {
  clearMessages();
  try { await action(); } catch (err) { showProblem(err); }
}

// ---- tabs (arrow keys, Home/End move between them) -----------------------------------------------
const tabs = [...document.querySelectorAll("[role=tab]")];
function selectTab(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  if (tab.id !== "tab-liveness") stopCapture();
  clearMessages();
  refreshPanel();
}

// Loads what the visible panel shows (nothing is fetched for a panel nobody looks at).
function refreshPanel() {
  if (!apiKey()) return;
  if (!$("panel-galleries").hidden) run(loadGalleries);
  if (!$("panel-subjects").hidden) run(loadSubjects);
  if (!$("panel-identify").hidden) fetchGalleries().catch(() => {});  // suggestions only: verify keys may not list
}
for (const tab of tabs) {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const i = tabs.indexOf(tab);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    const target = tabs[(next + tabs.length) % tabs.length];
    target.focus();
    selectTab(target);
  });
}

// ---- photos with faces drawn ---------------------------------------------------------------------
function loadImage(file) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the browser cannot display this file"));
    image.src = URL.createObjectURL(file);
  });
}

const LANDMARK_COLOURS = ["#00a2ff", "#00d26a", "#ff2d55", "#ffb000", "#b64cff"];  // eyes, nose, mouth corners
const LANDMARK_NAMES = ["right eye", "left eye", "nose tip", "right mouth corner", "left mouth corner"];
const legend = () => el("p", { class: "legend hint" }, "Yellow box: the face; dots (the subject's right is the image's left): ",
  LANDMARK_NAMES.map((name, k) => el("span", {}, el("i", { style: `background:${LANDMARK_COLOURS[k]}` }), name)));

// A canvas with the photo, each face's box (numbered) and its five landmarks.
async function facePicture(file, faces, caption) {
  const canvas = el("canvas", { "data-faces": faces.length, role: "img",
    "aria-label": `${caption}: ${faces.length} face${faces.length === 1 ? "" : "s"} marked` });
  try {
    const image = await loadImage(file);
    canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0);
    const line = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 250));
    faces.forEach((face, i) => {
      const [x1, y1, x2, y2] = face.box;
      ctx.lineWidth = line; ctx.strokeStyle = "#ffe600";
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.font = `bold ${line * 8}px sans-serif`; ctx.fillStyle = "#ffe600";
      ctx.fillText(String(i + 1), x1 + line, y1 - line * 2 > line * 8 ? y1 - line * 2 : y1 + line * 9);
      face.landmarks.forEach(([x, y], k) => {
        ctx.beginPath(); ctx.fillStyle = LANDMARK_COLOURS[k];
        ctx.arc(x, y, line * 1.5, 0, 2 * Math.PI); ctx.fill();
      });
    });
  } catch (err) { canvas.setAttribute("aria-label", `${caption}: ${err.message}`); }
  return el("figure", {}, canvas, el("figcaption", {}, caption));
}

function selectionWords(face) {
  const s = face && face.selection;
  if (!s) return "";
  return `${s.reason} (${s.faces_found} face${s.faces_found === 1 ? "" : "s"} found, policy "${s.policy}")`;
}

// "about 1 in 1,000": a rate in words.
function oneIn(rate) {
  if (!rate) return null;
  return `about 1 in ${Math.round(1 / rate).toLocaleString("en")}`;
}

function pointWords(point, kind) {
  const estimate = point.calibrated ? "" : " This rate is an estimate (outside the measured range, or your own threshold).";
  if (kind === "identify" && point.fpir) {
    return `Operating point ${point.name}: ${oneIn(point.fpir)} people who are not enrolled would be named as ` +
      `someone in a gallery of ${Number(point.gallery_size).toLocaleString("en")} templates at this setting ` +
      `(threshold ${fixed(point.threshold)}).${estimate}`;
  }
  if (point.fmr) {
    return `Operating point ${point.name}: ${oneIn(point.fmr)} different people would match at this setting ` +
      `(threshold ${fixed(point.threshold)}).${estimate}`;
  }
  return `Operating point ${point.name}: threshold ${fixed(point.threshold)}.${estimate}`;
}

// Similarity on a -1..1 scale with the threshold marked.
function scale(similarity, threshold) {
  const pos = (x) => `${Math.max(0, Math.min(100, ((x + 1) / 2) * 100)).toFixed(1)}%`;
  return el("div", { class: "scale", role: "img", "aria-label": `similarity ${fixed(similarity)}, threshold ${fixed(threshold)}` },
    el("div", { class: "fill", style: `width:${pos(similarity ?? -1)}` }),
    el("div", { class: "mark", style: `left:${pos(threshold)}`, title: "threshold" }));
}

function file(id) {
  const f = $(id).files[0];
  if (!f) throw new Problem(0, { code: "validation_error", detail: `choose a photo for "${labelOf(id)}"` });
  return f;
}
const labelOf = (id) => (document.querySelector(`label[for="${id}"]`) || {}).textContent || id;

// ---- Try: verify -----------------------------------------------------------------------------------
$("verify-form").addEventListener("submit", (event) => { event.preventDefault(); run(async () => {
  const probe = file("verify-probe"), reference = file("verify-reference");
  const form = new FormData();
  form.append("probe", probe); form.append("reference", reference);
  if ($("verify-point").value) form.append("operating_point", $("verify-point").value);
  const challengeId = $("verify-liveness").value.trim();
  if (challengeId) form.append("liveness_challenge", challengeId);
  const out = $("verify-result");
  put(out, el("p", {}, "Comparing…"));
  try {
    const r = await call("POST", "verify", { form });
    put(out,
      el("p", { class: `decision ${r.match ? "yes" : "no"}`, id: "verify-decision" },
        r.match ? "Same person" : "Not the same person"),
      el("p", {}, `Similarity ${fixed(r.similarity)} ${r.match ? "≥" : "<"} threshold ${fixed(r.threshold)}`),
      scale(r.similarity, r.threshold),
      el("p", { class: "point-words" }, pointWords(r.operating_point, "verify")),
      r.liveness ? el("p", { id: "verify-liveness-outcome" }, `Liveness challenge ${r.liveness.challenge_id} passed ` +
        `and is now used up: the first photo is its person (cosine ${fixed(r.liveness.similarity)} to its frame 0).`) : null,
      el("div", { class: "photos" },
        await facePicture(probe, [r.probe_face], `First photo: ${selectionWords(r.probe_face)}`),
        await facePicture(reference, [r.reference_face], `Second photo: ${selectionWords(r.reference_face)}`)),
      legend(),
      el("p", { class: "hint" }, `Model ${r.model.embedder} (${r.model.name} v${r.model.version}); request ${r.request_id}`));
    if (r.liveness) $("verify-liveness").value = "";  // it binds one verify: the next one needs a new challenge
  } catch (err) { put(out); throw err; }
}); });

// ---- Try: detect -----------------------------------------------------------------------------------
$("detect-form").addEventListener("submit", (event) => { event.preventDefault(); run(async () => {
  const image = file("detect-image");
  const form = new FormData();
  form.append("image", image); form.append("max_faces", $("detect-max").value || "16");
  const out = $("detect-result");
  put(out, el("p", {}, "Detecting…"));
  try {
    const r = await call("POST", "detect", { form });
    const rows = r.faces.map((f, i) => el("tr", {},
      el("td", { class: "num" }, i + 1), el("td", { class: "num" }, fixed(f.score, 2)),
      el("td", { class: "num" }, fixed(f.quality.face_size, 0)), el("td", { class: "num" }, fixed(f.quality.sharpness, 0)),
      el("td", { class: "num" }, fixed(f.quality.yaw, 0)), el("td", { class: "num" }, fixed(f.quality.pitch, 0)),
      el("td", { class: "num" }, fixed(f.quality.roll, 0)), el("td", { class: "num" }, fixed(f.quality.brightness, 0))));
    put(out,
      el("p", { class: "decision", id: "detect-count" }, `${r.faces.length} face${r.faces.length === 1 ? "" : "s"} found`),
      await facePicture(image, r.faces, `${r.image.width} × ${r.image.height} px; boxes numbered as in the table`),
      table(["#", "score", "size px", "sharpness", "yaw °", "pitch °", "roll °", "brightness"], rows),
      el("p", { class: "hint" }, "Gates for a decision or an enrolment: size ≥ the minimum (40 px by default), " +
        "sharpness ≥ 15, |yaw| and |pitch| ≤ 50°, brightness 25–235."));
  } catch (err) { put(out); throw err; }
}); });

// ---- Try: identify ---------------------------------------------------------------------------------
$("identify-form").addEventListener("submit", (event) => { event.preventDefault(); run(async () => {
  const probe = file("identify-probe");
  const form = new FormData();
  form.append("probe", probe); form.append("gallery", $("identify-gallery").value.trim());
  form.append("top_k", $("identify-topk").value || "5");
  const out = $("identify-result");
  put(out, el("p", {}, "Searching…"));
  try {
    const r = await call("POST", "identify", { form });
    const rows = r.candidates.map((c, i) => el("tr", {},
      el("td", { class: "num" }, i + 1), el("td", {}, c.subject_id), el("td", { class: "num" }, fixed(c.similarity)),
      el("td", {}, c.similarity >= r.threshold ? "at or above threshold" : "below threshold")));
    put(out,
      el("p", { class: `decision ${r.decision === "match" ? "yes" : "no"}`, id: "identify-decision" },
        r.decision === "match" ? `Match: ${r.subject_id}` : "Unknown: nobody in the gallery reached the threshold"),
      el("p", {}, `Best similarity ${fixed(r.similarity)} against threshold ${fixed(r.threshold)}; ` +
        `${r.templates_searched} template${r.templates_searched === 1 ? "" : "s"} in gallery ${r.gallery}.`),
      scale(r.similarity, r.threshold),
      el("p", { class: "point-words" }, pointWords(r.operating_point, "identify")),
      rows.length ? table(["rank", "subject", "similarity", ""], rows) : el("p", {}, "No candidates."),
      await facePicture(probe, [r.probe_face], `Face searched: ${selectionWords(r.probe_face)}`));
  } catch (err) { put(out); throw err; }
}); });

// ---- Try: liveness (docs/liveness.md) ----------------------------------------------------------------
// Pacing: time to face the camera, then each step's frames spread over its time (a person needs a moment
// to read and move). Frames: one frontal, then PER_STEP per action, never more than the challenge's max_frames.
const READY_MS = 1500, STEP_MS = 3000, PER_STEP = 3;
const POSE_WORDS = { neutral: "as frame 0", turn_left: "turned to their left", turn_right: "turned to their right",
  look_up: "chin up", look_down: "chin down" };
const LIVENESS_WORDS = { live: "Live", not_live: "Not live",
  inconclusive: "Inconclusive: capture again with a new challenge" };
let challenge = null;  // the issued challenge, with `until`: its deadline by this browser's clock
let capture = null;  // the running capture's AbortController
let clock = null;  // the time-left ticker

const timeLeft = (c) => Math.max(0, Math.ceil((c.until - Date.now()) / 1000));
function tick() {
  const left = timeLeft(challenge);
  $("liveness-time").textContent = left ? `Time left: ${left} s.` : "Time is up: start a new challenge.";
  if (!left) { clearInterval(clock); clock = null; }
}

// Ends a capture in progress (Cancel, another tab): the camera goes off, nothing is sent.
function stopCapture() {
  if (capture) capture.abort();
  capture = null;
  stopCamera($("liveness-video"));
  $("liveness-video").hidden = true;
}

function endChallenge() {
  stopCapture();
  clearInterval(clock); clock = null;
  $("liveness-run").hidden = true;
}

const pause = (ms, signal) => new Promise((resolve, reject) => {
  if (signal.aborted) { reject(signal.reason); return; }
  const timer = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(timer); reject(new DOMException("cancelled", "AbortError")); },
    { once: true });
});

// The line said to the person (announced: aria-live), and a step's instruction added to the list of steps.
function instruct(text, step) {
  $("liveness-instruction").textContent = text;
  if (step === undefined) return;
  for (const li of $("liveness-steps").children) li.removeAttribute("aria-current");
  $("liveness-steps").append(el("li", { "aria-current": "step" }, step));
}

$("liveness-start").addEventListener("click", () => run(async () => {
  endChallenge();
  put($("liveness-result"));
  const issued = await call("POST", "liveness/challenges");
  // The deadline by this browser's clock (the server's may differ): a little short, never long.
  challenge = { ...issued, until: Date.now() + issued.deadline_s * 1000 };
  const n = issued.actions.length;
  $("liveness-ready").textContent = `Challenge ready: ${n} steps. Press Begin with your face in good light: the ` +
    "camera opens, you look at it, then each step is shown when it is time for it.";
  put($("liveness-steps")); instruct("");
  $("liveness-progress").textContent = "";
  $("liveness-begin").disabled = false;
  $("liveness-actions").hidden = false;
  $("liveness-run").hidden = false;
  tick(); clock = setInterval(tick, 500);
  $("liveness-begin").focus();
}));

$("liveness-cancel").addEventListener("click", () => { endChallenge(); $("liveness-start").focus(); });

$("liveness-begin").addEventListener("click", () => run(async () => {
  const c = challenge;  // a new challenge started meanwhile must not relabel this one's answer
  if (!c) return;
  $("liveness-begin").disabled = true;
  const frames = await captureFrames(c);
  if (!frames) return;  // cancelled
  instruct("Done. Sending the frames…");
  const form = new FormData();
  form.append("nonce", c.nonce);
  frames.forEach((f) => form.append("frames", f));
  try {
    const r = await call("POST", `liveness/challenges/${encodeURIComponent(c.challenge_id)}/frames`, { form });
    instruct("Done: the gateway's decision is below.");
    put($("liveness-result"), ...livenessResult(r, frames, c));
  } finally {  // answered (or refused): a challenge is answered once
    clearInterval(clock); clock = null;
    $("liveness-time").textContent = `Frames sent with ${timeLeft(c)} s left.`;
    $("liveness-ready").textContent = "Frames sent. Start a new challenge to try again.";
    $("liveness-actions").hidden = true;
  }
}));

// Opens the camera, says each step when it is due and takes the frames; null when cancelled.
async function captureFrames(c) {
  const video = $("liveness-video");
  const perStep = Math.max(1, Math.min(PER_STEP, Math.floor((c.max_frames - 1) / c.actions.length)));
  const total = 1 + perStep * c.actions.length;
  capture = new AbortController();
  const signal = capture.signal;
  let stream = null;
  try {
    stream = await openCamera();
    signal.throwIfAborted();  // cancelled while the browser asked for the permission
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    const frames = [];
    const take = async () => {
      frames.push(await snapshot(video, `frame-${frames.length}.jpg`));
      $("liveness-progress").textContent = `${frames.length} of ${total} frames taken.`;
    };
    instruct("Look straight at the camera.");
    await pause(READY_MS, signal);
    await take();
    for (let step = 0; step < c.actions.length; step++) {
      instruct(`Step ${step + 1} of ${c.actions.length}: ${c.instructions[step]}, and hold it.`, c.instructions[step]);
      for (let k = 0; k < perStep; k++) {
        await pause(STEP_MS / perStep, signal);
        await take();
      }
    }
    return frames;
  } catch (err) {
    $("liveness-begin").disabled = false;  // the challenge is still unanswered: Begin may try it again
    if (signal.aborted) { instruct("Cancelled: nothing was sent."); return null; }
    instruct("");
    throw err;  // e.g. camera_denied: allow the camera, then Begin again
  } finally {  // the camera goes off as soon as the frames are taken
    if (stream) stream.getTracks().forEach((t) => t.stop());
    if (video.srcObject === stream) { video.srcObject = null; video.hidden = true; }
    if (capture && capture.signal === signal) capture = null;
  }
}

// Which estimator read the poses (the answer's pose_source; docs/liveness.md).
const POSE_SOURCES = { "mesh": "the face mesh (468 points)", "five-point": "the five face landmarks" };

// The decision in words, the steps (which frame first showed each) and every frame's pose against frame 0.
function livenessResult(r, frames, c) {
  const instruction = Object.fromEntries(c.actions.map((a, i) => [a, c.instructions[i]]));
  const evidence = Object.fromEntries(r.frames.map((f) => [f.index, f]));
  const steps = r.steps.map((s, i) => el("tr", { "data-step": s.action },
    el("td", { class: "num" }, i + 1), el("td", {}, instruction[s.action] || s.action),
    el("td", {}, s.passed ? "done" : "not done"), el("td", {}, s.frame === null ? "–" : `frame ${s.frame}`)));
  const rows = frames.map((file, i) => {
    const f = evidence[i] || {};
    const pointed = r.frame === i;
    return el("tr", { "data-frame": i, class: pointed ? "pointed" : null },
      el("td", { class: "num" }, i),
      el("td", {}, el("img", { class: "thumb", src: URL.createObjectURL(file), alt: `frame ${i} as sent` })),
      el("td", { class: "num" }, f.faces ?? "–"),
      el("td", { class: "num" }, fixed(f.yaw, 1)), el("td", { class: "num" }, fixed(f.pitch, 1)),
      el("td", { class: "num" }, fixed(f.delta_yaw, 1)), el("td", { class: "num" }, fixed(f.delta_pitch, 1)),
      el("td", {}, f.pose ? POSE_WORDS[f.pose] || f.pose : "–"), el("td", { class: "num" }, fixed(f.similarity)),
      el("td", {}, pointed ? `← ${r.reason}` : ""));
  });
  return [
    el("p", { class: `decision ${r.decision === "live" ? "yes" : "no"}`, id: "liveness-decision" },
      LIVENESS_WORDS[r.decision]),
    el("p", { id: "liveness-reason" }, "Reason ", el("span", { class: "code" }, r.reason), `: ${r.detail}.`),
    r.decision === "live" ? el("div", { class: "row" },
      el("button", { type: "button", onclick: () => bindToVerify(r.challenge_id) }, "Verify with this challenge"),
      el("span", { class: "hint" }, "binds one verify of this person, within minutes")) : null,
    el("h3", {}, "Steps asked, in order"),
    table(["step", "asked", "", "first shown in"], steps),
    el("h3", {}, "Frames sent, with the pose the gateway measured"),
    r.frames.length ? null : el("p", {}, "The gateway did not examine the frames (see the reason)."),
    table(["frame", "", "faces", "yaw °", "pitch °", "Δ yaw °", "Δ pitch °", "reads as", "cosine to frame 0", ""], rows),
    el("p", { class: "hint", id: "liveness-rule" }, `Frame 0 is the reference. Poses read from ` +
      `${POSE_SOURCES[r.pose_source] || r.pose_source}. A turn counts once the yaw moved ${r.yaw_deg ?? c.yaw_deg}° ` +
      `from frame 0, ${r.pitch_deg == null ? "a nod is not judged (turns only)" :
        `a look up or down once the pitch moved ${r.pitch_deg}°`}; every frame must be frame 0's ` +
      `person (cosine ≥ ${fixed(r.identity_threshold)}, ${r.identity_operating_point}). Challenge ` +
      `${r.challenge_id}; model ${r.model.embedder || "–"}; request ${r.request_id}.`),
  ];
}

function bindToVerify(id) {
  $("verify-liveness").value = id;
  selectTab($("tab-verify"));
  $("verify-probe").focus();
}

// ---- Operate: galleries ----------------------------------------------------------------------------
const seg = encodeURIComponent;
let galleries = [];

function parseMetadata(id) {
  const text = $(id).value.trim();
  if (!text) return undefined;
  try {
    const value = JSON.parse(text);
    if (value && typeof value === "object" && !Array.isArray(value)) return value;
  } catch { /* reported below */ }
  throw new Problem(0, { code: "validation_error", detail: `${labelOf(id)}: not a JSON object` });
}

function showReceipt(receipt) {
  const what = receipt.operation === "erase_gallery" ? `gallery ${receipt.gallery_id}`
    : receipt.operation === "erase_subject" ? `subject ${receipt.subject_id} of gallery ${receipt.gallery_id}`
    : `face ${receipt.face_id}`;
  const box = $("receipt");
  put(box, el("p", {}, el("strong", {}, `Erased ${what}.`)), definitions([
    ["receipt", el("code", {}, receipt.receipt_id)], ["operation", receipt.operation], ["tenant", receipt.tenant],
    ["subjects deleted", receipt.subjects_deleted], ["templates deleted", receipt.templates_deleted],
    ["templates remaining", receipt.remaining_templates], ["erased at", receipt.erased_at],
    ["request id", el("code", {}, receipt.request_id)]]));
  box.hidden = false;
}

// The tenant's galleries, for the identify field's suggestions and the subjects panel's choice.
async function fetchGalleries() {
  const page = await call("GET", "galleries?limit=1000");
  galleries = page.items;
  put($("gallery-names"), ...galleries.map((g) => el("option", { value: g.gallery_id })));
  const chosen = $("subjects-gallery").value;
  put($("subjects-gallery"), ...galleries.map((g) => el("option", { value: g.gallery_id }, g.gallery_id)));
  if (galleries.some((g) => g.gallery_id === chosen)) $("subjects-gallery").value = chosen;
  return page;
}

async function loadGalleries() {
  if (!apiKey()) return;
  const page = await fetchGalleries();
  const detailed = await Promise.all(galleries.map((g) => call("GET", `galleries/${seg(g.gallery_id)}`).catch(() => g)));
  const rows = detailed.map((g) => el("tr", { "data-gallery": g.gallery_id },
    el("td", {}, g.gallery_id), el("td", {}, g.embedder), el("td", { class: "num" }, g.subjects ?? "–"),
    el("td", { class: "num" }, g.templates ?? "–"), el("td", {}, g.created_at.slice(0, 19).replace("T", " ")),
    el("td", {}, el("div", { class: "row" },
      el("button", { type: "button", onclick: () => openSubjects(g.gallery_id),
        "aria-label": `Subjects of gallery ${g.gallery_id}` }, "Subjects"),
      el("button", { type: "button", class: "danger", onclick: () => eraseGallery(g.gallery_id),
        "aria-label": `Erase gallery ${g.gallery_id}` }, "Erase")))));
  put($("galleries-list"),
    el("p", {}, `${page.total} galler${page.total === 1 ? "y" : "ies"}`),
    rows.length ? table(["gallery", "embedder", "subjects", "templates", "created (UTC)", ""], rows) : null);
}

$("galleries-refresh").addEventListener("click", () => run(loadGalleries));
$("gallery-form").addEventListener("submit", (event) => { event.preventDefault(); run(async () => {
  const body = { gallery_id: $("gallery-id").value.trim(), embedder: $("gallery-embedder").value };
  const metadata = parseMetadata("gallery-metadata");
  if (metadata) body.metadata = metadata;
  await call("POST", "galleries", { json: body });
  $("gallery-id").value = ""; $("gallery-metadata").value = "";
  await loadGalleries();
}); });

function eraseGallery(id) {
  if (!window.confirm(`Erase gallery "${id}" with all its subjects and templates? This cannot be undone.`)) return;
  run(async () => { const receipt = await call("DELETE", `galleries/${seg(id)}`); await loadGalleries(); showReceipt(receipt); });
}

function openSubjects(id) {
  $("subjects-gallery").value = id;
  selectTab($("tab-subjects"));
  $("tab-subjects").focus();
}

// ---- Operate: subjects and enrolment ---------------------------------------------------------------
let editing = null;  // the subject id being edited, or null for a new subject

function resetSubjectForm() {
  editing = null;
  $("subject-form").reset();
  $("subject-id").disabled = false;
  $("subject-form-title").textContent = "New subject";
  $("subject-save").textContent = "Create subject";
  $("subject-cancel").hidden = true;
}

async function loadSubjects() {
  if (!apiKey()) return;
  if (!galleries.length) await fetchGalleries();
  const gallery = $("subjects-gallery").value;
  if (!gallery) { put($("subjects-list"), el("p", {}, "Create a gallery first.")); return; }
  const page = await call("GET", `galleries/${seg(gallery)}/subjects?limit=1000`);
  const detailed = await Promise.all(page.items.map(
    (s) => call("GET", `galleries/${seg(gallery)}/subjects/${seg(s.subject_id)}`).catch(() => s)));
  const chosen = $("enrol-subject").value;
  put($("enrol-subject"), ...detailed.map((s) => el("option", { value: s.subject_id }, s.subject_id)));
  if (detailed.some((s) => s.subject_id === chosen)) $("enrol-subject").value = chosen;
  const rows = detailed.map((s) => el("tr", { "data-subject": s.subject_id },
    el("td", {}, s.subject_id), el("td", {}, s.name || ""), el("td", { class: "num" }, s.faces ?? "–"),
    el("td", { class: "mono" }, Object.keys(s.metadata || {}).length ? JSON.stringify(s.metadata) : ""),
    el("td", {}, el("div", { class: "row" },
      el("button", { type: "button", onclick: () => editSubject(s), "aria-label": `Edit subject ${s.subject_id}` }, "Edit"),
      el("button", { type: "button", class: "danger", onclick: () => eraseSubject(gallery, s.subject_id),
        "aria-label": `Erase subject ${s.subject_id}` }, "Erase")))));
  put($("subjects-list"),
    el("h3", {}, `Subjects of ${gallery}: ${page.total}`),
    rows.length ? table(["subject", "name", "faces", "metadata", ""], rows) : null);
}

function editSubject(subject) {
  editing = subject.subject_id;
  $("subject-id").value = subject.subject_id; $("subject-id").disabled = true;
  $("subject-name").value = subject.name || "";
  $("subject-metadata").value = Object.keys(subject.metadata || {}).length ? JSON.stringify(subject.metadata) : "";
  $("subject-form-title").textContent = `Edit subject ${subject.subject_id}`;
  $("subject-save").textContent = "Save changes";
  $("subject-cancel").hidden = false;
  $("subject-name").focus();
}

function eraseSubject(gallery, id) {
  if (!window.confirm(`Erase subject "${id}" and all its templates from "${gallery}"? This cannot be undone.`)) return;
  run(async () => {
    const receipt = await call("DELETE", `galleries/${seg(gallery)}/subjects/${seg(id)}`);
    await loadSubjects();
    showReceipt(receipt);
  });
}

$("subjects-gallery").addEventListener("change", () => run(loadSubjects));
$("subjects-refresh").addEventListener("click", () => run(loadSubjects));
$("subject-cancel").addEventListener("click", resetSubjectForm);
$("subject-form").addEventListener("submit", (event) => { event.preventDefault(); run(async () => {
  const gallery = $("subjects-gallery").value;
  const name = $("subject-name").value.trim();
  const metadata = parseMetadata("subject-metadata");
  if (editing) {
    await call("PATCH", `galleries/${seg(gallery)}/subjects/${seg(editing)}`,
      { json: { name: name || null, metadata: metadata || {} } });
  } else {
    const body = { subject_id: $("subject-id").value.trim() };
    if (name) body.name = name;
    if (metadata) body.metadata = metadata;
    await call("POST", `galleries/${seg(gallery)}/subjects`, { json: body });
    $("enrol-subject").append(el("option", { value: body.subject_id }, body.subject_id));
    $("enrol-subject").value = body.subject_id;
  }
  resetSubjectForm();
  await loadSubjects();
}); });

$("enrol-form").addEventListener("submit", (event) => { event.preventDefault(); run(async () => {
  const gallery = $("subjects-gallery").value, subject = $("enrol-subject").value;
  const photos = [...$("enrol-images").files];
  if (!photos.length) throw new Problem(0, { code: "validation_error", detail: "choose one or more photos" });
  const form = new FormData();
  photos.forEach((p) => form.append("image", p));
  form.append("multi_face", $("enrol-policy").value);
  const out = $("enrol-result");
  put(out, el("p", {}, `Enrolling ${photos.length} photo${photos.length === 1 ? "" : "s"}…`));
  // A field "image[i]" (or "image" for one photo) names the photo: show its file name beside it.
  const photoName = (field) => photos[field === "image" ? 0 : Number((field.match(/\d+/) || ["0"])[0])]?.name ?? field;
  try {
    const r = await call("POST", `galleries/${seg(gallery)}/subjects/${seg(subject)}/faces`, { form });
    put(out, el("p", { class: "decision yes", id: "enrol-outcome" },
      `Enrolled ${r.faces.length} photo${r.faces.length === 1 ? "" : "s"} for ${subject}`),
      el("ul", {}, r.faces.map((f) => el("li", {}, `${photos[f.image_index]?.name}: face `,
        el("code", {}, f.face_id), ` (${selectionWords(f.face)})`))));
    $("enrol-images").value = "";
    await loadSubjects();
  } catch (err) {
    const errors = (err.body && err.body.errors) || [];
    put(out,
      el("p", { class: "decision no", id: "enrol-outcome" }, "Nothing was enrolled"),
      errors.length && errors[0].field ? el("ul", { class: "errors" }, errors.map((e) => el("li", {},
        el("strong", {}, photoName(e.field)), " — ", el("span", { class: "code" }, e.code), `: ${withoutField(e)}`))) : null);
    throw err;
  }
}); });

// ---- camera (getUserMedia works only in a secure context: https, or http://localhost / 127.0.0.1) -----
const CAMERA_WORDS = {
  NotAllowedError: "camera permission denied",
  NotFoundError: "no camera found",
  NotReadableError: "the camera is in use by another application, or the system blocked it",
  OverconstrainedError: "the camera cannot give a picture of the size asked for",
  SecurityError: "the browser allows no camera on this page (not https or localhost, or a policy)",
};

const CAMERA_SETTLE_MS = 700;  // after a camera opens, before its picture is worth taking (exposure, first frames)

// An open camera stream, or a Problem saying why there is none (camera_denied: the permission was refused).
async function openCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Problem(0, { code: "webcam_unavailable", detail: "this page cannot use a camera (it needs https or localhost)" });
  }
  try {
    return await navigator.mediaDevices.getUserMedia(
      { video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" }, audio: false });
  } catch (err) {
    const words = CAMERA_WORDS[err.name] || "no camera";
    throw new Problem(0, { code: err.name === "NotAllowedError" ? "camera_denied" : "webcam_unavailable",
      detail: `${words} (${err.name}: ${err.message})` });
  }
}

function stopCamera(video) {
  const stream = video.srcObject;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  video.srcObject = null;
}

// The video's current picture as a JPEG file: the camera's own (unmirrored) frame.
function snapshot(video, name) {
  const canvas = el("canvas");
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  return new Promise((resolve, reject) => canvas.toBlob(
    (blob) => (blob ? resolve(new File([blob], name, { type: "image/jpeg" })) : reject(new Error("no picture"))),
    "image/jpeg", 0.92));
}

// ---- webcam snapshot for a photo field ---------------------------------------------------------------
let webcamTarget = null;
for (const button of document.querySelectorAll("button.webcam")) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) { button.hidden = true; continue; }
  button.addEventListener("click", () => run(async () => {
    webcamTarget = button.dataset.target;
    const video = $("webcam-video");
    $("webcam-take").disabled = true;  // a camera's first frames can be black or dark: let it settle first
    video.srcObject = await openCamera();
    $("webcam-dialog").showModal();
    await video.play();
    await new Promise((resolve) => setTimeout(resolve, CAMERA_SETTLE_MS));
    $("webcam-take").disabled = false;
  }));
}
function closeWebcam() {
  stopCamera($("webcam-video"));
  if ($("webcam-dialog").open) $("webcam-dialog").close();
}
$("webcam-close").addEventListener("click", closeWebcam);
$("webcam-dialog").addEventListener("close", closeWebcam);
$("webcam-take").addEventListener("click", () => run(async () => {
  const files = new DataTransfer();
  files.items.add(await snapshot($("webcam-video"), "webcam.jpg"));
  $(webcamTarget).files = files.files;
  closeWebcam();
}));

showKeyState();
