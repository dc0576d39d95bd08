// The try-it page: pick, drop or record audio, POST it to /enhance, then play the original
// and the enhanced audio on one timeline, each drawn as a waveform and a spectrogram.
// Every request goes to this origin; body[data-state] is idle / working / done / error.
// Live mode (at the end) streams the microphone through WebSocket /enhance/stream and plays
// the enhanced audio back; body[data-live] is off / connecting / on / error.

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

// The optional API key: the X-API-Key header for /enhance, the api_key query for the stream.
function apiKey() {
  return $("api-key").value.trim();
}

function keyHeader() {
  return apiKey() ? { "X-API-Key": apiKey() } : {};
}

// ------------------------------------------------------------------ models

async function loadModels() {
  try {
    const response = await fetch("/models");
    if (!response.ok) throw new Error(await errorDetail(response));
    for (const model of await response.json()) {
      const option = new Option(model.name, model.name, model.default, model.default);
      option.dataset.info = [model.description, `${model.sample_rate / 1000} kHz model`,
        `${model.latency_ms} ms latency in a stream`].filter(Boolean).join(" · ");
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
let workletsLoaded = null;

// The capture processor (recording and live) and the playback one (live).
function loadWorklets(ctx) {
  workletsLoaded ??= Promise.all(["recorder-worklet.js", "player-worklet.js"]
    .map((name) => ctx.audioWorklet.addModule(`/static/${name}`)));
  return workletsLoaded;
}

async function startRecording() {
  const ctx = context();
  await ctx.resume();
  // The raw microphone: the browser's own noise suppression would hide what the model is for.
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  await loadWorklets(ctx);
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

// ------------------------------------------------------------------ long files as jobs

// Files longer than this (seconds of audio) go to POST /jobs: one request would hold the
// whole file and answer, with no progress, within the service's request timeout.
function jobSeconds() {
  const asked = new URLSearchParams(location.search).get("job_seconds");
  return Number(asked ?? document.body.dataset.jobSeconds ?? 300);
}

// The duration from the file's header only (an <audio> element reads the metadata, not the
// samples); headerless samples are mono, so their size says it. null when unknown.
function durationOf(file, kind, format, sampleRate) {
  if (kind === null) {
    return sampleRate ? file.size / ((format === "s16le" ? 2 : 4) * sampleRate) : null;
  }
  return new Promise((resolve) => {
    const audio = new Audio();
    const url = URL.createObjectURL(file);
    const done = (seconds) => {
      clearTimeout(timer);
      URL.revokeObjectURL(url);
      audio.removeAttribute("src");
      resolve(Number.isFinite(seconds) ? seconds : null);
    };
    const timer = setTimeout(() => done(null), 5000);
    audio.preload = "metadata";
    audio.onloadedmetadata = () => done(audio.duration);
    audio.onerror = () => done(null);
    audio.src = url;
  });
}

const jobProgress = $("job-progress");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function showJob(job) {
  jobProgress.hidden = false;
  jobProgress.value = job.progress;
  const left = job.eta_s != null ? ` · about ${formatTime(job.eta_s)} left` : "";
  const what = job.status === "queued" ? "Queued" : "Enhancing";
  setState("working", `${what} as a job… ${Math.round(job.progress * 100)}%${left}`);
}

// The service has no push for jobs: ask every 0.5 s at first, growing to every 5 s, so a
// short job ends quickly and a long one costs the server little.
async function followJob(job) {
  let interval = 500;
  while (job.status === "queued" || job.status === "running") {
    showJob(job);
    await sleep(interval);
    interval = Math.min(5000, interval * 1.5);
    const response = await fetch(`/jobs/${job.id}`, { headers: keyHeader() });
    if (!response.ok) throw new Error(await errorDetail(response));
    job = await response.json();
  }
  showJob(job);
  if (job.status !== "succeeded") throw new Error(job.error ?? `the job was ${job.status}`);
  return job;
}

async function enhanceAsJob(data) {
  setState("working", "Uploading as a job…");
  const response = await reach("/jobs", { method: "POST", body: data, headers: keyHeader() });
  if (!response.ok) throw new Error(await errorDetail(response));
  const job = await followJob(await response.json());
  setState("working", "Downloading…");
  const result = await reach(job.result_url, { headers: keyHeader() });
  if (!result.ok) throw new Error(await errorDetail(result));
  const took = (Date.parse(job.finished_at) - Date.parse(job.started_at)) / 1000;
  return {
    enhanced: await result.blob(),
    filename: filenameFrom(result.headers.get("Content-Disposition")),
    sampleRate: Number(data.get("sample_rate")),
    summary: `Enhanced ${formatTime(job.audio_seconds)} of audio as a job with `
      + `${data.get("model")} in ${took.toFixed(2)} s.`,
  };
}

// ------------------------------------------------------------------ enhancing in one request

async function reach(url, options) {
  try {
    return await fetch(url, options);
  } catch (error) {
    throw new Error(`Could not reach the service: ${error.message}`);
  }
}

async function enhanceNow(data) {
  const response = await reach("/enhance", { method: "POST", body: data, headers: keyHeader() });
  if (!response.ok) throw new Error(await errorDetail(response));
  const enhanced = await response.blob();
  const headers = response.headers;
  const sampleRate = Number(headers.get("X-Sample-Rate"));
  const seconds = Number(headers.get("X-Sample-Count")) / sampleRate;
  const took = Number(headers.get("X-Processing-Time")).toFixed(2);
  return {
    enhanced,
    filename: filenameFrom(headers.get("Content-Disposition")),
    sampleRate,
    summary: `Enhanced ${formatTime(seconds)} of audio (${headers.get("X-Channels")} `
      + `channel(s), ${sampleRate} Hz) with ${data.get("model")} in ${took} s.`,
  };
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
  jobProgress.hidden = true;
  const started = performance.now();
  let ticker = null;
  setState("working", "Enhancing…");
  try {
    const seconds = await durationOf(file, kind, data.get("format"),
      Number(data.get("sample_rate")));
    let result;
    if (seconds !== null && seconds > jobSeconds()) {
      result = await enhanceAsJob(data);
    } else {
      ticker = setInterval(() => setState("working",
        `Enhancing… ${formatTime((performance.now() - started) / 1000)}`), 1000);
      result = await enhanceNow(data);
    }
    setDownload(result.enhanced, result.filename ?? `enhanced_${file.name}`);
    clearInterval(ticker);
    setState("working", "Drawing…");
    let buffers;
    try {
      buffers = await Promise.all([file, result.enhanced].map(
        (blob) => decode(blob, kind, data.get("format"), result.sampleRate)));
    } catch (error) {
      throw new Error(`The browser could not decode the audio to show it (${error.message}); `
        + "the enhanced file can still be downloaded from the link above.");
    }
    await showResults(...buffers);
    setState("done", result.summary);
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

// ------------------------------------------------------------------ live mode

// Microphone → AudioWorklet (10 ms chunks) → WebSocket /enhance/stream (f32le mono at the
// AudioContext's rate) → AudioWorklet playback queue. The raw microphone also goes to the
// speakers through its own gain: the bypass switch only moves the two gains.
const liveStart = $("live-start");
const liveStop = $("live-stop");
const liveBypass = $("live-bypass");
const liveStatus = $("live-status");
const liveLatency = $("live-latency");
const liveFraming = $("live-framing");
const liveQueue = $("live-queue");
const liveServer = $("live-server");
const liveCounts = $("live-counts");
const liveLevel = $("live-level");

const QUEUE_TARGET_S = 0.03; // playback starts with this much queued...
const QUEUE_LIMIT_S = 0.1; // ...and drops the oldest audio past this
const KEEP_RECEIVED_S = 10; // window.liveReceived keeps the latest 10 s (read by the tests)
const SEND_BACKLOG_S = 0.5; // chunks are skipped while this much is still unsent
const LEVEL_COLUMNS = 600; // 10 ms each on the level strip: the last 6 s

let live = null;

function setLive(state, message) {
  document.body.dataset.live = state;
  liveStatus.textContent = message;
  liveStart.disabled = state === "connecting" || state === "on";
  liveStop.disabled = !(state === "connecting" || state === "on");
}

function showLiveError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  setLive("error", "Stopped.");
}

function resetLiveStats(sampleRate) {
  window.liveStats = { samplesSent: 0, samplesReceived: 0, chunksSent: 0, chunksReceived: 0,
    chunksSkipped: 0, latencyMs: null, queuedMs: 0, droppedSamples: 0, underruns: 0 };
  window.liveReceived = [];
  window.liveSampleRate = sampleRate;
  window.liveSummary = null;
  for (const shown of [liveLatency, liveQueue, liveServer, liveCounts]) shown.textContent = "–";
  liveFraming.textContent = "";
}

function closeReason(code, reason) {
  if (code === 1006 || !reason) {
    return `the connection to the service was lost (code ${code})`;
  }
  const hint = code === 4401 ? " Type the service's key in the API key field above." : "";
  return `${reason} (code ${code}).${hint}`;
}

async function startLive() {
  if (live) return;
  const model = modelSelect.value;
  if (!model) {
    showLiveError("Live mode needs a model: the list of models did not load.");
    return;
  }
  clearError();
  setLive("connecting", "Opening the microphone…");
  const ctx = context();
  const session = live = { ctx, closing: false, timers: [] };
  try {
    await ctx.resume();
    session.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false,
        autoGainControl: false },
    });
    await loadWorklets(ctx);
  } catch (error) {
    teardownLive(session);
    if (live === session) live = null;
    showLiveError(`Could not open the microphone: ${error.message}`);
    return;
  }
  // The microphone went away (unplugged, or the permission revoked): stop as if asked.
  session.stream.getAudioTracks()[0]?.addEventListener("ended", () => stopLive());
  if (live !== session) { // stopped while the microphone opened
    teardownLive(session);
    return;
  }
  const rate = ctx.sampleRate;
  resetLiveStats(rate);
  Object.assign(session, {
    rate, chunkSize: Math.round(rate / 100), algorithmicMs: 0,
    sentEnds: [], sentTimes: [], sentHead: 0, latencies: [],
    levels: { mic: new Float32Array(LEVEL_COLUMNS), out: new Float32Array(LEVEL_COLUMNS),
      micCount: 0, outCount: 0, outSum: 0, outFill: 0 },
  });
  const query = new URLSearchParams({ sample_rate: rate, encoding: "f32le", channels: 1, model });
  if (apiKey()) query.set("api_key", apiKey());
  const limit = document.getElementById("atten-lim-db").value;
  if (limit !== "") query.set("atten_lim_db", limit);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  setLive("connecting", `Connecting to ${model}…`);
  const socket = session.socket = new WebSocket(
    `${scheme}://${location.host}/enhance/stream?${query}`);
  socket.binaryType = "arraybuffer";
  socket.onmessage = ({ data }) => {
    if (typeof data === "string") onLiveText(session, JSON.parse(data));
    else onLiveAudio(session, new Float32Array(data));
  };
  socket.onclose = ({ code, reason }) => onLiveClose(session, code, reason);
}

function onLiveText(session, message) {
  if (message.type === "ready") {
    session.algorithmicMs = message.algorithmic_latency_ms;
    startLiveAudio(session);
    liveServer.textContent = "at the end";
    setLive("on", `Live: ${message.model}, ${message.sample_rate} Hz.`);
  } else if (message.type === "summary") {
    session.summary = window.liveSummary = message;
    const { p50, p99 } = message.latency_ms;
    liveServer.textContent = `${p50.toFixed(1)} / ${p99.toFixed(1)} ms`;
  }
}

// Capture and playback start once the service is ready, so the first chunk's round trip
// does not include the connection.
function startLiveAudio(session) {
  const { ctx, stream, chunkSize, rate } = session;
  session.source = ctx.createMediaStreamSource(stream);
  session.capture = new AudioWorkletNode(ctx, "pcm-recorder",
    { numberOfOutputs: 0, processorOptions: { chunkSize } });
  session.player = new AudioWorkletNode(ctx, "pcm-player", {
    numberOfInputs: 0, outputChannelCount: [1],
    processorOptions: { target: Math.round(QUEUE_TARGET_S * rate),
      limit: Math.round(QUEUE_LIMIT_S * rate), capacity: rate } });
  session.gains = { raw: new GainNode(ctx, { gain: 0 }), enhanced: new GainNode(ctx, { gain: 0 }) };
  session.source.connect(session.capture);
  session.source.connect(session.gains.raw).connect(ctx.destination);
  session.player.connect(session.gains.enhanced).connect(ctx.destination);
  setBypass(session);
  session.capture.port.onmessage = ({ data }) => sendChunk(session, data);
  session.player.port.onmessage = ({ data }) => {
    Object.assign(window.liveStats, { queuedMs: (1000 * data.queued) / rate,
      droppedSamples: data.dropped, underruns: data.underruns });
  };
  session.timers.push(setInterval(() => showLiveStats(session), 250));
  session.frame = requestAnimationFrame(() => drawLevels(session));
}

function sendChunk(session, samples) {
  const { socket, rate } = session;
  if (session.closing || socket.readyState !== WebSocket.OPEN) return;
  const stats = window.liveStats;
  if (socket.bufferedAmount > SEND_BACKLOG_S * rate * 4) { // the network does not keep up
    stats.chunksSkipped++;
    return;
  }
  socket.send(samples);
  stats.samplesSent += samples.length;
  stats.chunksSent++;
  session.sentEnds.push(stats.samplesSent);
  session.sentTimes.push(performance.now());
  addLevel(session.levels, "mic", rms(samples));
}

function onLiveAudio(session, samples) {
  const now = performance.now();
  const stats = window.liveStats;
  stats.samplesReceived += samples.length;
  stats.chunksReceived++;
  // The round trip of this message's newest sample: from sending the chunk that held it.
  const newest = stats.samplesReceived; // 1-based index of the newest sample
  const { sentEnds, sentTimes } = session;
  while (session.sentHead < sentEnds.length && sentEnds[session.sentHead] < newest) {
    session.sentHead++;
  }
  if (session.sentHead < sentEnds.length) {
    session.latencies.push([now, now - sentTimes[session.sentHead]]);
  }
  if (session.sentHead > 1000) { // forget what was matched already
    sentEnds.splice(0, session.sentHead);
    sentTimes.splice(0, session.sentHead);
    session.sentHead = 0;
  }
  if (session.player && samples.length) {
    keepReceived(session, samples);
    levelsOfOutput(session, samples);
    session.player.port.postMessage(samples);
  }
}

function keepReceived(session, samples) {
  const kept = window.liveReceived;
  kept.push(samples.slice()); // the player takes the original
  session.kept = (session.kept ?? 0) + samples.length;
  while (session.kept - kept[0].length >= KEEP_RECEIVED_S * session.rate) {
    session.kept -= kept.shift().length;
  }
}

function onLiveClose(session, code, reason) {
  // Stopped by the user: the service's normal close, or the browser's own when the
  // connection had not opened yet. A close with a service error code is still an error.
  const ended = session.closing && [1000, 1005, 1006].includes(code);
  const summary = session.summary;
  teardownLive(session);
  if (live === session) live = null;
  showLiveStats(session);
  if (ended) {
    const seconds = (count) => `${(count / session.rate).toFixed(2)} s`;
    setLive("off", summary ? `Stopped: ${seconds(summary.samples_in)} sent in `
      + `${summary.chunks} chunks, ${seconds(summary.samples_out)} back.` : "Stopped.");
  } else {
    showLiveError(`Live stream stopped: ${closeReason(code, reason)}`);
  }
}

function stopLive() {
  const session = live;
  if (!session || session.closing) return;
  session.closing = true;
  // No more microphone; the service flushes the tail, sends its summary and closes.
  if (session.capture) session.capture.port.onmessage = null;
  session.source?.disconnect(session.capture);
  session.stream?.getTracks().forEach((track) => track.stop());
  const socket = session.socket;
  if (socket?.readyState === WebSocket.OPEN && document.body.dataset.live === "on") {
    socket.send(JSON.stringify({ type: "end" }));
    liveStatus.textContent = "Finishing…";
    // The service answers at once; a stuck connection is closed after 5 s.
    session.timers.push(setTimeout(() => socket.close(1000), 5000));
  } else if (socket) {
    socket.close(1000); // still connecting
  } else {
    setLive("off", "Stopped."); // the microphone was still opening
    live = null;
  }
}

function teardownLive(session) {
  session.timers.forEach((timer) => { clearInterval(timer); clearTimeout(timer); });
  cancelAnimationFrame(session.frame);
  session.stream?.getTracks().forEach((track) => track.stop());
  session.source?.disconnect();
  session.capture?.disconnect();
  if (session.capture) session.capture.port.onmessage = null;
  session.player?.disconnect();
  if (session.player) session.player.port.onmessage = null;
  Object.values(session.gains ?? {}).forEach((gain) => gain.disconnect());
  if (session.socket && session.socket.readyState <= WebSocket.OPEN) session.socket.close(1000);
}

function setBypass(session) {
  if (!session?.gains) return;
  const now = session.ctx.currentTime;
  session.gains.raw.gain.setTargetAtTime(liveBypass.checked ? 1 : 0, now, 0.005);
  session.gains.enhanced.gain.setTargetAtTime(liveBypass.checked ? 0 : 1, now, 0.005);
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)] : null;
}

