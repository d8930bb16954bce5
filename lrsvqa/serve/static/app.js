// lrsvqa serve: the scene on a map, questions with progress, the evidence drawn on the map.
"use strict";

const LEVEL_COLOURS = ["#00c8ff", "#50ff50", "#ffdc00", "#ff7800", "#ff28a0", "#b45aff", "#ffffff"];
const state = { token: sessionStorage.getItem("lrsvqa-token"), scene: null, info: null,
  map: null, base: null, evidence: null, heat: null, result: null, jobs: {} };
const $ = (id) => document.getElementById(id);

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const response = await fetch(path, opts);
  if (response.status === 401) { askToken(); throw new Error("this server needs a token"); }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function askToken() {
  $("token-form").hidden = false;
  $("token").focus();
}

// ---- the map ---------------------------------------------------------------------

// Tiles are fetched with the token header (an <img src> cannot send one).
const AuthTileLayer = L.TileLayer.extend({
  createTile: function (coords, done) {
    const img = document.createElement("img");
    img.alt = "";
    fetch(this.getTileUrl(coords), { headers: headers() }).then((r) => {
      if (r.status === 204) { done(null, img); return null; }
      if (!r.ok) throw new Error("tile " + r.status);
      return r.blob();
    }).then((blob) => {
      if (!blob) return;
      img.onload = () => { URL.revokeObjectURL(img.src); done(null, img); };
      img.src = URL.createObjectURL(blob);
    }).catch((err) => done(err, img));
    return img;
  },
});

function pixelLatLng(c) { return L.latLng(-c[1], c[0]); }

function setupMap(info) {
  if (state.map) { state.map.remove(); state.map = null; }
  const tiles = info.tiles;
  const pixel = tiles.scheme === "pixel";
  const map = L.map("map", pixel
    ? { crs: L.CRS.Simple, minZoom: -tiles.maxzoom, maxZoom: 3, zoomSnap: 0.25 }
    : { minZoom: 0, maxZoom: tiles.maxzoom + 3, zoomSnap: 0.25 });
  map.createPane("heat").style.zIndex = 410;
  map.createPane("evidence").style.zIndex = 420;
  state.heatRenderer = L.svg({ pane: "heat" });
  state.evidenceRenderer = L.svg({ pane: "evidence" });
  const url = "/api/tiles/{z}/{x}/{y}.png?scene=" + encodeURIComponent(info.id);
  const layerOptions = pixel
    ? { zoomOffset: tiles.maxzoom, minZoom: -tiles.maxzoom, maxNativeZoom: 0, maxZoom: 3,
        tileSize: tiles.tile_size, noWrap: true,
        bounds: L.latLngBounds(pixelLatLng([0, info.height]), pixelLatLng([info.width, 0])) }
    : { minNativeZoom: tiles.minzoom, maxNativeZoom: tiles.maxzoom, maxZoom: tiles.maxzoom + 3,
        tileSize: tiles.tile_size, noWrap: true,
        bounds: L.latLngBounds([tiles.bounds[1], tiles.bounds[0]], [tiles.bounds[3], tiles.bounds[2]]) };
  state.base = new AuthTileLayer(url, layerOptions).addTo(map);
  map.fitBounds(layerOptions.bounds);
  state.map = map;
  state.evidence = null;
  state.heat = null;
  $("map").dataset.evidenceCount = "0";
}

function geoOptions(extra) {
  const options = Object.assign({}, extra);
  if (state.info && state.info.tiles.scheme === "pixel") options.coordsToLatLng = pixelLatLng;
  return options;
}

