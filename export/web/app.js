// The keras-vae page: decodes in the browser with onnxruntime-web (wasm), draws z with
// numpy's generator (npy_random.js), and scores drawings through the service.
//
// URLs (relative to this file, so the page also works under a path prefix):
//   ../manifest.json   the export's manifest       ../files/<path>  an exported file
//   ../ort/            onnxruntime-web's dist/     ../v1/score      the anomaly scorer
//
// Test hook: window.kerasVae = {ready, manifest, decode(zFlat, n, labels?), priorZ(n, seed),
// interpolate(seedA, seedB, steps), setSliders(zFlat), pending, last: {grid, slider, strip, score}}.

import { mixturePriorZ, priorZ, slerp, toSeed } from "./npy_random.js";

const url = (path) => new URL(path, import.meta.url).href;
const ORT_MODULE = url("../ort/ort.wasm.min.mjs");
const ORT_DIR = url("../ort/");
const $ = (id) => document.getElementById(id);

const PAD_SIZE = 224; // drawing pad, about this many CSS pixels a side
const GRID_WIDTH = 360; // CSS pixels of the sample grid
const BIG_IMAGE = 200; // CSS pixels of the slider image

const hook = {
  manifest: null,
  pending: Promise.resolve(),
  last: { grid: null, slider: null, strip: null, score: null },
};
window.kerasVae = hook;

let ort = null;
let session = null;
let model = null; // {latentDim, shape: [h, w, c], numClasses, classNames, zName, labelName, outName}
let runQueue = Promise.resolve(); // one session.run at a time

// ------------------------------------------------------------------ helpers

class PageError extends Error {}

function showError(id, error) {
  const el = $(id);
  el.textContent = error ? String(error.message || error) : "";
  if (error && !(error instanceof PageError)) console.error(error);
}

/** Runs a UI action, showing its error in the card; the test hook can await it. */
function action(errorId, fn) {
  const run = (async () => {
    showError(errorId, null);
    try {
      await hook.ready;
      await fn();
    } catch (e) {
      showError(errorId, e);
    }
  })();
  hook.pending = run;
  return run;
}

function seedOf(id) {
  const text = $(id).value.trim();
  try {
    return toSeed(text);
  } catch {
    throw new PageError(`Seed must be a non-negative integer, got "${text}".`);
  }
}

function classIds(selectId, n) {
  if (!model.numClasses) return null;
  const value = Number($(selectId).value);
  return Int32Array.from({ length: n }, (_, i) => (value < 0 ? i % model.numClasses : value));
}

