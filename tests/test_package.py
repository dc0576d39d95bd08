"""The installable package: ``pip install .`` in a fresh venv gives working commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import soundfile as sf

from tests.helpers import ROOT, SAMPLES, free_port


def _copy_of_the_checkout(destination) -> None:
    """What a clean clone holds (tracked and new files, nothing ignored)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                             "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())


def test_pip_install_gives_enhance_and_enhance_server_that_run_anywhere(tmp_path):
    source, venv, elsewhere = tmp_path / "src", tmp_path / "venv", tmp_path / "elsewhere"
    _copy_of_the_checkout(source)
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(source)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_MODEL_PATH", "MODELS_DIR", "PYTHONPATH")}

    helped = subprocess.run([str(venv / "bin" / "enhance"), "--help"], cwd=elsewhere,
                            capture_output=True, text=True, timeout=60, env=env)
    assert helped.returncode == 0 and "--source-file" in helped.stdout, helped.stderr

    out = elsewhere / "clean.wav"
    ran = subprocess.run([str(venv / "bin" / "enhance"), "--source-file",
                          str(SAMPLES / "speech_stereo_48000.wav"), "--destination-file",
                          str(out), "--num-processes", "1"],
                         cwd=elsewhere, capture_output=True, text=True, timeout=120, env=env)
    assert ran.returncode == 0, ran.stderr
    assert sf.info(out).frames == sf.info(SAMPLES / "speech_stereo_48000.wav").frames

    port = free_port()
    server = subprocess.Popen([str(venv / "bin" / "enhance-server")], cwd=elsewhere,
                              env={**env, "APP_PORT": str(port), "NUM_PROCESSES": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "no server"
            time.sleep(0.2)
        models = httpx.get(f"http://127.0.0.1:{port}/models").json()
        assert {m["name"] for m in models} == {"denoiser_48k", "passthrough_model_lite"}
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200  # the page ships too
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells it.
    assert server.returncode in (0, -signal.SIGTERM) and "Traceback" not in stderr, stderr
    assert "Application shutdown complete" in stderr