function showLiveStats(session) {
  const stats = window.liveStats;
  const now = performance.now();
  session.latencies = session.latencies.filter(([at]) => now - at < 1000);
  const latency = median(session.latencies.map(([, ms]) => ms));
  if (latency !== null) stats.latencyMs = latency;
  if (stats.latencyMs !== null) liveLatency.textContent = `${Math.round(stats.latencyMs)} ms`;
  liveFraming.textContent = `(framing ${session.algorithmicMs.toFixed(1)} ms)`;
  liveQueue.textContent = `${Math.round(stats.queuedMs)} ms`
    + (stats.droppedSamples ? `, ${(stats.droppedSamples / session.rate).toFixed(2)} s dropped`
      : "");
  liveCounts.textContent = `${(stats.samplesSent / session.rate).toFixed(2)} s / `
    + `${(stats.samplesReceived / session.rate).toFixed(2)} s`;
}

// ---- the level strip: microphone (grey) and enhanced (blue), aligned by sample index

function rms(samples) {
  let sum = 0;
  for (const sample of samples) sum += sample * sample;
  return Math.sqrt(sum / Math.max(1, samples.length));
}

function addLevel(levels, key, value) {
  levels[key][levels[`${key}Count`] % LEVEL_COLUMNS] = value;
  levels[`${key}Count`]++;
}

