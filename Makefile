# `make run` serves the example project; `make test` runs every test, the
# official conformance suite included. Both set up everything they need.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Django 6 needs Python >= 3.12: the second test run uses its own venv. pyenv
# shims answer "command not found" for versions not selected, so probe each.
PYTHON_DJ6 ?= $(shell for p in python3.13 python3.12 $$(ls -d $$HOME/.pyenv/versions/3.1[23]*/bin/python3 2>/dev/null); do \
	$$p -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1 && echo $$p && break; done)
VENV_DJ6 ?= .venv-django6
PORT ?= 4437
# Database names the test runs use (pytest-django adds its test_ prefix): by
# default unique to this checkout (a checksum of its path), so runs from two
# clones on one PostgreSQL never share, and never drop, each other's databases.
TEST_DB ?= ds_$(shell printf '%s' '$(CURDIR)' | cksum | cut -d' ' -f1)
CONFORMANCE := tests/conformance
# The official @durable-streams/state client, run by tests/acceptance/test_state_client.py.
STATE_JS := tests/js
# The published AI transports' clients, run by tests/acceptance/test_ai_transports.py.
AI_JS := tests/js_ai
# The sessions page's browser bundle (StreamDB + TanStack DB), built by esbuild from npm.
SESSIONS_UI := example_project/sessions/frontend
SESSIONS_BUNDLE := example_project/sessions/static/sessions/session.js

.PHONY: install run serve serve-cmd test pytest pytest-django6 conformance conformance-serve lint clean bench state-client ai-clients chromium nginx varnish sessions-ui docs package-check

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[example,test,docs]"
	touch $@

install: $(VENV)/.installed

# The server and the sessions' agent runner (docs/sessions.md) together; the
# embedded PostgreSQL (when DATABASE_URL is unset) stops with them.
run: install sessions-ui
	$(PY) -m example_project.embedded serve -- sh -c '$(PY) manage.py migrate --noinput && \
	  { $(PY) manage.py run_agents & AGENTS=$$!; trap "kill $$AGENTS 2>/dev/null" EXIT INT TERM; \
	  $(VENV)/bin/daphne -b 127.0.0.1 -p $(PORT) example_project.asgi:application; }'

# The production preset (docs/deployment.md): granian, the fastest ASGI server
# that serves the project correctly on this machine (docs/performance.md), one
# worker process per core, DEBUG off. {python}, {port} and {app} are filled in.
# Every SSE reader is a request in progress: --backpressure (granian's default
# is backlog / workers) must exceed the readers one worker holds. The smallest
# HTTP/1 buffer cuts about 9 KB per idle reader; request heads over 8 KB get 431
# (docs/performance.md, "Memory per idle SSE reader").
SERVE_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
SERVE_CMD ?= {python} -m granian --interface asginl --host 127.0.0.1 --port {port} \
	--workers $(SERVE_WORKERS) --loop uvloop --no-access-log --backlog 4096 \
	--backpressure 16384 --http1-buffer-size 8192 {app}

# The command `make serve` runs ({python} and {port} left to fill): the bench's
# "serve" server (bench/servers.py) is exactly this.
serve-cmd:
	@echo '$(subst {app},example_project.asgi:application,$(SERVE_CMD))'

$(VENV)/.serve-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e ".[example,test,docs,serve]"
	touch $@

serve: install $(VENV)/.serve-installed sessions-ui
	DJANGO_DEBUG=0 $(PY) -m example_project.embedded serve -- sh -c '$(PY) manage.py migrate --noinput && \
	  exec $(subst {app},example_project.asgi:application,$(subst {port},$(PORT),$(subst {python},$(PY),$(SERVE_CMD))))'

$(CONFORMANCE)/node_modules/.installed: $(CONFORMANCE)/package.json $(CONFORMANCE)/package-lock.json
	cd $(CONFORMANCE) && npm ci --no-audit --no-fund
	touch $@

$(STATE_JS)/node_modules/.installed: $(STATE_JS)/package.json $(STATE_JS)/package-lock.json
	cd $(STATE_JS) && npm ci --no-audit --no-fund
	touch $@

$(AI_JS)/node_modules/.installed: $(AI_JS)/package.json $(AI_JS)/package-lock.json
	cd $(AI_JS) && npm ci --no-audit --no-fund
	touch $@

$(SESSIONS_UI)/node_modules/.installed: $(SESSIONS_UI)/package.json $(SESSIONS_UI)/package-lock.json
	cd $(SESSIONS_UI) && npm ci --no-audit --no-fund
	touch $@