function drawEvidence(result) {
  if (state.evidence) state.evidence.remove();
  if (state.heat) state.heat.remove();
  const features = result.geojson.features;
  const maxScore = {};
  for (const f of features) {
    const p = f.properties;
    maxScore[p.level] = Math.max(maxScore[p.level] || 0, p.score);
  }
  state.evidence = L.geoJSON(result.geojson, geoOptions({
    pane: "evidence",
    renderer: state.evidenceRenderer,
    style: (f) => {
      const p = f.properties;
      const share = maxScore[p.level] > 0 ? p.score / maxScore[p.level] : 0;
      return { color: LEVEL_COLOURS[p.level % LEVEL_COLOURS.length], weight: p.finest ? 5 : 1.5,
        opacity: 0.95, fillOpacity: 0.05 + 0.35 * share, className: "evidence-tile" };
    },
    onEachFeature: (f, layer) => {
      const p = f.properties;
      layer.bindPopup("level " + p.level + (p.finest ? " (reached the LLM)" : "") +
        "<br>score " + p.score.toFixed(4) + "<br>kept tokens " + p.kept_tokens +
        "<br>pixels " + p.pixel_box.join(", "));
    },
  })).addTo(state.map);
  $("map").dataset.evidenceCount = String(features.length);
  const heatFeatures = [];
  for (const lvl of result.heat) {
    for (const t of lvl.tiles) {
      heatFeatures.push({ type: "Feature", geometry: t.geometry,
        properties: { level: lvl.level, share: t.share, score: t.score } });
    }
  }
  state.heat = L.geoJSON({ type: "FeatureCollection", features: heatFeatures }, geoOptions({
    pane: "heat",
    renderer: state.heatRenderer,
    interactive: false,
    style: (f) => ({ stroke: false, fillColor: heatColour(f.properties.share),
      fillOpacity: 0.15 + 0.5 * f.properties.share }),
  }));
  if ($("heat-toggle").checked) state.heat.addTo(state.map);
  const levels = [...new Set(features.map((f) => f.properties.level))].sort((a, b) => a - b);
  $("legend").innerHTML = levels.map((l) =>
    '<span class="swatch" style="background:' + LEVEL_COLOURS[l % LEVEL_COLOURS.length] +
    '"></span>level ' + l).join("") + " · bold: tokens that reached the LLM";
}

function heatColour(share) {
  const g = Math.round(255 * (1 - share));
  return "rgb(255," + g + ",0)";
}

// ---- scenes ----------------------------------------------------------------------

async function loadScenes() {
  const data = await (await api("/api/scenes")).json();
  const select = $("scene");
  select.innerHTML = "";
  for (const s of data.scenes) {
    const option = document.createElement("option");
    option.value = s.id;
    option.textContent = s.id + (s.error ? " (unreadable)" : "");
    option.disabled = !!s.error;
    select.appendChild(option);
  }
  $("scene-url-row").hidden = !(data.allow_urls && data.allow_urls.length);
  const first = data.scenes.find((s) => !s.error);
  if (first) { select.value = first.id; await openScene(first.id); }
}

async function openScene(id) {
  showError("");
  const info = await (await api("/api/scene?id=" + encodeURIComponent(id))).json();
  state.scene = info.id;
  state.info = info;
  $("scene-meta").textContent = info.width + " × " + info.height + " px, " + info.bands +
    " band(s) " + info.dtype + ", " + (info.crs || "no CRS (pixel view)");
  $("result").hidden = true;
  setupMap(info);
  await loadHistory();
}

// ---- questions -------------------------------------------------------------------

function readOptions() {
  const options = {};
  const pick = (id, key, parse) => {
    const v = $(id).value;
    if (v !== "") options[key] = parse ? parse(v) : v;
  };
  pick("opt-selector", "selector");
  pick("opt-keep", "keep_ratio", Number);
  pick("opt-tiles", "max_tiles", Number);
  pick("opt-budget", "budget", Number);
  pick("opt-llm", "llm_prune");
  return options;
}

function describe(event) {
  switch (event.stage) {
    case "queued": return [2, "waiting in the queue (position " + event.position + ")"];
    case "started": return [5, "started"];
    case "pyramid": return [8, "pyramid: " + event.levels + " level(s)"];
    case "encode": {
      const n = event.levels || 1;
      const within = event.total ? event.done / event.total : 1;
      return [10 + 70 * ((event.level || 0) + within) / n, "level " + ((event.level || 0) + 1) +
        " of " + n + ": encoding " + event.done + "/" + event.total + " tiles"];
    }
    case "focus": return [null, "level " + ((event.level || 0) + 1) + " of " + (event.levels || 1) + ": focus"];
    case "generate": return [90, "generating the answer"];
    case "done": return [100, "done"];
    case "error": return [100, "failed: " + event.error];
    default: return [null, event.stage];
  }
}

