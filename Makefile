# The two commands the README starts with: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DB ?= aftersales.db
export AFTERSALES_DATABASE_URL ?= sqlite+aiosqlite:///./$(DB)

.PHONY: setup run test test-pg demo bench bench-quick clean

setup: $(VENV)/.installed aftersales/static/vendor/htmx.min.js

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

aftersales/static/vendor/htmx.min.js: scripts/fetch_assets.sh
	./scripts/fetch_assets.sh

## Set up, fill an embedded SQLite database with demo data (first time only) and serve it.
run: setup
	$(VENV)/bin/aftersales demo --if-empty
	$(VENV)/bin/aftersales serve

## Set up and run the whole test suite (SQLite; PostgreSQL too when AFTERSALES_TEST_DATABASE_URL is set).
test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/aftersales demo

clean:
	rm -rf $(VENV) aftersales/static/vendor $(DB) $(DB)-wal $(DB)-shm

## Benchmarks (issue 7; docs/performance.md). Full: SQLite and PostgreSQL at the default scale of
## 1,000,000 tickets (BENCH_TICKETS=100000 for a shorter run); reuses a data set generated before.
BENCH_TICKETS ?= 1000000
bench: setup
	$(PY) -m bench --db both --tickets $(BENCH_TICKETS) --reuse

## Seconds-long smoke run of the whole benchmark (2,000 tickets, SQLite); fails on any request error.
bench-quick: setup
	$(PY) -m bench --quick
