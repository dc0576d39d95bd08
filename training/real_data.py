"""Real recorded speech and noise from Debian data packages, fetched for training only.

Nothing here is committed or shipped: ``fetch()`` downloads the packages with
``apt-get download`` (no root needed) into a cache folder and unpacks them with
``dpkg-deb -x``. Clips are read at their own rate, resampled to 48 kHz with soxr, and each
gets its measured *bandwidth*, so the loss can ignore frequencies a clip never had.

Speech (many speakers, 20+ languages, mostly 44.1 kHz full band):
``ktuberling-data`` and ``klettres-data`` (single words and syllables), and the Asterisk
prompt sets ``asterisk-core-sounds-{en,es,fr,it,ru}-g722`` (16 kHz telephone prompts, one
speaker per language, decoded with the ffmpeg of ``imageio-ffmpeg``).
Noise: ``asterisk-moh-opsound-wav`` (music on hold) and ``sound-theme-freedesktop`` (event
sounds); the last training cycle adds ``MORE_NOISE_PACKAGES`` (game music, desktop sounds,
instrument and drum samples). The held-out set uses languages, speakers and noise recordings
training never sees (``HELD_OUT``, ``HELD_OUT_NOISE``).
"""

from __future__ import annotations

import glob
import os
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

RATE = 48000
PACKAGES = ("ktuberling-data", "klettres-data", "asterisk-core-sounds-en-g722",
            "asterisk-core-sounds-es-g722", "asterisk-core-sounds-fr-g722",
            "asterisk-core-sounds-it-g722", "asterisk-core-sounds-ru-g722",
            "asterisk-moh-opsound-wav", "sound-theme-freedesktop")
# Music and sounds only the last training cycle hears (the held-out noises stay the first
# set's): three minutes of music taught the model little about music it had not heard.
MORE_NOISE_PACKAGES = ("extremetuxracer-data", "mu-cade-data", "tuxmath-data",
                       "frozen-bubble-data", "chromium-bsu-data", "lmms-common",
                       "tuxpaint-data", "oxygen-sounds", "deepin-sound-theme")
# What ``make test``'s smoke run fetches (21 MB): one training and one held-out speaker.
SMOKE_PACKAGES = ("asterisk-core-sounds-en-g722", "asterisk-core-sounds-it-g722",
                  "sound-theme-freedesktop")
DEFAULT_CACHE = Path(os.environ.get("ENHANCER_TRAIN_CACHE",
                                    Path.home() / ".cache" / "enhancer-train"))
# Languages (KDE sets) and speakers (Asterisk) only the held-out set hears.
HELD_OUT = {"ktuberling": ("de", "it", "nl"), "klettres": ("it", "nl", "lt"),
            "asterisk": ("it_IT_m_Carlo",)}
HELD_OUT_NOISE = ("reno_project-system", "macroform-cold_day", "bell", "complete",
                  "window-attention")
_NOISE_GLOBS = ("asterisk/moh/*.wav", "sounds/freedesktop/stereo/*.oga")
_MORE_NOISE_GLOBS = ("games/etr/music/*.ogg", "games/etr/sounds/*.wav",
                     "games/mu-cade/sounds/*/*.ogg", "tuxmath/sounds/*.ogg",
                     "tuxmath/sounds/*.wav", "games/frozen-bubble/snd/*.ogg",
                     "games/chromium-bsu/wav/*.wav", "lmms/samples/*/*.ogg",
                     "tuxpaint/sounds/*.wav", "sounds/Oxygen-*.ogg", "sounds/deepin/stereo/*.wav")
# Sounds in those packages that are a voice (speech is never noise here).
_VOICES = ("audio-channel", "areyousure", "giggle", "tuxok", "youcannot", "tuxi", "breath01",
           "snore", "noh", "chatted")


@dataclass
class Clip:
    """One recording at 48 kHz with where it came from and how wide its spectrum is."""

    audio: np.ndarray
    group: str  # "ktuberling/en", "asterisk/fr_CA_f_June", ...
    bandwidth: float  # Hz: the loss ignores what lies above


