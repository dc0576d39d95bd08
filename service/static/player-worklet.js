// Runs on the audio thread: plays the enhanced samples live mode receives, through a ring
// buffer kept short so the delay stays bounded.
//
// - It starts (and restarts after running dry) once `target` samples are queued, so a
//   little jitter in arrivals does not click.
// - When more than `limit` samples are queued (the network or the service caught up after
//   a stall), the oldest are dropped down to `target`: late audio is worth less than
//   current audio.
// Every ~50 ms it posts {queued, dropped, underruns} to the page.
class PcmPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { target, limit, capacity } = options.processorOptions;
    this.target = target;
    this.limit = limit;
    this.ring = new Float32Array(capacity);
    this.read = 0; // index of the oldest queued sample
    this.queued = 0;
    this.playing = false;
    this.dropped = 0;
    this.underruns = 0;
    this.sinceReport = 0;
    this.port.onmessage = ({ data }) => this.push(data);
  }

  push(samples) {
    const ring = this.ring;
    if (samples.length >= ring.length) samples = samples.subarray(samples.length - ring.length);
    const overflow = this.queued + samples.length - ring.length;
    if (overflow > 0) this.drop(overflow);
    let write = (this.read + this.queued) % ring.length;
    const first = Math.min(samples.length, ring.length - write);
    ring.set(samples.subarray(0, first), write);
    ring.set(samples.subarray(first), 0);
    this.queued += samples.length;
    if (this.queued > this.limit) this.drop(this.queued - this.target);
  }

  drop(count) {
    this.read = (this.read + count) % this.ring.length;
    this.queued -= count;
    this.dropped += count;
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.queued >= this.target) this.playing = true;
    if (this.playing) {
      const ring = this.ring;
      const count = Math.min(out.length, this.queued);
      for (let i = 0; i < count; i++) out[i] = ring[(this.read + i) % ring.length];
      this.read = (this.read + count) % ring.length;
      this.queued -= count;
      if (count < out.length) { // ran dry: the rest of the block stays silent
        this.playing = false;
        this.underruns++;
      }
    }
    this.sinceReport += out.length;
    if (this.sinceReport >= sampleRate / 20) {
      this.sinceReport = 0;
      this.port.postMessage({ queued: this.queued, dropped: this.dropped,
        underruns: this.underruns });
    }
    return true;
  }
}

registerProcessor("pcm-player", PcmPlayer);
