// Waveform peaks and a spectrogram image for one signal, off the main thread: ten minutes
// at 48 kHz is ~29 million samples, which would freeze the page if analysed there.
//
// Message in:  {id, channels: [Float32Array, ...], sampleRate, columns}
// Message out: {id, columns, rows, peaks: Float32Array [min, max] per column, peak,
//               image: Uint8ClampedArray RGBA, columns × rows, highest frequency on top}

const FFT_SIZE = 2048;
const ROWS = 256;
const MIN_HZ = 50;
const FLOOR_DB = -100;
const MAX_FRAMES_PER_COLUMN = 4;

// Hann window; a full-scale sine then peaks at (FFT_SIZE / 4)², which is made 0 dB.
const WINDOW = Float32Array.from({ length: FFT_SIZE },
  (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / FFT_SIZE));
const FULL_SCALE_POWER = (FFT_SIZE / 4) ** 2;

// A perceptual dark-to-bright palette (close to "magma"), 256 entries of [r, g, b].
const PALETTE = (() => {
  const stops = [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109],
    [252, 253, 191]];
  return Array.from({ length: 256 }, (_, i) => {
    const x = (i / 255) * (stops.length - 1);
    const k = Math.min(Math.floor(x), stops.length - 2);
    const t = x - k;
    return stops[k].map((c, j) => Math.round(c + (stops[k + 1][j] - c) * t));
  });
})();

// An iterative radix-2 FFT of a real frame of n samples: fills power[k] = |X[k]|², k ≤ n/2.
function makeFft(n) {
  const bits = Math.log2(n);
  const reverse = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    let r = 0;
    for (let b = 0; b < bits; b++) r |= ((i >> b) & 1) << (bits - 1 - b);
    reverse[i] = r;
  }
  const cos = Float64Array.from({ length: n / 2 }, (_, k) => Math.cos((2 * Math.PI * k) / n));
  const sin = Float64Array.from({ length: n / 2 }, (_, k) => -Math.sin((2 * Math.PI * k) / n));
  const re = new Float64Array(n);
  const im = new Float64Array(n);
  return (frame, power) => {
    for (let i = 0; i < n; i++) {
      re[i] = frame[reverse[i]];
      im[i] = 0;
    }
    for (let size = 2; size <= n; size *= 2) {
      const half = size / 2;
      const step = n / size;
      for (let start = 0; start < n; start += size) {
        for (let k = 0; k < half; k++) {
          const a = start + k;
          const b = a + half;
          const c = cos[k * step];
          const s = sin[k * step];
          const tr = re[b] * c - im[b] * s;
          const ti = re[b] * s + im[b] * c;
          re[b] = re[a] - tr;
          im[b] = im[a] - ti;
          re[a] += tr;
          im[a] += ti;
        }
      }
    }
    for (let k = 0; k <= n / 2; k++) power[k] = re[k] * re[k] + im[k] * im[k];
  };
}

const fft = makeFft(FFT_SIZE);

function mixdown(channels) {
  if (channels.length === 1) return channels[0];
  const mono = new Float32Array(channels[0].length);
  for (const channel of channels) {
    for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / channels.length;
  }
  return mono;
}

function waveformPeaks(samples, columns) {
  const peaks = new Float32Array(2 * columns);
  let peak = 0;
  for (let c = 0; c < columns; c++) {
    const start = Math.floor((c * samples.length) / columns);
    const end = Math.max(start + 1, Math.floor(((c + 1) * samples.length) / columns));
    let min = 0;
    let max = 0;
    for (let i = start; i < end && i < samples.length; i++) {
      const v = samples[i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    peaks[2 * c] = min;
    peaks[2 * c + 1] = max;
    peak = Math.max(peak, -min, max);
  }
  return { peaks, peak };
}

// Each image row covers a band of FFT bins on a log frequency axis.
function rowBands(sampleRate) {
  const nyquist = sampleRate / 2;
  const binHz = sampleRate / FFT_SIZE;
  const lastBin = FFT_SIZE / 2;
  return Array.from({ length: ROWS }, (_, r) => {
    const low = MIN_HZ * (nyquist / MIN_HZ) ** (r / ROWS);
    const high = MIN_HZ * (nyquist / MIN_HZ) ** ((r + 1) / ROWS);
    const first = Math.min(lastBin, Math.round(low / binHz));
    return [first, Math.min(lastBin, Math.max(first, Math.round(high / binHz) - 1))];
  });
}

// One column per canvas pixel, whatever the length: a few frames are averaged inside each
// column instead of transforming every sample, so the cost does not grow with duration.
function spectrogramImage(samples, sampleRate, columns) {
  const image = new Uint8ClampedArray(columns * ROWS * 4);
  const bands = rowBands(sampleRate);
  const frame = new Float32Array(FFT_SIZE);
  const power = new Float64Array(FFT_SIZE / 2 + 1);
  const average = new Float64Array(FFT_SIZE / 2 + 1);
  const span = samples.length / columns;
  const frames = Math.min(MAX_FRAMES_PER_COLUMN, Math.max(1, Math.ceil(span / FFT_SIZE)));
  for (let c = 0; c < columns; c++) {
    average.fill(0);
    for (let f = 0; f < frames; f++) {
      const start = Math.round(c * span + ((f + 0.5) * span) / frames - FFT_SIZE / 2);
      for (let i = 0; i < FFT_SIZE; i++) {
        const j = start + i;
        frame[i] = j >= 0 && j < samples.length ? samples[j] * WINDOW[i] : 0;
      }
      fft(frame, power);
      for (let k = 0; k < power.length; k++) average[k] += power[k] / frames;
    }
    for (let r = 0; r < ROWS; r++) {
      let strongest = 0;
      for (let k = bands[r][0]; k <= bands[r][1]; k++) strongest = Math.max(strongest, average[k]);
      const db = 10 * Math.log10(strongest / FULL_SCALE_POWER + 1e-30);
      const level = Math.min(255, Math.max(0, Math.round(((db - FLOOR_DB) / -FLOOR_DB) * 255)));
      const [red, green, blue] = PALETTE[level];
      const pixel = ((ROWS - 1 - r) * columns + c) * 4;
      image[pixel] = red;
      image[pixel + 1] = green;
      image[pixel + 2] = blue;
      image[pixel + 3] = 255;
    }
  }
  return image;
}

self.onmessage = ({ data: { id, channels, sampleRate, columns } }) => {
  const samples = mixdown(channels);
  const { peaks, peak } = waveformPeaks(samples, columns);
  const image = spectrogramImage(samples, sampleRate, columns);
  self.postMessage({ id, columns, rows: ROWS, peaks, peak, image },
    [peaks.buffer, image.buffer]);
};
