"""The installable package: its public API (``enhancer.__all__``, typed), and ``pip install .``
in a fresh venv giving working commands."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
import tomllib

import httpx
import soundfile as sf

import enhancer
from tests.helpers import ROOT, SAMPLES, free_port, run_python

INIT = ROOT / "enhancer" / "__init__.py"
# ------------------------------------------------------------------ the public API
# In the manner of httpx's tests/test_exported_members.py.


def test_all_is_sorted_and_names_each_name_once():
    assert enhancer.__all__ == sorted(enhancer.__all__)
    assert len(set(enhancer.__all__)) == len(enhancer.__all__)


def test_every_name_in_the_lazy_table_is_exported_and_nothing_else():
    assert set(enhancer.__all__) == set(enhancer._HOMES) | {"__version__"}


def test_every_public_name_the_init_defines_is_exported():
    tree = ast.parse(INIT.read_text())
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {t.id for t in targets if isinstance(t, ast.Name)}
    public = {name for name in defined if not name.startswith("_")}
    assert public <= set(enhancer.__all__), public - set(enhancer.__all__)


def test_every_exported_name_is_importable_and_lives_where_the_table_says():
    # A fresh interpreter: each name is imported lazily, on first use, from nothing loaded.
    code = ("import enhancer\n"
            "from enhancer import *\n"
            "missing = [n for n in enhancer.__all__ if n not in globals()]\n"
            "assert not missing, missing\n"
            "assert set(enhancer.__all__) <= set(dir(enhancer))\n"
            "try:\n"
            "    enhancer.NotAName\n"
            "except AttributeError as e:\n"
            "    assert \"has no attribute 'NotAName'\" in str(e), e\n"
            "else:\n"
            "    raise AssertionError('enhancer.NotAName')\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    for name, home in enhancer._HOMES.items():
        value = getattr(enhancer, name)
        assert value.__module__ == home, (name, value.__module__, home)
    assert isinstance(enhancer.__version__, str) and enhancer.__version__


def test_the_type_checking_imports_match_the_lazy_table():
    """What mypy sees (the ``if TYPE_CHECKING:`` imports) is what runs (the lazy table)."""
    tree = ast.parse(INIT.read_text())
    seen = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom), ast.dump(statement)
                for alias in statement.names:
                    assert alias.asname is None, alias.asname
                    seen[alias.name] = statement.module
    assert seen == enhancer._HOMES


def test_py_typed_exists_and_is_shipped_as_package_data():
    assert (ROOT / "enhancer" / "py.typed").is_file()
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "enhancer" in setuptools["packages"]
    assert "py.typed" in setuptools["package-data"]["enhancer"]


# ------------------------------------------------------------------ pip install .


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

    # The installed package is typed (py.typed shipped) and its public API imports.
    typed = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import enhancer, pathlib\n"
                            "print((pathlib.Path(enhancer.__file__).parent / 'py.typed')"
                            ".is_file(), enhancer.AudioEnhancer.__name__)"],
                           cwd=elsewhere, capture_output=True, text=True, timeout=60, env=env)
    assert typed.stdout.split() == ["True", "AudioEnhancer"], typed.stderr

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
        assert {m["name"] for m in models} == {"denoiser_48k", "deepfilternet3",
                                               "passthrough_model_lite"}
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200  # the page ships too
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells it.
    assert server.returncode in (0, -signal.SIGTERM) and "Traceback" not in stderr, stderr
    assert "Application shutdown complete" in stderr