def fetch(cache: Path = DEFAULT_CACHE, packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Download and unpack ``packages`` into ``cache`` once; return name → version.

    ``apt-get download`` needs no root, only the package lists; where they are missing and
    this is root, they are fetched first (``apt-get update``).
    """
    debs, root = cache / "debs", cache / "root"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not glob.glob(str(debs / f"{p}_*.deb"))]
    if missing:
        download = ["apt-get", "download", *missing]
        if subprocess.run(download, cwd=debs, stdout=subprocess.DEVNULL).returncode:
            if os.geteuid() != 0:
                raise RuntimeError(f"'apt-get download {' '.join(missing)}' failed: run "
                                   f"'sudo apt-get update' first")
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(download, cwd=debs, check=True, stdout=subprocess.DEVNULL)
    versions = {}
    for name in packages:
        deb = sorted(glob.glob(str(debs / f"{name}_*.deb")))[-1]
        marker = root / ".unpacked" / Path(deb).name
        if not marker.exists():
            subprocess.run(["dpkg-deb", "-x", deb, str(root)], check=True)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        versions[name] = subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True,
                                        capture_output=True, text=True).stdout.strip()
    return versions


def measured_bandwidth(audio: np.ndarray, native_rate: int) -> float:
    """The highest frequency whose long-term level is within 60 dB of the peak band's."""
    frames = audio[: len(audio) // 1024 * 1024].reshape(-1, 1024)
    if frames.shape[0] == 0:
        return 0.0
    power = (np.abs(np.fft.rfft(frames * np.hanning(1024), axis=1)) ** 2).mean(axis=0)
    smooth = np.convolve(power, np.ones(9) / 9, mode="same")
    level = 10 * np.log10(smooth + 1e-20)
    above = np.nonzero(level > level.max() - 60)[0]
    freq = float(above[-1]) * RATE / 1024 if above.size else 0.0
    return min(freq, 0.47 * native_rate)


def _read(path: str) -> tuple[np.ndarray, int]:
    if path.endswith(".g722"):
        import imageio_ffmpeg

        raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "g722",
                              "-i", path, "-f", "f32le", "-ac", "1", "-"],
                             check=True, capture_output=True).stdout
        return np.frombuffer(raw, np.float32).copy(), 16000
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def _to_48k(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return audio.astype(np.float32)
    return soxr.resample(audio, rate, RATE, quality="HQ").astype(np.float32)


def _speech_files(root: Path) -> list[tuple[str, str]]:
    """(path, group) of every speech clip, sorted for reproducibility."""
    out = []
    for game in ("ktuberling", "klettres"):
        for path in sorted(glob.glob(str(root / "usr/share" / game / "**/*.ogg"),
                                     recursive=True)):
            lang = Path(path).relative_to(root / "usr/share" / game).parts
            lang_name = lang[1] if game == "ktuberling" else lang[0]
            out.append((path, f"{game}/{lang_name}"))
    for path in sorted(glob.glob(str(root / "usr/share/asterisk/sounds/*/**/*.g722"),
                                 recursive=True)):
        speaker = Path(path).relative_to(root / "usr/share/asterisk/sounds").parts[0]
        if "_" in speaker:  # the language folders; digits/, letters/ ... are shared prompts
            out.append((path, f"asterisk/{speaker}"))
    return out


def is_held_out(group: str) -> bool:
    source, name = group.split("/", 1)
    return name in HELD_OUT.get(source, ())


def speech_clips(root: Path, held_out: bool, limit_seconds: float | None = None,
                 seed: int = 0) -> list[Clip]:
    """Curated clips of one side of the split (training or held out), at 48 kHz.

    Curation drops clips shorter than 0.3 s, clipped ones, and ones whose quietest tenth of
    frames is within 25 dB of the loudest twentieth (noise in the reference would be learnt
    as speech).
    """
    files = [(p, g) for p, g in _speech_files(root) if is_held_out(g) == held_out]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    clips, total = [], 0.0
    for i in order:
        path, group = files[i]
        audio, rate = _read(path)
        if audio.shape[0] < 0.3 * rate or np.abs(audio).max() >= 0.999:
            continue
        usable = audio.shape[0] // 512 * 512
        rms = np.sqrt(np.mean(audio[:usable].reshape(-1, 512) ** 2, axis=1) + 1e-12)
        if 20 * np.log10(np.percentile(rms, 95) / np.percentile(rms, 10)) < 25:
            continue
        audio = _to_48k(audio, rate)
        clips.append(Clip(audio, group, measured_bandwidth(audio, rate)))
        total += audio.shape[0] / RATE
        if limit_seconds is not None and total >= limit_seconds:
            break
    return clips


def noise_clips(root: Path, held_out: bool, more: bool = False) -> list[np.ndarray]:
    """Recorded noises at 48 kHz, unit RMS: music on hold and event sounds, and with
    ``more`` (training only) those of ``MORE_NOISE_PACKAGES``."""
    patterns = _NOISE_GLOBS + (_MORE_NOISE_GLOBS if more and not held_out else ())
    paths = sorted(p for pattern in patterns for p in glob.glob(str(root / "usr/share" / pattern)))
    out = []
    for path in paths:
        stem = Path(path).stem
        if (stem in HELD_OUT_NOISE) != held_out or any(voice in stem for voice in _VOICES):
            continue
        try:
            audio, rate = _read(path)
        except sf.LibsndfileError:  # a few lmms samples are WAV data libsndfile refuses
            continue
        audio = _to_48k(audio, rate)
        if audio.shape[0] > 60 * RATE:  # long music: a minute is enough variety per track
            start = zlib.crc32(path.encode()) % (audio.shape[0] - 60 * RATE)
            audio = audio[start:start + 60 * RATE]
        rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        if rms > 1e-4:
            out.append((audio / rms).astype(np.float32))
    return out


def music_and_events(recorded: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Recorded noises (:func:`noise_clips`) split by length: 10 s or more is music, shorter
    an event sound."""
    return ([r for r in recorded if r.shape[0] >= 10 * RATE],
            [r for r in recorded if r.shape[0] < 10 * RATE])
