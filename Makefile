# Two commands for a newcomer: `make run` and `make test`. Everything else is a helper.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --progress-bar on -c constraints.txt
# Debian packages the tests drive: caller speech, audio tools, a real browser.
TEST_DEBS := espeak-ng sox chromium

.PHONY: run test install install-test system-deps lint bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml constraints.txt | $(PY)
	@echo "Installing callwright into $(VENV) (first run: a few minutes, ~2.6 GB with torch)..."
	$(PIP) -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[test]'
	@touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(VENV)/bin/callwright serve

system-deps:
	@missing=""; for p in $(TEST_DEBS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "The tests need:$$missing. Run:"; \
	    echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

lint: install-test
	$(PY) -m ruff check .

test: install-test system-deps lint
	$(PY) -m pytest

bench: install-test system-deps
	$(PY) bench/voice_to_voice.py

clean:
	rm -rf $(VENV) build .pytest_cache
