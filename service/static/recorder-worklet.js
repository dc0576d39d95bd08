// Runs on the audio thread: hands the microphone's samples (first channel) to the page.
// Without options it posts each 128-sample block (recording keeps them and writes a WAV);
// with processorOptions.chunkSize it posts chunks of exactly that many samples (live mode
// sends each as one WebSocket message, ~10 ms).
class PcmRecorder extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const size = options?.processorOptions?.chunkSize ?? 0;
    this.chunk = size > 0 ? new Float32Array(size) : null;
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0][0];
    if (!channel) return true;
    if (!this.chunk) {
      this.port.postMessage(channel.slice());
      return true;
    }
    let read = 0;
    while (read < channel.length) {
      const take = Math.min(channel.length - read, this.chunk.length - this.filled);
      this.chunk.set(channel.subarray(read, read + take), this.filled);
      this.filled += take;
      read += take;
      if (this.filled === this.chunk.length) {
        const size = this.chunk.length; // read before the transfer empties it
        this.port.postMessage(this.chunk, [this.chunk.buffer]);
        this.chunk = new Float32Array(size);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-recorder", PcmRecorder);