function formatBytes(n) {
  return n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} kB` : `${(n / (1 << 20)).toFixed(1)} MB`;
}

async function sha256Hex(buffer) {
  if (!globalThis.crypto || !crypto.subtle) return null; // plain http from another host
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// ------------------------------------------------------------------ the model

async function loadManifest() {
  const response = await fetch(url("../manifest.json"));
  if (!response.ok) throw new PageError(`GET manifest.json answered ${response.status}: is this a keras-vae server?`);
  const manifest = await response.json();
  const entry = (manifest.files || []).find(
    (f) => f.graph === "decoder" && f.format === "onnx" && f.precision === "fp32",
  ) || (manifest.files || []).find((f) => f.graph === "decoder" && f.format === "onnx");
  if (!entry) throw new PageError("The export has no ONNX decoder; export with formats including onnx.");
  const zSpec = entry.inputs.find((s) => s.name === "z") || entry.inputs[0];
  const labelSpec = entry.inputs.find((s) => s !== zSpec);
  const shape = manifest.image.shape.map(Number);
  if (shape.length !== 3) throw new PageError(`The page shows (h, w, c) images; the manifest says ${JSON.stringify(shape)}.`);
  return {
    manifest,
    entry,
    latentDim: Number(manifest.latent_dim),
    shape,
    numClasses: Number(manifest.num_classes || 0),
    classNames: manifest.class_names || null,
    zName: zSpec.name,
    labelName: labelSpec ? labelSpec.name : null,
    outName: entry.outputs[0].name,
    prior: manifest.prior || { type: "standard_normal" },
  };
}

// z for a seed from the manifest's prior table, the same draws as recipes.sample_prior and
// the model's sample(): N(0, I), or a Gaussian mixture (mixture, VampPrior, fitted GMM).
function drawZ(n, seed) {
  const prior = model.prior;
  if (prior.type === "standard_normal") return priorZ(n, model.latentDim, seed);
  if (prior.type === "mixture") {
    return mixturePriorZ(n, seed, prior.weights, prior.means.flat(), prior.log_vars.flat()).z;
  }
  throw new PageError(`The page cannot draw from a '${prior.type}' prior.`);
}

function interpolateSeeds(seedA, seedB, steps) {
  return slerp(drawZ(1, seedA), drawZ(1, seedB), steps);
}

async function loadOrt() {
  try {
    ort = await import(ORT_MODULE);
  } catch (e) {
    throw new PageError(`onnxruntime-web did not load from ${ORT_MODULE} (${e.message}); ` +
      "install it where the server looks: npm ci --prefix export/web");
  }
  ort.env.wasm.wasmPaths = ORT_DIR;
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
}

async function loadSession(entry) {
  const response = await fetch(url(`../files/${entry.path}`));
  if (!response.ok) throw new PageError(`GET files/${entry.path} answered ${response.status}.`);
  const bytes = await response.arrayBuffer();
  if (bytes.byteLength !== entry.size_bytes) {
    throw new PageError(`${entry.path} has ${bytes.byteLength} bytes, the manifest says ${entry.size_bytes}.`);
  }
  const digest = await sha256Hex(bytes);
  if (digest !== null && digest !== entry.sha256) {
    throw new PageError(`${entry.path} does not match the manifest's SHA-256.`);
  }
  session = await ort.InferenceSession.create(new Uint8Array(bytes), {
    executionProviders: ["wasm"],
  });
  return digest !== null;
}

/**
 * Decodes `n` latents in the browser.
 *
 * @param {ArrayLike<number>} zFlat n * latentDim values, row-major.
 * @param {number} n number of latents.
 * @param {ArrayLike<number>} [labels] n class ids (conditional exports only).
 * @returns {Promise<Float32Array>} n * h * w * c image means, row-major.
 */
async function decode(zFlat, n, labels) {
  const d = model.latentDim;
  if (!Number.isInteger(n) || n < 1 || zFlat.length !== n * d) {
    throw new PageError(`decode: need n >= 1 codes of ${d} values, got ${zFlat.length} values for n = ${n}`);
  }
  const feeds = { [model.zName]: new ort.Tensor("float32", Float32Array.from(zFlat), [n, d]) };
  if (model.numClasses) {
    if (!labels || labels.length !== n) throw new PageError(`decode: this conditional export needs ${n} class ids`);
    const ids = Int32Array.from(labels);
    if (ids.some((c) => c < 0 || c >= model.numClasses)) {
      throw new PageError(`decode: class ids must be in [0, ${model.numClasses})`);
    }
    feeds[model.labelName] = new ort.Tensor("int32", ids, [n]);
  }
  const run = runQueue.then(() => session.run(feeds));
  runQueue = run.catch(() => {});
  const outputs = await run;
  return Float32Array.from(outputs[model.outName].data);
}

// ------------------------------------------------------------------ pictures

/**
 * Tiles images into a canvas at one canvas pixel per image pixel (white 1-pixel gaps),
 * the layout of recipes.grid; CSS scales it up without smoothing.
 */
function drawTiles(canvas, images, n, ncols, cssWidth) {
  const [h, w, c] = model.shape;
  const pad = 1;
  const nrows = Math.ceil(n / ncols);
  canvas.width = ncols * (w + pad) - pad;
  canvas.height = nrows * (h + pad) - pad;
  const ctx = canvas.getContext("2d");
  const picture = ctx.createImageData(canvas.width, canvas.height);
  picture.data.fill(255);
  const px = picture.data;
  for (let i = 0; i < n; i++) {
    const top = Math.floor(i / ncols) * (h + pad);
    const left = (i % ncols) * (w + pad);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const o = ((top + y) * canvas.width + left + x) * 4;
        const s = ((i * h + y) * w + x) * c;
        for (let k = 0; k < 3; k++) {
          const v = images[s + (c === 3 ? k : 0)];
          px[o + k] = Math.round(Math.min(1, Math.max(0, v)) * 255);
        }
      }
    }
  }
  ctx.putImageData(picture, 0, 0);
  const scale = Math.max(1, Math.floor(cssWidth / canvas.width));
  canvas.style.width = `${canvas.width * scale}px`; // height follows (CSS height: auto)
}

