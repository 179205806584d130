# Two commands for a newcomer: `make run` and `make test`. Everything else is a helper.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --progress-bar on -c constraints.txt
# Debian packages the tests drive: caller speech, audio tools, a real browser, a balancer.
TEST_DEBS := espeak-ng sox chromium nginx-light

.PHONY: run test install install-test system-deps lint bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml constraints.txt | $(PY)
	@echo "Installing callwright into $(VENV) (first run: a few minutes, ~2.6 GB with torch)..."
	$(PIP) -e .
	@touch $@

# The local-llm extra compiles llama.cpp (portable: no -march=native, no curl).
$(VENV)/.installed-test: $(VENV)/.installed
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
	  $(PIP) -e '.[test,local-llm]'
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
	@$(MAKE) --no-print-directory fac-test  # says NOT RUN unless FAC_SRC names the source

bench: install-test system-deps
	$(PY) bench/voice_to_voice.py

clean:
	rm -rf $(VENV) build .pytest_cache

# Fun-Audio-Chat's own code needs transformers 4.52 and numpy < 2, so its tests run in a
# separate venv built from a checkout of its source (git clone --recurse-submodules):
#   make fac-test FAC_SRC=/path/to/Fun-Audio-Chat
# Without FAC_SRC it says so and stops (exit 0). Upstream's requirements.txt is installed
# less the GPU-only and build-from-source lines that the token2wav path does not import.
FAC_SRC ?=
FAC_VENV ?= build/fac-venv
FAC_PY := $(FAC_VENV)/bin/python
FAC_SKIP := ^--extra-index-url|^onnxruntime-gpu|^tensorrt|^deepspeed|^openai-whisper|^pyworld
.PHONY: fac-test fac-test-run
fac-test:
	@if [ -z "$(FAC_SRC)" ] || [ ! -f "$(FAC_SRC)/funaudiochat/register.py" ] \
	    || [ ! -f "$(FAC_SRC)/third_party/CosyVoice/cosyvoice/cli/model.py" ]; then \
	  echo "fac-test: NOT RUN. No Fun-Audio-Chat source with its CosyVoice submodule at" \
	    "FAC_SRC='$(FAC_SRC)'. Get it with: git clone --recurse-submodules" \
	    "https://github.com/FunAudioLLM/Fun-Audio-Chat, then: make fac-test FAC_SRC=<that dir>"; \
	else $(MAKE) --no-print-directory fac-test-run; fi

fac-test-run:
	@echo "fac-test: Fun-Audio-Chat $$(git -C '$(FAC_SRC)' rev-parse --short HEAD 2>/dev/null || echo '(not a git checkout)'), CosyVoice $$(git -C '$(FAC_SRC)/third_party/CosyVoice' rev-parse --short HEAD 2>/dev/null || echo '(not a git checkout)')"
	test -x $(FAC_PY) || python3 -m venv $(FAC_VENV)
	grep -v -E '$(FAC_SKIP)' '$(FAC_SRC)/requirements.txt' > $(FAC_VENV)/requirements.txt
	$(FAC_PY) -m pip install --quiet -c constraints.txt torch==2.13.0 "setuptools<81" \
	  -r $(FAC_VENV)/requirements.txt typer sqlalchemy "websockets>=13.1" httpx \
	  pytest pytest-asyncio cryptography
	# PyPI's torchaudio is built for CUDA and its own torch; CosyVoice imports it but its
	# token2wav path runs none of its compiled parts, which torchaudio skips when absent.
	$(FAC_PY) -m pip install --quiet --no-deps torchaudio
	rm -f $(FAC_VENV)/lib/python3*/site-packages/torchaudio/lib/*.so
	FAC_SOURCE_DIR='$(abspath $(FAC_SRC))' PYTHONPATH=. $(FAC_PY) -m pytest --noconftest \
	  -p no:cacheprovider -W ignore::DeprecationWarning -W ignore::FutureWarning -rs \
	  tests/test_funaudiochat_upstream.py tests/test_worker_auth.py
