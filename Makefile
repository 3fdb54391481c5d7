# Set-up is part of every target: a virtual env in .venv with vecbench installed.
# torch is installed first as the CPU build (TORCH=... to choose another), so the
# package's torch range installs nothing more and no CUDA wheels are downloaded.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[test]"
	$(BIN)/pip install --no-deps "mujoco-mjx==3.17.0"
	touch $(STAMP)

# The main job on the embedded defaults (CPU if no GPU, W&B offline): a small study of PPO on
# cartpole, a throughput benchmark, and the report of both in runs/reports/demo/.
demo: $(STAMP)
	$(BIN)/vecbench study run studies/demo.yaml --workers 2
	$(BIN)/vecbench bench --num-envs 64 256 1024 4096 --steps 100 --train-iterations 5 -o runs/bench/demo
	$(BIN)/vecbench report runs/studies/demo runs/bench/demo.json -o runs/reports/demo --threshold 475 --title "vecbench demo"

# Lint, then the whole suite (CPU; gpu-marked tests are deselected without CUDA), one test
# process per core with one thread each (up to 8; tests/conftest.py). The
# study tests start a private PostgreSQL on loopback and the report test opens the HTML in
# Chromium, and the video tests render through Mesa's EGL: Debian's packages (installed if
# missing).
test: $(STAMP)
	bash tests/services/ensure-postgres.sh
	bash tests/services/ensure-chromium.sh
	bash tests/services/ensure-egl.sh
	$(BIN)/ruff check .
	$(BIN)/pytest -n auto --maxprocesses 8 --dist worksteal

bench: $(STAMP)
	$(BIN)/pytest tests/benchmarks --benchmark-enable --benchmark-columns=min,median,mean,rounds
	$(BIN)/vecbench bench --num-envs 256 1024 4096 16384 -o runs/bench/cartpole