// ------------------------------------------------------------------ samples

async function sampleGrid() {
  const seed = seedOf("seed");
  const n = Number($("count").value);
  const z = drawZ(n, seed);
  const labels = classIds("grid-class", n);
  const images = await decode(z, n, labels);
  drawTiles($("grid"), images, n, Math.ceil(Math.sqrt(n)), GRID_WIDTH);
  hook.last.grid = { seed: seed.toString(), n, z, labels, images };
}

// ------------------------------------------------------------------ sliders

let sliderZ = null; // Float32Array(latentDim), the code shown
let sliderBusy = false;
let sliderAgain = false;

function buildSliders() {
  const box = $("sliders");
  box.textContent = "";
  for (let j = 0; j < model.latentDim; j++) {
    const row = document.createElement("label");
    row.className = "slider";
    row.innerHTML = `<span class="dim">z${j}</span><input type="range" min="-3" max="3" step="0.01">` +
      '<output class="value"></output>';
    const input = row.querySelector("input");
    input.dataset.dim = String(j);
    input.addEventListener("input", () => {
      sliderZ[j] = Number(input.value);
      row.querySelector("output").textContent = sliderZ[j].toFixed(2);
      decodeSliders();
    });
    box.appendChild(row);
  }
}

function showSliderValues() {
  for (const input of $("sliders").querySelectorAll("input")) {
    const j = Number(input.dataset.dim);
    input.value = String(sliderZ[j]);
    input.parentElement.querySelector("output").textContent = sliderZ[j].toFixed(2);
  }
}

/** Live decoding: at most one run in flight; the latest values win. */
function decodeSliders() {
  if (sliderBusy) {
    sliderAgain = true;
    return hook.pending;
  }
  sliderBusy = true;
  return action("sliders-error", async () => {
    try {
      do {
        sliderAgain = false;
        const z = Float32Array.from(sliderZ);
        const labels = classIds("slider-class", 1);
        const image = await decode(z, 1, labels);
        drawTiles($("slider-image"), image, 1, 1, BIG_IMAGE);
        hook.last.slider = { z, labels, images: image };
      } while (sliderAgain);
    } finally {
      sliderBusy = false;
    }
  });
}

function setSliders(zFlat) {
  if (zFlat.length !== model.latentDim) throw new PageError(`setSliders: need ${model.latentDim} values`);
  sliderZ = Float32Array.from(zFlat);
  showSliderValues();
  return decodeSliders();
}

// ------------------------------------------------------------------ interpolation

async function interpolateStrip() {
  const a = seedOf("seed-a");
  const b = seedOf("seed-b");
  const steps = Number($("steps").value);
  if (!Number.isInteger(steps) || steps < 2 || steps > 64) throw new PageError("Steps must be an integer in [2, 64].");
  const z = interpolateSeeds(a, b, steps);
  const labels = classIds("interp-class", steps);
  const images = await decode(z, steps, labels);
  drawTiles($("strip"), images, steps, steps, Math.min(480, 64 * steps));
  hook.last.strip = { seedA: a.toString(), seedB: b.toString(), steps, z, labels, images };
}

// ------------------------------------------------------------------ scoring

const pad = { canvas: null, ctx: null, drawing: false, k: 1 };