async function follow(jobId) {
  // Server-sent events read through fetch, so the token header goes along.
  const response = await api("/api/jobs/" + jobId + "/events");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const chunk = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const line = chunk.split("\n").find((l) => l.startsWith("data: "));
      if (!line) continue;
      last = JSON.parse(line.slice(6));
      const [percent, text] = describe(last);
      if (percent !== null) $("progress").value = percent;
      $("progress-text").textContent = text;
    }
  }
  return last;
}

async function ask(event) {
  event.preventDefault();
  showError("");
  const question = $("question").value.trim();
  if (!question || !state.scene) return;
  $("ask").disabled = true;
  $("progress-box").hidden = false;
  $("progress").value = 0;
  $("progress-text").textContent = "sending";
  try {
    const created = await (await api("/api/ask", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ scene: state.scene, question: question, options: readOptions() }),
    })).json();
    const last = await follow(created.job);
    if (last && last.stage === "error") throw new Error(last.error);
    await showJob(created.job);
    await loadHistory();
  } catch (err) {
    showError(err.message);
  } finally {
    $("ask").disabled = false;
  }
}

async function showJob(jobId) {
  const result = await (await api("/api/jobs/" + jobId + "/result")).json();
  state.result = result;
  state.resultJob = jobId;
  $("result").hidden = false;
  $("answer-text").textContent = result.answer.text || "(empty answer)";
  $("cost").textContent = result.summary;
  $("pixel-note").hidden = result.geojson_crs !== "pixel";
  drawEvidence(result);
}

async function loadHistory() {
  const data = await (await api("/api/jobs?scene=" + encodeURIComponent(state.scene))).json();
  const list = $("history");
  list.innerHTML = "";
  for (const job of data.jobs.slice().reverse()) {
    const item = document.createElement("li");
    const answer = job.state === "done" ? " → " + job.text : " (" + job.state + ")";
    item.textContent = "#" + job.seq + " " + job.question + answer;
    item.title = job.error || "show this answer on the map";
    if (job.state === "done") item.onclick = () => showJob(job.id).catch((e) => showError(e.message));
    list.appendChild(item);
  }
}

async function download(path, name) {
  const blob = await (await api(path)).blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ---- start -----------------------------------------------------------------------

async function start() {
  const health = await (await fetch("/api/health")).json();
  if (health.random_model) {
    const note = $("model-note");
    note.textContent = health.model + " is a tiny random model: its answers are meaningless.";
    note.hidden = false;
  }
  if (health.auth && !state.token) { askToken(); return; }
  await loadScenes();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("lrsvqa-token", state.token);
  $("token-form").hidden = true;
  loadScenes().catch((e) => showError(e.message));
});
$("scene").addEventListener("change", () => openScene($("scene").value).catch((e) => showError(e.message)));
$("scene-url-open").addEventListener("click", () =>
  openScene($("scene-url").value.trim()).catch((e) => showError(e.message)));
$("ask-form").addEventListener("submit", ask);
$("heat-toggle").addEventListener("change", () => {
  if (!state.heat) return;
  if ($("heat-toggle").checked) state.heat.addTo(state.map); else state.heat.remove();
});
$("dl-geojson").addEventListener("click", (e) => {
  e.preventDefault();
  if (state.resultJob) download("/api/jobs/" + state.resultJob + "/evidence.geojson", "evidence.geojson").catch((x) => showError(x.message));
});
$("dl-overlay").addEventListener("click", (e) => {
  e.preventDefault();
  if (state.resultJob) download("/api/jobs/" + state.resultJob + "/overlay.png", "overlay.png").catch((x) => showError(x.message));
});
start().catch((e) => showError(e.message));
