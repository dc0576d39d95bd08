// The try-it page: pick, drop or record audio, POST it to /enhance, then play the original
// and the enhanced audio on one timeline, each drawn as a waveform and a spectrogram.
// Every request goes to this origin; body[data-state] is idle / working / done / error.

const $ = (id) => document.getElementById(id);
const form = $("enhance-form");
const fileInput = $("file-input");
const dropZone = $("drop-zone");
const fileInfo = $("file-info");
const recordButton = $("record");
const headerless = $("headerless");
const modelSelect = $("model");
const modelInfo = $("model-info");
const enhanceButton = $("enhance");
const statusLine = $("status");
const errorBox = $("error");
const results = $("results");
const playButton = $("play");
const seekBar = $("seek");
const timeLabel = $("time");
const download = $("download");
const players = { before: $("player-before"), after: $("player-after") };

let selectedFile = null;
let selectedKind = null; // "WAV", "FLAC", "MP3", "Ogg", or null for headerless samples
let audioContext = null;

// ------------------------------------------------------------------ state and messages

function setState(state, message = "") {
  document.body.dataset.state = state;
  statusLine.textContent = message;
  enhanceButton.disabled = state === "working" || !selectedFile || !modelSelect.value;
  fileInput.disabled = state === "working";
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  setState("error");
}

function clearError() {
  errorBox.hidden = true;
  errorBox.textContent = "";
}

// The API answers errors as {"detail": "..."}; anything else is shown as it came.
async function errorDetail(response) {
  const text = await response.text();
  let detail = text;
  try {
    const body = JSON.parse(text);
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
  } catch {
    // Not JSON (a proxy's error page, say): keep the text.
  }
  return `${detail || response.statusText} (HTTP ${response.status})`;
}