function setupPad() {
  const [h, w] = model.shape;
  pad.k = Math.max(1, Math.round(PAD_SIZE / Math.max(h, w))); // pad pixels per image pixel
  const canvas = $("pad");
  canvas.width = w * pad.k;
  canvas.height = h * pad.k;
  canvas.style.width = `${canvas.width}px`; // one CSS pixel per pad pixel
  canvas.style.height = `${canvas.height}px`;
  pad.canvas = canvas;
  pad.ctx = canvas.getContext("2d", { willReadFrequently: true });
  clearPad();
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * (canvas.width / r.width), (e.clientY - r.top) * (canvas.height / r.height)];
  };
  canvas.addEventListener("pointerdown", (e) => {
    pad.drawing = true;
    canvas.setPointerCapture(e.pointerId);
    const [x, y] = at(e);
    pad.ctx.beginPath();
    pad.ctx.moveTo(x, y);
    pad.ctx.lineTo(x + 0.01, y);
    pad.ctx.stroke();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!pad.drawing) return;
    const [x, y] = at(e);
    pad.ctx.lineTo(x, y);
    pad.ctx.stroke();
  });
  const end = () => {
    if (!pad.drawing) return;
    pad.drawing = false;
    scoreDrawing();
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
}

function clearPad() {
  const { ctx, canvas } = pad;
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#fff";
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.lineWidth = canvas.width * Math.max(1.2 / model.shape[1], 0.08);
}

async function loadUpload(file) {
  const bitmap = await createImageBitmap(file).catch(() => {
    throw new PageError(`${file.name} is not an image the browser can read.`);
  });
  const { ctx, canvas } = pad;
  clearPad();
  const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
  const dw = bitmap.width * scale;
  const dh = bitmap.height * scale;
  ctx.imageSmoothingEnabled = scale < 1; // shrink smoothly, enlarge by whole pixels
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, (canvas.width - dw) / 2, (canvas.height - dh) / 2, dw, dh);
  ctx.imageSmoothingEnabled = true;
  bitmap.close();
}

/** The pad averaged over k x k blocks: (h, w, c) values in [0, 1] (grey or RGB). */
function padImage() {
  const [h, w, c] = model.shape;
  const { k } = pad;
  const px = pad.ctx.getImageData(0, 0, w * k, h * k).data;
  const invert = $("invert").checked;
  const out = new Float64Array(h * w * c);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const sums = [0, 0, 0];
      for (let dy = 0; dy < k; dy++) {
        for (let dx = 0; dx < k; dx++) {
          const o = ((y * k + dy) * w * k + x * k + dx) * 4;
          sums[0] += px[o];
          sums[1] += px[o + 1];
          sums[2] += px[o + 2];
        }
      }
      const [r, g, b] = sums.map((s) => s / (k * k * 255));
      const values = c === 3 ? [r, g, b] : [r === g && g === b ? r : 0.299 * r + 0.587 * g + 0.114 * b];
      values.forEach((v, ch) => {
        out[(y * w + x) * c + ch] = invert ? 1 - v : v;
      });
    }
  }
  return out;
}

function nested(flat, [h, w, c]) {
  return [Array.from({ length: h }, (_, y) => Array.from({ length: w }, (_, x) =>
    Array.from({ length: c }, (_, ch) => flat[(y * w + x) * c + ch])))];
}

function scoreDrawing() {
  return action("score-error", async () => {
    const image = padImage();
    drawTiles($("scored"), image, 1, 1, 96);
    const request = { images: nested(image, model.shape) };
    const labels = classIds("score-class", 1);
    if (labels) request.class_ids = Array.from(labels); // conditional scorers take the class
    let response;
    try {
      response = await fetch(url("../v1/score"), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request),
      });
    } catch (e) {
      throw new PageError(`Scoring needs the keras-vae service (POST v1/score): ${e.message}`);
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = body.error || body.detail || JSON.stringify(body);
      throw new PageError(`POST v1/score answered ${response.status}: ${typeof message === "string" ? message : JSON.stringify(message)}`);
    }
    const score = body.scores[0];
    const threshold = body.threshold;
    const anomalous = body.is_anomaly ? body.is_anomaly[0] : null;
    $("score-value").textContent = score.toFixed(2);
    $("score-threshold").textContent = threshold === null || threshold === undefined ? "not calibrated" : threshold.toFixed(2);
    const verdict = $("score-verdict");
    verdict.textContent = anomalous === null || anomalous === undefined ? "no threshold" : anomalous ? "anomaly" : "normal";
    verdict.className = anomalous ? "anomaly" : anomalous === false ? "normal" : "";
    $("score-meaning").textContent = body.score || "";
    hook.last.score = { image: Float32Array.from(image), labels, response: body };
  });
}

