# trustlab: the two commands. `make demo` and `make test` set up .venv when it is missing,
# then run. Override the torch requirement for a CUDA machine: `make TORCH=torch test`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.trustlab-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test bench data lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@start=$$(date +%s); \
	if [ ! -x $(PY) ]; then \
	  echo "[setup] creating $(VENV) with $(PYTHON) -m venv"; \
	  $(PYTHON) -m venv $(VENV) || exit 1; \
	fi; \
	echo "[setup] installing $(TORCH) (first, so nothing pulls another build)"; \
	$(PY) -m pip install --quiet "$(TORCH)" || exit 1; \
	echo "[setup] $$(( $$(date +%s) - start ))s: installing trustlab and its dev extras (editable)"; \
	$(PY) -m pip install --quiet -e ".[dev]" || exit 1; \
	echo "[setup] done in $$(( $$(date +%s) - start ))s"; \
	touch $(STAMP)

demo: $(STAMP)
	@echo "[demo] 1/2: train resnet20 on the built-in shapes10 set (examples/demo-shapes10.yaml), about 2 minutes on 2 CPU cores;"
	@echo "[demo]      the run is stored under $${TRUSTLAB_HOME:-./runs}"
	@start=$$(date +%s); \
	$(VENV)/bin/trustlab train --config examples/demo-shapes10.yaml || exit $$?; \
	echo "[demo] 2/2: audit the model just trained (trustlab audit latest: the newest finished training run):"; \
	echo "[demo]      clean accuracy, worst-case robustness, a Neural Cleanse scan, membership inference and"; \
	echo "[demo]      adversarial-input detection, each within its stated budget; about 2 minutes"; \
	$(VENV)/bin/trustlab audit latest --name demo-audit || exit $$?; \
	echo "[demo] done in $$(( $$(date +%s) - start ))s; open the scorecard (the path above) in a browser"

test: $(STAMP)
	@echo "[test] ruff check and format check, then pytest"
	@$(VENV)/bin/ruff check src tests benchmarks
	@$(VENV)/bin/ruff format --check --quiet src tests benchmarks || { echo "run: .venv/bin/ruff format src tests benchmarks"; exit 1; }
	@$(PY) -c "import ray" 2>/dev/null || echo '[test] Ray is not installed: the Ray executor tests skip (install them: $(PY) -m pip install -e ".[ray]")'
	@$(PY) -m pytest -q -n 2 tests

bench: $(STAMP)
	@$(PY) -m pip install --quiet -e ".[dev,bench,ray]"
	@$(PY) -m pip install --quiet --no-deps torchattacks  # it asks for torchvision; not needed
	@echo "[bench] peer agreement: tests/attacks/test_peers.py (PGD vs ART and torchattacks, the standard suite vs AutoAttack)"
	@$(PY) -m pytest -q tests/attacks/test_peers.py
	@for f in benchmarks/*.py; do echo "[bench] $$f"; $(PY) $$f || exit 1; done

data: $(STAMP)
	@echo "[data] Fashion-MNIST (real: 60,000 + 10,000 grey 28x28 images), from Debian's dataset-fashion-mnist"
	@have() { $(PY) -c "from trustlab.data import load_dataset; load_dataset('fashion-mnist', 'test')" 2>/dev/null; }; \
	if have; then \
	  echo "[data] already there: trustlab finds it (try: $(VENV)/bin/trustlab datasets)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "[data] apt-get install -y dataset-fashion-mnist (into /usr/share/datasets/fashion-mnist)"; \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } || exit 1; \
	  have && echo "[data] done: trustlab finds it" || { echo "[data] installed but not found"; exit 1; }; \
	elif [ "$(DOWNLOAD)" = 1 ]; then \
	  echo "[data] downloading from the official address (MD5-checked) into $${TRUSTLAB_DATA:-./data}/fashion-mnist"; \
	  $(PY) -c "from trustlab.data.files import download_dataset; download_dataset('fashion-mnist')" || exit 1; \
	else \
	  echo "[data] not installed and not root. Either, as root: apt-get install dataset-fashion-mnist"; \
	  echo "[data] or download it once (MD5-checked): make data DOWNLOAD=1"; \
	  exit 1; \
	fi

lint: $(STAMP)
	@$(VENV)/bin/ruff check src tests benchmarks
	@$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