function formatTime(seconds) {
  const whole = Math.floor(seconds + 1e-3); // 599.9999 s is 10:00
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

function formatBytes(bytes) {
  if (bytes < 1e3) return `${bytes} bytes`;
  return bytes < 1e6 ? `${(bytes / 1e3).toFixed(1)} kB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

// Created on the first click (Enhance or Record): browsers only let audio start after a
// user gesture.
function context() {
  audioContext ??= new AudioContext();
  return audioContext;
}

// ------------------------------------------------------------------ models

async function loadModels() {
  try {
    const response = await fetch("/models");
    if (!response.ok) throw new Error(await errorDetail(response));
    for (const model of await response.json()) {
      const option = new Option(model.name, model.name, model.default, model.default);
      option.dataset.info = [model.description, `${model.sample_rate / 1000} kHz model`]
        .filter(Boolean).join(" · ");
      modelSelect.add(option);
    }
    showModelInfo();
    setState("idle");
  } catch (error) {
    showError(`Could not load the list of models: ${error.message}`);
  }
}

function showModelInfo() {
  modelInfo.textContent = modelSelect.selectedOptions[0]?.dataset.info ?? "";
}

modelSelect.addEventListener("change", showModelInfo);

// ------------------------------------------------------------------ choosing a file

const MAGIC = [["RIFF", "WAV"], ["RIFX", "WAV"], ["RF64", "WAV"], ["fLaC", "FLAC"],
  ["OggS", "Ogg"], ["ID3", "MP3"]];

async function sniff(file) {
  const head = new Uint8Array(await file.slice(0, 4).arrayBuffer());
  const text = String.fromCharCode(...head);
  const known = MAGIC.find(([magic]) => text.startsWith(magic));
  if (known) return known[1];
  if (head[0] === 0xff && (head[1] & 0xe0) === 0xe0) return "MP3"; // an MPEG frame header
  return null;
}

// Headerless files need a rate and an encoding: guess them from names like speech_16000.s16.
function prefillHeaderless(name) {
  const { sample_rate: rate, format } = form.elements;
  if (/\.s16$/i.test(name)) format.value = "s16le";
  if (/\.f32$/i.test(name)) format.value = "f32le";
  const guess = (name.match(/\d{4,6}/g) ?? []).map(Number)
    .filter((n) => n >= 8000 && n <= 192000).pop();
  if (!rate.value && guess) rate.value = guess;
}

async function setFile(file) {
  if (document.body.dataset.state === "working") return; // one upload at a time
  const kind = await sniff(file);
  selectedFile = file;
  selectedKind = kind;
  clearError();
  hideResults();
  fileInfo.textContent = `${file.name} · ${formatBytes(file.size)}`;
  headerless.hidden = headerless.disabled = selectedKind !== null;
  if (selectedKind === null) prefillHeaderless(file.name);
  setState("idle");
}

fileInput.addEventListener("change", () => {
  if (fileInput.files.length) setFile(fileInput.files[0]);
});

dropZone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  if (event.dataTransfer.files.length) setFile(event.dataTransfer.files[0]);
});
// A file dropped beside the zone must not make the browser leave the page to open it.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

// ------------------------------------------------------------------ recording

// PCM from an AudioWorklet, written as 16-bit WAV here: the service takes WAV, not the
// webm/opus that MediaRecorder makes.
let recording = null;
let workletLoaded = null;

async function startRecording() {
  const ctx = context();
  await ctx.resume();
  // The raw microphone: the browser's own noise suppression would hide what the model is for.
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  workletLoaded ??= ctx.audioWorklet.addModule("/static/recorder-worklet.js");
  await workletLoaded;
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "pcm-recorder", { numberOfOutputs: 0 });
  const chunks = [];
  node.port.onmessage = ({ data }) => chunks.push(data);
  source.connect(node);
  const started = performance.now();
  const timer = setInterval(() => {
    recordButton.textContent = `■ Stop ${formatTime((performance.now() - started) / 1000)}`;
  }, 250);
  recording = { stream, source, node, chunks, timer };
  recordButton.textContent = "■ Stop 0:00";
  recordButton.setAttribute("aria-pressed", "true");
}

function stopRecording() {
  const { stream, source, node, chunks, timer } = recording;
  recording = null;
  clearInterval(timer);
  source.disconnect();
  node.port.onmessage = null;
  stream.getTracks().forEach((track) => track.stop());
  recordButton.textContent = "● Record";
  recordButton.setAttribute("aria-pressed", "false");
  const wav = encodeWav(chunks, context().sampleRate);
  setFile(new File([wav], "recording.wav", { type: "audio/wav" }));
}

function encodeWav(chunks, sampleRate) {
  const length = chunks.reduce((total, chunk) => total + chunk.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * length));
  const text = (offset, value) =>
    [...value].forEach((char, i) => view.setUint8(offset + i, char.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + 2 * length, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, 2 * sampleRate, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  view.setUint32(40, 2 * length, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (const sample of chunk) {
      view.setInt16(offset, Math.round(Math.max(-1, Math.min(1, sample)) * 32767), true);
      offset += 2;
    }
  }
  return view.buffer;
}

if (navigator.mediaDevices?.getUserMedia && window.AudioWorkletNode) {
  recordButton.addEventListener("click", () => {
    if (recording) {
      stopRecording();
    } else {
      startRecording().catch((error) => showError(`Could not record: ${error.message}`));
    }
  });
} else {
  // getUserMedia exists only on https:// or localhost pages.
  recordButton.disabled = true;
  recordButton.title = "Recording needs the page on https:// or localhost";
}

// ------------------------------------------------------------------ enhancing

function filenameFrom(disposition) {
  const encoded = disposition?.match(/filename\*=UTF-8''([^;]+)/i);
  if (encoded) return decodeURIComponent(encoded[1]);
  return disposition?.match(/filename="([^"]+)"/i)?.[1] ?? null;
}

function setDownload(blob, filename) {
  if (download.href.startsWith("blob:")) URL.revokeObjectURL(download.href);
  download.href = URL.createObjectURL(blob);
  download.download = filename;
  download.textContent = `Download ${filename}`;
}

function int16ToFloat(integers) {
  const samples = new Float32Array(integers.length);
  for (let i = 0; i < integers.length; i++) samples[i] = integers[i] / 32768;
  return samples;
}

// WAV and FLAC are decoded by the browser; headerless samples (mono, little-endian like
// every machine a browser runs on) are read here at the rate the server confirmed.
async function decode(blob, kind, format, sampleRate) {
  const bytes = await blob.arrayBuffer();
  if (kind !== null) return context().decodeAudioData(bytes);
  const samples = format === "s16le" ? int16ToFloat(new Int16Array(bytes))
    : new Float32Array(bytes);
  const buffer = context().createBuffer(1, samples.length, sampleRate);
  buffer.copyToChannel(samples, 0);
  return buffer;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!selectedFile || document.body.dataset.state === "working") return;
  const file = selectedFile;
  const kind = selectedKind;
  const data = new FormData(form); // the model, later options, and headerless fields
  for (const [key, value] of [...data]) if (value === "") data.delete(key);
  data.append("file", file, file.name);
  context();
  clearError();
  hideResults();
  const started = performance.now();
  const ticker = setInterval(() => setState("working",
    `Enhancing… ${formatTime((performance.now() - started) / 1000)}`), 1000);
  setState("working", "Enhancing…");
  try {
    let response;
    try {
      response = await fetch("/enhance", { method: "POST", body: data });
    } catch (error) {
      throw new Error(`Could not reach the service: ${error.message}`);
    }
    if (!response.ok) throw new Error(await errorDetail(response));
    const enhanced = await response.blob();
    const headers = response.headers;
    const sampleRate = Number(headers.get("X-Sample-Rate"));
    const seconds = Number(headers.get("X-Sample-Count")) / sampleRate;
    setDownload(enhanced, filenameFrom(headers.get("Content-Disposition"))
      ?? `enhanced_${file.name}`);
    clearInterval(ticker);
    setState("working", "Drawing…");
    let buffers;
    try {
      buffers = await Promise.all([file, enhanced].map(
        (blob) => decode(blob, kind, data.get("format"), sampleRate)));
    } catch (error) {
      throw new Error(`The browser could not decode the audio to show it (${error.message}); `
        + "the enhanced file can still be downloaded from the link above.");
    }
    await showResults(...buffers);
    const took = Number(headers.get("X-Processing-Time")).toFixed(2);
    setState("done", `Enhanced ${formatTime(seconds)} of audio (${headers.get("X-Channels")} `
      + `channel(s), ${sampleRate} Hz) with ${data.get("model")} in ${took} s.`);
  } catch (error) {
    showError(`Could not enhance ${file.name}: ${error.message}`);
  } finally {
    clearInterval(ticker);
  }
});

// ------------------------------------------------------------------ drawing

const worker = new Worker("/static/spectrogram-worker.js");
const jobs = new Map();
let nextJob = 0;

worker.onmessage = ({ data }) => {
  jobs.get(data.id).resolve(data);
  jobs.delete(data.id);
};
worker.onerror = (event) => {
  for (const job of jobs.values()) job.reject(new Error(`drawing failed: ${event.message}`));
  jobs.clear();
};

// The channels are copied to the worker; the AudioBuffer keeps its own for playback.
function analyse(buffer, columns) {
  const channels = Array.from({ length: buffer.numberOfChannels },
    (_, i) => buffer.getChannelData(i));
  return new Promise((resolve, reject) => {
    const id = nextJob++;
    jobs.set(id, { resolve, reject });
    worker.postMessage({ id, channels, sampleRate: buffer.sampleRate, columns });
  });
}

function drawWaveform(canvas, { columns, peaks }, scale) {
  canvas.width = columns;
  canvas.height = Math.round(canvas.clientHeight * devicePixelRatio);
  const g = canvas.getContext("2d");
  const middle = canvas.height / 2;
  g.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--wave");
  g.fillRect(0, Math.floor(middle), columns, 1);
  for (let x = 0; x < columns; x++) {
    const top = middle - (peaks[2 * x + 1] / scale) * middle;
    const bottom = middle - (peaks[2 * x] / scale) * middle;
    g.fillRect(x, top, 1, Math.max(1, bottom - top));
  }
}

function drawSpectrogram(canvas, { columns, rows, image }) {
  canvas.width = columns;
  canvas.height = rows;
  canvas.getContext("2d").putImageData(new ImageData(image, columns, rows), 0, 0);
}

async function showResults(before, after) {
  results.hidden = false;
  const track = players.before.querySelector(".track");
  // One column per device pixel: the cost depends on the page width, not the duration.
  const columns = Math.max(1, Math.min(4096, Math.round(track.clientWidth * devicePixelRatio)));
  const views = { before: await analyse(before, columns), after: await analyse(after, columns) };
  const scale = Math.max(views.before.peak, views.after.peak, 1e-6); // one scale for both
  for (const key of ["before", "after"]) {
    drawWaveform(players[key].querySelector(".waveform"), views[key], scale);
    drawSpectrogram($(`spectrogram-${key}`), views[key]);
  }
  loadPlayback(before, after);
}

function hideResults() {
  pause();
  results.hidden = true;
  // Blank, so the last file's pictures do not show while the next one is drawn.
  for (const canvas of results.querySelectorAll("canvas")) canvas.width = 0;
}

// ------------------------------------------------------------------ playback

// Both signals play from one Web Audio clock, each through its own gain: the A/B switch
// only moves the gains, so the two can never drift apart.
const playback = { buffers: null, gains: null, sources: [], offset: 0, startedAt: 0, frame: 0 };
let listening = "after";

function duration() {
  const { buffers } = playback;
  return buffers ? Math.max(buffers.before.duration, buffers.after.duration) : 0;
}

function position() {
  if (!playback.sources.length) return playback.offset;
  const played = Math.max(0, context().currentTime - playback.startedAt); // starts 50 ms late
  return Math.min(duration(), playback.offset + played);
}

function loadPlayback(before, after) {
  const ctx = context();
  if (!playback.gains) {
    playback.gains = { before: new GainNode(ctx), after: new GainNode(ctx) };
    Object.values(playback.gains).forEach((gain) => gain.connect(ctx.destination));
  }
  playback.buffers = { before, after };
  playback.offset = 0;
  seekBar.max = duration();
  listen(listening);
  updatePosition();
}

function play() {
  const ctx = context();
  ctx.resume();
  if (playback.offset >= duration()) playback.offset = 0;
  const when = ctx.currentTime + 0.05; // both start on the same future sample
  playback.sources = ["before", "after"].map((key) => {
    const source = ctx.createBufferSource();
    source.buffer = playback.buffers[key];
    source.connect(playback.gains[key]);
    source.start(when, playback.offset);
    return source;
  });
  playback.startedAt = when;
  playButton.textContent = "❚❚ Pause";
  playButton.setAttribute("aria-pressed", "true");
  cancelAnimationFrame(playback.frame); // a seek restarts playback: keep one redraw loop
  playback.frame = requestAnimationFrame(tick);
}

function pause() {
  if (!playback.sources.length) return;
  playback.offset = position();
  playback.sources.forEach((source) => source.stop());
  playback.sources = [];
  playButton.textContent = "▶ Play";
  playButton.setAttribute("aria-pressed", "false");
  updatePosition();
}

function seek(seconds) {
  const playing = playback.sources.length > 0;
  pause();
  playback.offset = Math.max(0, Math.min(duration(), seconds));
  if (playing) play();
  updatePosition();
}

function listen(key) {
  listening = key;
  if (playback.gains) {
    // A few milliseconds of fade, so switching does not click.
    const now = context().currentTime;
    for (const [name, gain] of Object.entries(playback.gains)) {
      gain.gain.setTargetAtTime(name === key ? 1 : 0, now, 0.005);
    }
  }
  for (const [name, player] of Object.entries(players)) {
    player.classList.toggle("listening", name === key);
  }
}

function updatePosition() {
  const now = position();
  const fraction = duration() ? now / duration() : 0;
  for (const player of Object.values(players)) {
    player.querySelector(".playhead").style.left = `${fraction * 100}%`;
  }
  seekBar.value = now;
  timeLabel.textContent = `${formatTime(now)} / ${formatTime(duration())}`;
}

function tick() {
  if (!playback.sources.length) return;
  if (position() >= duration()) {
    pause();
    return;
  }
  updatePosition();
  playback.frame = requestAnimationFrame(tick);
}

playButton.addEventListener("click", () => (playback.sources.length ? pause() : play()));
seekBar.addEventListener("input", () => seek(Number(seekBar.value)));
for (const player of Object.values(players)) {
  player.querySelector(".track").addEventListener("click", (event) => {
    const box = event.currentTarget.getBoundingClientRect();
    seek(((event.clientX - box.left) / box.width) * duration());
  });
}
for (const radio of document.querySelectorAll('input[name="listen"]')) {
  radio.addEventListener("change", () => listen(radio.value));
}

loadModels();
