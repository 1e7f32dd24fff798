# Two commands do everything on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo ui test test-browser chromium lint bench benchmark clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.txt \
	  || (sleep 10; $(BIN)/uv pip install --refresh --quiet --compile-bytecode --python $(BIN)/python -r requirements.txt)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

demo: venv
	$(BIN)/python scripts/demo.py

# The Airflow UI on the embedded defaults: api-server, scheduler, dag-processor and triggerer with the reports
# plugin, the graph_extract pool and the Graph emulator; prints the URL and login. UI_ARGS="--fresh --port 8081".
ui: venv
	$(BIN)/python scripts/ui.py $(UI_ARGS)

# The suite in two steps: everything that runs in one process, spread over the CPUs (pytest-xdist), then the
# browser and topology tests, which start whole Airflow stacks of their own and run one at a time.
test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n auto --dist worksteal --ignore=tests/topology --ignore=tests/browser
	$(BIN)/python -m pytest tests/browser tests/topology

# The browser test (tests/browser, part of `make test`) installs Chromium itself when it can;
# these run it alone / install Debian's chromium + chromedriver up front (needs root or sudo).
test-browser: venv
	$(BIN)/python -m pytest tests/browser -s

chromium:
	bash scripts/install_chromium.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# 10k, 100k and 1M users on SQLite and PostgreSQL (hours at 1M); e.g. `make bench BENCH_ARGS="--users 10000"`.
bench: venv
	$(BIN)/python scripts/benchmark.py $(BENCH_ARGS)

benchmark: bench

clean:
	rm -rf $(VENV) .demo .ui .airflow reports
