"""Where the shipped models are: the repo's ``models/`` folder, or its copy in an installed package.

Imports nothing heavy: settings, the CLI and tests read it before any model is loaded.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
# From a checkout the models sit beside the package; `pip install .` copies them into it.
SHIPPED_MODELS_DIR = (PROJECT_DIR / "models" if (PROJECT_DIR / "models").is_dir()
                      else PACKAGE_DIR / "models")
DENOISER_MODEL = SHIPPED_MODELS_DIR / "denoiser_48k.tflite"
PASSTHROUGH_MODEL = SHIPPED_MODELS_DIR / "passthrough_model_lite.tflite"