$(SESSIONS_BUNDLE): $(SESSIONS_UI)/node_modules/.installed $(wildcard $(SESSIONS_UI)/src/*.js)
	cd $(SESSIONS_UI) && npm run build

sessions-ui: $(SESSIONS_BUNDLE)

# Installs the State Protocol client; both pytest runs drive it against daphne.
state-client: $(STATE_JS)/node_modules/.installed

# Installs @durable-streams/aisdk-transport and tanstack-ai-transport; both pytest runs drive them.
ai-clients: $(AI_JS)/node_modules/.installed

# The admin's browser test drives Debian's Chromium with Playwright, never a
# browser build of its own: install the package only if it is missing.
chromium:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

# The cache in front of the server (deploy/nginx-cache.conf), run by a test and
# by make bench's cache scenario: Debian's nginx, installed only if missing.
nginx:
	@test -x /usr/sbin/nginx || (apt-get update && apt-get install -y nginx-light)

# The other tested cache (deploy/varnish-cache.vcl), run the same ways: Debian's varnish.
varnish:
	@test -x /usr/sbin/varnishd || (apt-get update && apt-get install -y varnish)

test: state-client ai-clients sessions-ui docs pytest pytest-django6 conformance package-check

# The system Postgres on 127.0.0.1:5432 when it answers, else an embedded one.
pytest: install state-client ai-clients sessions-ui chromium nginx varnish
	DATABASE_URL=$$($(PY) -m example_project.embedded url $(TEST_DB)) $(PY) -m pytest

$(VENV_DJ6)/.installed: pyproject.toml
	@test -n "$(PYTHON_DJ6)" || (echo "Django 6 needs Python >= 3.12; none found (set PYTHON_DJ6)" && exit 1)
	test -x $(VENV_DJ6)/bin/python || $(PYTHON_DJ6) -m venv $(VENV_DJ6)
	$(VENV_DJ6)/bin/python -m pip install -q --upgrade pip
	$(VENV_DJ6)/bin/python -m pip install -q -e ".[example,test]" "django>=6.0,<6.1"
	touch $@

pytest-django6: $(VENV_DJ6)/.installed state-client ai-clients sessions-ui chromium nginx varnish
	DATABASE_URL=$$($(PY) -m example_project.embedded url $(TEST_DB)_dj6) \
		$(VENV_DJ6)/bin/python -m pytest -p no:cacheprovider

conformance: install $(CONFORMANCE)/node_modules/.installed
	CONFORMANCE_DB=$(TEST_DB)_conformance $(PY) $(CONFORMANCE)/run.py

# The suite against the lean app under the production preset (make serve).
conformance-serve: install $(VENV)/.serve-installed $(CONFORMANCE)/node_modules/.installed
	CONFORMANCE_DB=$(TEST_DB)_conformance CONFORMANCE_SERVER_CMD='$(SERVE_CMD)' \
		$(PY) $(CONFORMANCE)/run.py example_project.asgi:application

# Our server beside the Node reference server, same machine, one run (bench/run.py).
# BENCH_ARGS=--quick for a smoke run; BENCH_SERVER=uvicorn|granian to compare ASGI servers.
BENCH_REF := bench/reference

$(BENCH_REF)/node_modules/.installed: $(BENCH_REF)/package.json $(BENCH_REF)/package-lock.json
	cd $(BENCH_REF) && npm ci --no-audit --no-fund
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e ".[example,test,bench]"
	touch $@

bench: install nginx varnish $(VENV)/.bench-installed $(BENCH_REF)/node_modules/.installed
	$(PY) -m bench $(BENCH_ARGS)

# The wheel and sdist as released: built, twine-checked, and the wheel installed
# into a fresh virtualenv beside a django-admin startproject site set up as
# docs/installation.md says, served by daphne and uvicorn (tests/packaging/).
package-check: install
	DATABASE_URL=$$($(PY) -m example_project.embedded url $(TEST_DB)) \
		$(PY) -m pytest -p no:cacheprovider -m packaging tests/packaging

# The documentation site from docs/ (MkDocs); any warning fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site

lint: install
	$(VENV)/bin/ruff check durable_streams example_project tests
	$(VENV)/bin/ruff format --check durable_streams tests

clean:
	rm -rf site $(VENV) $(VENV_DJ6) $(CONFORMANCE)/node_modules $(BENCH_REF)/node_modules $(STATE_JS)/node_modules $(AI_JS)/node_modules $(SESSIONS_UI)/node_modules $(SESSIONS_BUNDLE)
