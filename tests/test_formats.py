"""Containers, encodings, rates and channels: what comes in goes back out the same way."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from enhancer.audio.containers import mpeg_frame
from enhancer.audio.decode import decode_audio, probe_audio
from enhancer.audio.encode import AudioWriter, encode_audio, quantize
from enhancer.audio.formats import AUDIO_SUFFIXES, MEDIA_TYPES, SUPPORTED_FORMATS_TEXT, AudioFormat
from enhancer.errors import InvalidAudio, UnsupportedFormat
from tests.audio_builders import audio_bytes, lossy_audio, make_audio, wav_with_bits
from tests.helpers import SAMPLES

FORMATS = [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"),
           ("FLAC", "PCM_16"), ("FLAC", "PCM_24"), ("raw", "f32le"), ("raw", "s16le")]
RATES = [8000, 16000, 22050, 44100, 48000, 96000]
FULL_SCALE = {"PCM_16": 2**15, "PCM_24": 2**23, "PCM_32": 2**31, "s16le": 2**15}


def cases():
    for container, subtype in FORMATS:
        for rate in RATES:
            for channels in (1, 2):
                if container == "raw" and channels == 2:
                    continue  # headerless audio is mono: nothing in it says otherwise
                yield container, subtype, rate, channels


@pytest.mark.parametrize("container, subtype, rate, channels", list(cases()))
def test_round_trip_keeps_format_rate_channels_and_length(pool, container, subtype, rate,
                                                          channels):
    data = make_audio(container, subtype, rate, channels)
    decoded = decode_audio(data, subtype if container == "raw" else "f32le", rate)
    assert decoded.format == AudioFormat(container, subtype)
    assert decoded.sample_rate == rate and decoded.channels == channels
    enhanced = pool.enhance(decoded.samples, rate)
    assert enhanced.shape == decoded.samples.shape and enhanced.dtype == np.float32
    encoded, clipped = encode_audio(enhanced, rate, decoded.format)
    assert clipped == 0  # 3 × noise within ±0.3 stays in range
    if container == "raw":
        assert len(encoded) == len(data)
    else:
        info = sf.info(io.BytesIO(encoded))
        assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
            container, subtype, rate, channels, decoded.samples.shape[0])
    again = decode_audio(encoded, subtype if container == "raw" else "f32le", rate)
    if rate == 48000:  # the model's rate: no resampling, so nothing but the model acts
        if subtype in ("FLOAT", "f32le"):
            np.testing.assert_array_equal(again.samples, decoded.samples * np.float32(3))
        else:
            lsb = 1 / FULL_SCALE[subtype]
            np.testing.assert_allclose(again.samples, decoded.samples * 3, rtol=0,
                                       atol=lsb * (1.01 if subtype != "PCM_32" else 256))
    else:
        core = slice(len(enhanced) // 10, -len(enhanced) // 10)
        error = again.samples[core] - 3 * decoded.samples[core]
        assert np.sqrt(np.mean(error**2)) < 0.05 * np.sqrt(np.mean((3 * decoded.samples) ** 2))


@pytest.mark.parametrize("rate", [8000, 11025, 12345, 22050, 32000, 88200, 176400, 192000])
def test_any_integer_rate_is_resampled_there_and_back(pool, rate):
    audio = (np.random.default_rng(rate).standard_normal(rate // 3) * 0.1).astype(np.float32)
    assert pool.enhance(audio, rate).shape == audio.shape


def test_channels_are_enhanced_separately_and_kept_in_order(pool):
    left = np.linspace(-0.1, 0.1, 30_000, dtype=np.float32)
    stereo = np.stack([left, np.zeros_like(left), -left], axis=1)
    out = pool.enhance(stereo, 48000)
    np.testing.assert_array_equal(out, stereo * np.float32(3))


def test_integer_output_saturates_and_counts_clipped_samples():
    ints, clipped = quantize(np.array([1.5, -1.5, 0.999, -1.0, 0.5], np.float32), 32768)
    assert ints.tolist() == [32767, -32768, 32735, -32768, 16384]
    assert clipped == 2
    encoded, clipped = encode_audio(np.array([2.0, -2.0, 0.25], np.float32), 16000,
                                    AudioFormat("WAV", "PCM_24"))
    assert clipped == 2
    data, _ = sf.read(io.BytesIO(encoded), dtype="int32")
    assert (data >> 8).tolist() == [2**23 - 1, -(2**23), 2**21]


def test_float_output_keeps_values_above_one():
    encoded, clipped = encode_audio(np.array([1.5, -3.0], np.float32), 48000,
                                    AudioFormat("WAV", "FLOAT"))
    assert clipped == 0
    assert sf.read(io.BytesIO(encoded), dtype="float32")[0].tolist() == [1.5, -3.0]


@pytest.mark.parametrize("container, subtype", FORMATS)
def test_the_services_byte_view_of_an_encoding_is_the_encoding(container, subtype):
    """The service answers from a view of the encoded bytes (a copy of a long answer would
    hold the GIL, and the event loop with it); the view holds the same bytes."""
    from enhancer.audio.encode import encode_audio_view

    samples = np.random.default_rng(3).uniform(-1.2, 1.2, (4000, 2)).astype(np.float32)
    fmt = AudioFormat(container, subtype)
    view, clipped = encode_audio_view(samples, 16000, fmt)
    assert isinstance(view, memoryview) and view.format == "B" and view.ndim == 1
    assert (bytes(view), clipped) == encode_audio(samples, 16000, fmt)
    assert clipped > 0 if fmt.is_integer else clipped == 0


def test_broken_inputs_give_clear_errors():
    wav = (SAMPLES / "speech_stereo_48000.wav").read_bytes()
    with pytest.raises(InvalidAudio, match="the WAV data is truncated: its header announces "
                                           "4954260 bytes of samples, 99956 are present"):
        decode_audio(wav[:100_000])
    flac = bytearray(make_audio("FLAC", "PCM_16", 16000, 1))
    flac[8:20] = b"\xff" * 12
    with pytest.raises(InvalidAudio):
        decode_audio(bytes(flac))
    with pytest.raises(InvalidAudio, match="cannot read the FLAC data"):
        decode_audio(b"fLaC" + b"\x00" * 50)
    with pytest.raises(InvalidAudio, match="cannot read the Ogg data"):
        decode_audio(b"OggS" + b"\x00" * 100)
    with pytest.raises(UnsupportedFormat, match="WAV subtype ULAW is not supported"):
        decode_audio(audio_bytes(np.zeros(100), 8000, "WAV", "ULAW"))
    with pytest.raises(UnsupportedFormat, match="unknown raw format 's24le'"):
        decode_audio(b"\x00" * 12, "s24le", 48000)
    with pytest.raises(InvalidAudio, match="3 bytes is not a whole number of s16le samples"):
        decode_audio(b"\x00" * 3, "s16le", 48000)


# ------------------------------------------------------------------ lossy formats libsndfile reads

LOSSY = [("MP3", "MPEG_LAYER_III", 44100), ("MP3", "MPEG_LAYER_III", 16000),
         ("OGG", "VORBIS", 22050), ("OGG", "OPUS", 48000), ("OGG", "OPUS", 16000)]


@pytest.mark.parametrize("container, subtype, rate", LOSSY)
@pytest.mark.parametrize("channels", [1, 2])
def test_mp3_and_ogg_are_decoded_and_come_back_in_their_format(pool, container, subtype, rate,
                                                               channels):
    data, tone = lossy_audio(container, subtype, rate, channels)
    decoded = decode_audio(data)
    assert decoded.format == AudioFormat(container, subtype)
    assert decoded.format.media_type == MEDIA_TYPES[container]
    assert (decoded.sample_rate, decoded.channels) == (rate, channels)
    assert decoded.samples.shape[0] == len(tone) and decoded.samples.dtype == np.float32
    enhanced = pool.enhance(decoded.samples, rate)
    encoded, clipped = encode_audio(enhanced, rate, decoded.format)
    assert clipped == 0  # like float formats, lossy ones keep values above full scale
    info = sf.info(io.BytesIO(encoded))
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
        container, subtype, rate, channels, len(tone))
    again = decode_audio(encoded)
    # Encoded twice, lossily: 3 × the tone, give or take the codec.
    core = slice(len(tone) // 5, -len(tone) // 5)
    error = again.samples[core] - 3 * decoded.samples[core]
    assert np.sqrt(np.mean(error**2)) < 0.2 * np.sqrt(np.mean((3 * decoded.samples) ** 2))


def test_lossy_formats_are_listed_everywhere():
    for name in ("MP3", "Ogg Vorbis", "Ogg Opus"):
        assert name in SUPPORTED_FORMATS_TEXT
    assert {".mp3", ".ogg", ".opus"} <= AUDIO_SUFFIXES
    assert MEDIA_TYPES["MP3"] == "audio/mpeg" and MEDIA_TYPES["OGG"] == "audio/ogg"


def test_an_mp3_without_a_length_header_is_refused_not_cut_short():
    # libsndfile takes an MP3's length from its Xing/Info frame, or guesses it (badly)
    # and stops there; the frames themselves say how long it is.
    data, _ = lossy_audio("MP3", "MPEG_LAYER_III", 48000, 1, seconds=10)
    # The first frame (MPEG-1 layer III at 48 kHz) holds the Xing/Info header: drop it.
    bitrate = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[data[2] >> 4]
    first_frame = 144 * bitrate * 1000 // 48000 + ((data[2] >> 1) & 1)
    assert b"Xing" in data[:first_frame] or b"Info" in data[:first_frame]
    with pytest.raises(InvalidAudio, match=r"the MP3 data holds about 4[0-9]{5} samples per "
                                           r"channel, but libsndfile decodes only [0-9]+: it "
                                           r"has no Xing/Info header"):
        decode_audio(data[first_frame:])


@pytest.mark.parametrize("data, name", [
    (b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + b"\x00" * 200, "M4A/MP4"),
    (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200, "M4A/MP4"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81" + b"\x00" * 200, "WebM/Matroska"),
    (b"FORM\x00\x00\x00\x10AIFF" + b"\x00" * 200, "AIFF"),
])
def test_other_containers_are_named_not_read_as_headerless(data, name):
    with pytest.raises(UnsupportedFormat, match=f"^{name} audio is not supported; supported "
                                                f"formats: WAV"):
        decode_audio(data, "f32le", 48000)


def adts_frames(count: int = 4, length: int = 200) -> bytes:
    """Raw AAC: ADTS headers (sync, MPEG-4, layer 0, no CRC, 44.1 kHz, stereo) and filler."""
    header = bytes([0xFF, 0xF1, 0x50, 0x80 | (length >> 11), (length >> 3) & 0xFF,
                    ((length & 7) << 5) | 0x1F, 0xFC])
    return (header + b"\x00" * (length - len(header))) * count


def test_raw_aac_is_named():
    with pytest.raises(UnsupportedFormat, match=r"^AAC \(ADTS\) audio is not supported"):
        decode_audio(adts_frames(), "s16le", 48000)


def test_headerless_samples_that_start_like_an_mpeg_frame_are_still_headerless():
    # 0xFFFB is an MPEG-1 layer III sync word; a single one is not a stream.
    for seed in range(200):
        samples = np.random.default_rng(seed).integers(-3000, 3000, 4000).astype("<i2")
        data = b"\xff\xfb" + samples.tobytes()[2:]
        decoded = decode_audio(data, "s16le", 16000)
        assert decoded.format == AudioFormat("raw", "s16le")
        assert decoded.samples.shape == (4000,)


@pytest.mark.parametrize("bits", [7, 12, 0, 8, 24])
def test_a_wav_header_that_disagrees_with_its_block_size_is_refused(bits):
    # libsndfile reads a 7-bit header over 16-bit data as 8-bit noise.
    with pytest.raises(InvalidAudio, match=f"the WAV header is inconsistent: {bits} bits per "
                                           f"sample and a block of 2 bytes"):
        decode_audio(wav_with_bits(bits))
    assert decode_audio(wav_with_bits(16)).format == AudioFormat("WAV", "PCM_16")


def test_probe_reads_the_header_only():
    data = make_audio("FLAC", "PCM_24", 44100, 2, seconds=2)
    info = probe_audio(data)
    assert (info.format, info.sample_rate, info.channels, info.frames) == (
        AudioFormat("FLAC", "PCM_24"), 44100, 2, 88200)
    assert info.seconds == 2
    raw = probe_audio(b"\x00" * 3200, "s16le", 16000)
    assert (raw.format, raw.frames, raw.channels, raw.seconds) == (
        AudioFormat("raw", "s16le"), 1600, 1, 0.1)


@pytest.mark.parametrize("container, subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_24"),
                                                ("OGG", "VORBIS"), ("raw", "s16le")])
def test_writing_in_blocks_equals_encoding_at_once(tmp_path, container, subtype):
    samples = (np.random.default_rng(2).standard_normal((30_000, 2 if container != "raw" else 1))
               * 0.5).astype(np.float32)
    if container == "raw":
        samples = samples[:, 0]
    fmt = AudioFormat(container, subtype)
    whole, clipped = encode_audio(samples, 16000, fmt)
    with open(tmp_path / "blocks", "w+b") as f:
        with AudioWriter(f, fmt, 16000, 1 if samples.ndim == 1 else 2) as writer:
            for start in range(0, len(samples), 7000):
                writer.write(samples[start:start + 7000])
        assert writer.clipped == clipped
    written = (tmp_path / "blocks").read_bytes()
    if container == "OGG":  # Vorbis packets depend on how the encoder was fed
        assert sf.info(io.BytesIO(written)).frames == len(samples)
    else:
        assert written == whole


# ------------------------------------------------------------------ containers cut short

def _ogg_without_its_last_page() -> bytes:
    data, _ = lossy_audio("OGG", "OPUS", 48000, 1)
    return data[:data.rfind(b"OggS")]


def _mp3_cut_in_its_second_frame_header() -> bytes:
    first = 144 * 320_000 // 48000  # bitrate index 14 (320 kbps) at 48 kHz, as written below
    frame = bytes([0xFF, 0xFB, 0xE4, 0xC4]) + b"\x00" * (first - 4)
    assert mpeg_frame(frame) == (first, 1152)
    return frame + b"\xff\xfb"


@pytest.mark.parametrize("make, message", [
    (lambda: audio_bytes(np.zeros(100), 16000, "RF64", "PCM_16")[:150],
     "the WAV data is truncated: its header announces 200 bytes of samples, 46 are present"),
    (lambda: make_audio("WAV", "PCM_16", 16000, 1)[:36],
     "the WAV data is truncated: the file ends after 36 bytes, before its data chunk"),
    # STREAMINFO alone, marked the last metadata block, and no frame after it.
    (lambda: b"fLaC\x80\x00\x00\x22" + make_audio("FLAC", "PCM_16", 16000, 1)[8:42],
     "the FLAC data is truncated: the file ends after 42 bytes, right after its header, "
     "before any audio frame"),
    (lambda: (d := make_audio("FLAC", "PCM_16", 16000, 1))[:d.find(b"\xff\xf8") + 2],
     "the FLAC data is truncated: its header announces 4800 samples, 0 could be read"),
    (_ogg_without_its_last_page, "the Ogg data is truncated: the file ends after {size} bytes, "
                                 "before its last page (the one marked end-of-stream)"),
    (lambda: b"ID3\x03\x00\x00\x00\x00\x01\x00" + b"\x00" * 20,
     "the MP3 data is truncated: the file ends after 30 bytes, inside its ID3 tag (138 bytes)"),
    (lambda: b"ID3\x03\x00", "the MP3 data is truncated: the file ends after 5 bytes, inside "
                             "its ID3 tag's header"),
    (_mp3_cut_in_its_second_frame_header, "the MP3 data is truncated: the file ends after "
                                          "962 bytes, inside a frame"),
    (lambda: b"\xff\xfb\x90\x64" + b"\x00" * 96,
     "the MP3 data is truncated: the file ends after 100 bytes, inside its first frame "
     "(417 bytes)"),
])
def test_a_container_cut_short_says_where_it_ends(make, message):
    data = make()
    with pytest.raises(InvalidAudio) as error:
        decode_audio(data, "s16le", 48000)
    assert str(error.value) == message.format(size=len(data))


def test_a_file_that_starts_with_id3_but_no_tag_is_a_broken_mp3_not_samples():
    with pytest.raises(InvalidAudio, match=r'^cannot read the MP3 data: it starts with "ID3" but '
                                           r'not with a valid ID3v2 tag header$'):
        decode_audio(b"ID3" + b"\x00" * 97, "s16le", 48000)


def test_a_wav_written_to_a_pipe_with_unknown_sizes_is_still_read():
    data = bytearray(make_audio("WAV", "PCM_16", 16000, 1))
    at = data.find(b"data")
    data[4:8] = data[at + 4:at + 8] = b"\xff\xff\xff\xff"  # "unknown", as a pipe's writer says
    assert np.array_equal(decode_audio(bytes(data)).samples,
                          decode_audio(make_audio("WAV", "PCM_16", 16000, 1)).samples)