// Received messages come in hops of any size: cut them into the 10 ms columns.
function levelsOfOutput(session, samples) {
  const { levels, chunkSize } = session;
  for (const sample of samples) {
    levels.outSum += sample * sample;
    if (++levels.outFill === chunkSize) {
      addLevel(levels, "out", Math.sqrt(levels.outSum / chunkSize));
      levels.outSum = 0;
      levels.outFill = 0;
    }
  }
}

function drawLevels(session) {
  const canvas = liveLevel;
  const width = Math.round(canvas.clientWidth * devicePixelRatio);
  const height = Math.round(canvas.clientHeight * devicePixelRatio);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, width, height);
  const { levels } = session;
  const last = levels.micCount; // the right edge: the newest microphone column
  const step = width / LEVEL_COLUMNS;
  const y = (level) => height - Math.max(0, Math.min(1, (20 * Math.log10(level + 1e-9) + 60) / 60))
    * height; // −60 to 0 dBFS
  const first = Math.max(0, last - LEVEL_COLUMNS);
  const x = (i) => (i - (last - LEVEL_COLUMNS)) * step;
  // The microphone as a grey area, the enhanced audio as a blue line over it.
  g.fillStyle = "#d5dae3";
  for (let i = first; i < last; i++) {
    const top = y(levels.mic[i % LEVEL_COLUMNS]);
    g.fillRect(x(i), top, Math.ceil(step), height - top);
  }
  g.strokeStyle = "#2f6fde";
  g.lineWidth = devicePixelRatio * 1.5;
  g.beginPath();
  for (let i = first; i < Math.min(last, levels.outCount); i++) {
    const value = y(levels.out[i % LEVEL_COLUMNS]);
    if (i === first) g.moveTo(x(i), value);
    else g.lineTo(x(i), value);
  }
  g.stroke();
  session.frame = requestAnimationFrame(() => drawLevels(session));
}

if (window.WebSocket && navigator.mediaDevices?.getUserMedia && window.AudioWorkletNode) {
  liveStart.addEventListener("click", () => startLive());
  liveStop.addEventListener("click", () => stopLive());
  liveBypass.addEventListener("change", () => setBypass(live));
  resetLiveStats(null);
  setLive("off", "");
} else {
  liveStart.title = "Live mode needs the page on https:// or localhost";
  setLive("off", "Live mode needs the page on https:// or localhost.");
  liveStart.disabled = true;
}

loadModels();
