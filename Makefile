# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test lint clean bench-web bench-gpu

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[web,runner,client,dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	DEBUG=$${DEBUG:-1} $(PY) manage.py rundemo

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff on the whole tree; mypy on the modules pyproject.toml's [tool.mypy] lists. CI runs this first.
lint: install
	$(VENV)/bin/ruff check leaderboard leaderboard_client runner tests
	$(VENV)/bin/mypy

clean:
	rm -rf var .pytest_cache

# Page latency at scale on PostgreSQL: 10,000 submissions, concurrent clients, p50/p95 and queries per page.
bench-web: install
	$(PY) tests/bench/bench_web.py $(BENCH_ARGS)

# The GPU check (docs/benchmarks.md): five figures against their goals in one run, JSON to BENCH_OUT.
# On a GPU node with this environment; BENCH_ARGS="--device cpu --quick" proves the script anywhere.
# The lent device machine (no network) runs deploy/gpu/bench-gpu.sh instead.
bench-gpu: install
	$(VENV)/bin/runner bench --suite gpu --device $${RUNNER_DEVICE:-cuda} --out $${BENCH_OUT:-var/bench-gpu.json} $(BENCH_ARGS)