// ------------------------------------------------------------------ start-up

function fillClassSelect(id, cycle) {
  const select = $(id);
  select.textContent = "";
  const names = model.classNames || [];
  if (cycle) select.add(new Option("each in turn", "-1"));
  for (let i = 0; i < model.numClasses; i++) select.add(new Option(names[i] !== undefined ? `${i}: ${names[i]}` : String(i), String(i)));
  select.closest("label").hidden = false;
}

async function start() {
  const loaded = await loadManifest();
  model = loaded;
  hook.manifest = loaded.manifest;
  for (const el of document.querySelectorAll(".latent-dim")) el.textContent = String(model.latentDim);
  if (model.prior.type === "mixture") {
    $("prior-note").textContent = `z from the model's ${model.prior.weights.length}-component ` +
      "Gaussian-mixture prior, drawn as keras_vae's recipes.sample_prior draws it (numpy's " +
      "default_rng: component by choice, then standard_normal), decoded here by onnxruntime-web.";
  }
  if (model.numClasses) {
    fillClassSelect("grid-class", true);
    fillClassSelect("slider-class", false);
    fillClassSelect("interp-class", false);
    fillClassSelect("score-class", false);
  }
  buildSliders();
  setupPad();
  await loadOrt();
  const verified = await loadSession(loaded.entry);
  const version = ort.env.versions ? ort.env.versions.web : "";
  const [h, w, c] = model.shape;
  $("status").textContent = [
    `onnxruntime-web ${version} (wasm)`,
    `${loaded.entry.path} ${loaded.entry.precision} ${formatBytes(loaded.entry.size_bytes)}${verified ? ", SHA-256 checked" : ""}`,
    `${model.latentDim}-d latent space`,
    `${h}\u00d7${w}\u00d7${c} images`,
    model.numClasses ? `${model.numClasses} classes` : "unconditional",
  ].join(" \u00b7 ");
  for (const button of document.querySelectorAll("button")) button.disabled = false;
}

hook.ready = start().catch((e) => {
  $("status").textContent = `Not ready: ${e.message}`;
  $("status").classList.add("error");
  if (!(e instanceof PageError)) console.error(e);
  throw e;
});
hook.decode = decode;
hook.priorZ = (n, seed) => drawZ(n, seed);
hook.interpolate = (seedA, seedB, steps) => interpolateSeeds(seedA, seedB, steps);
hook.setSliders = setSliders;
hook.padImage = () => Float32Array.from(padImage());

$("sample").addEventListener("click", () => action("samples-error", sampleGrid));
$("next-seed").addEventListener("click", () => {
  const text = $("seed").value.trim();
  if (/^[0-9]+$/.test(text)) $("seed").value = (BigInt(text) + 1n).toString();
  action("samples-error", sampleGrid);
});
$("seed").addEventListener("keydown", (e) => { if (e.key === "Enter") action("samples-error", sampleGrid); });
$("count").addEventListener("change", () => action("samples-error", sampleGrid));
$("grid-class").addEventListener("change", () => action("samples-error", sampleGrid));
$("slider-from-seed").addEventListener("click", () => action("sliders-error", () => setSliders(drawZ(1, seedOf("slider-seed")))));
$("slider-zero").addEventListener("click", () => action("sliders-error", () => setSliders(new Float32Array(model.latentDim))));
$("slider-class").addEventListener("change", () => decodeSliders());
$("interpolate").addEventListener("click", () => action("interp-error", interpolateStrip));
$("interp-class").addEventListener("change", () => action("interp-error", interpolateStrip));
$("clear").addEventListener("click", () => { if (pad.ctx) clearPad(); });
$("score").addEventListener("click", () => scoreDrawing());
$("upload").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (!file) return;
  action("score-error", async () => {
    await loadUpload(file);
    await scoreDrawing();
  });
});

// The first picture of each card once the model is there.
hook.ready.then(async () => {
  await sampleGrid().catch((e) => showError("samples-error", e));
  sliderZ = drawZ(1, seedOf("slider-seed"));
  showSliderValues();
  await decodeSliders();
  await interpolateStrip().catch((e) => showError("interp-error", e));
}).catch(() => {});
