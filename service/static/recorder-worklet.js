// Runs on the audio thread: hands each block of microphone samples (first channel) to the
// page, which keeps them and writes a WAV when recording stops.
class PcmRecorder extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0][0];
    if (channel) this.port.postMessage(channel.slice());
    return true;
  }
}

registerProcessor("pcm-recorder", PcmRecorder);
