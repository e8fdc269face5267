"""Settings: environment variables with the prefix ZHIKU_, or a `.env` file (see .env.example)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZHIKU_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        Path("./data"), description="Where the database, originals and indexes live"
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default is a SQLite file in the data dir"
    )
    redis_url: str = "redis://127.0.0.1:6379/0"

    # Uploads
    max_upload_bytes: int = Field(200 * 1024**2, description="Largest accepted file (413 beyond)")
    zip_max_members: int = 10_000
    zip_max_total_bytes: int = 4 * 1024**3
    zip_max_ratio: int = 200
    min_free_bytes: int = Field(
        256 * 1024**2,
        description="Uploads are refused (507 disk_full) when the data dir's disk would have "
        "less free space than this after storing them; 0 = no check (only a full disk refuses)",
    )

    # Parsing and chunking
    ocr_languages: str = "eng+chi_sim"
    chunk_max_tokens: int = 256
    chunk_overlap_tokens: int = 32

    # Embedding and indexing
    embedder: str = Field("use-multilingual", description="use-multilingual | minilm | st:/dir")
    embedder_en: str = Field(
        "bge-small-en",
        description="Second embedder for chunks and queries written mostly in English "
        "(bge-small-en | minilm | st:/dir); empty = the main embedder alone",
    )
    embed_batch_size: int = 32
    embed_threads: int | None = Field(
        1,
        description="Threads per embedding call; on small machines one thread is faster (BLAS "
        "threads spin against each other): scale with worker processes instead",
    )
    exact_index_max: int = Field(
        50_000, description="Up to this many chunks a library uses exact FAISS search"
    )

    # Search
    search_top_k: int = Field(5, description="Passages returned when the caller gives no top_k")
    search_max_top_k: int = 50
    search_candidates: int = Field(
        50, description="Candidates each ranker contributes per library before fusion"
    )
    search_weights: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            "zh": {"dense": 0.5, "bm25": 1.0},
            "en": {"dense_en": 1.0, "bm25": 0.5, "dense": 0.1},
            "keyword": {"bm25": 1.0, "dense_en": 0.5, "dense": 0.3},
        },
        description="Reciprocal-rank-fusion weight of each ranker, by query language; "
        "'keyword' applies to look-ups (names, terms, product codes) in either language "
        "(tuned on the development sets, see docs/adr/0004-fusion-and-reranking.md)",
    )
    search_threads: int = Field(1, description="FAISS threads per query (1 on small machines)")
    max_query_chars: int = 2000
    reranker: str = Field(
        "ms-marco-en",
        description="Cross-encoder: 'ms-marco-en' (bundled, English queries only), "
        "'onnx:/dir', 'st:/dir', or empty for no reranking",
    )
    rerank_candidates: int = Field(20, description="Fused passages the reranker re-scores")

    # Model servers, for `main` (answers) and `safety` (a guard model). Unset base URLs are
    # taken from what `zhiku models serve` wrote into the data dir (serving/endpoints.py).
    main_base_urls: str = Field("", description="Comma-separated OpenAI-compatible /v1 URLs")
    main_model: str = Field("", description="Served model name (default: what serve wrote)")
    main_api_key: str | None = None
    main_connect_timeout: float = 3.0
    main_read_timeout: float = Field(60.0, description="Longest wait for the next bytes")
    main_first_token_timeout: float = Field(
        300.0, description="Longest wait for an answer's first bytes (a busy server queues)"
    )
    main_max_concurrency: int = Field(
        32, description="Requests in flight to the main model per api process (vLLM batches them)"
    )
    main_queue_timeout: float = Field(
        180.0, description="Longest wait for a free slot before 503 model_unavailable"
    )
    main_context_window: int = Field(0, description="Tokens; 0 = what serve wrote, else 4096")
    main_tokenizer: str = Field("", description="Dir with tokenizer.json for token budgeting")
    safety_backend: str = Field(
        "classifier",
        description="'classifier' (bundled, in-process), 'guard' (a Llama Guard / Qwen3Guard "
        "style model at safety_base_urls) or 'off' (the lexicon and PII layers still run)",
    )
    safety_answer_threshold: float = Field(
        0.9,
        description="Bundled classifier: score at which an answer (not a question) is stopped; "
        "at 0.9 it flagged 0-0.7% of ordinary document passages, at 0.5 up to 7%",
    )
    safety_base_urls: str = ""
    safety_model: str = ""
    safety_api_key: str | None = None
    safety_connect_timeout: float = 3.0
    safety_read_timeout: float = 30.0
    safety_first_token_timeout: float = 30.0
    safety_max_concurrency: int = 16
    safety_queue_timeout: float = 30.0
    safety_window_chars: int = Field(
        160, description="A streamed answer is screened again every this many new characters"
    )
    lexicon_file: Path | None = Field(
        None, description="Sensitive-word list (term<TAB>category); default data_dir/lexicon.txt"
    )

    # Answers
    answer_max_tokens: int = 512
    answer_temperature: float = Field(0.0, description="0 = greedy: repeatable answers")
    answer_passages: int = Field(6, description="Passages retrieved for an answer")
    history_turns: int = Field(6, description="Most recent turns kept in the prompt")
    max_question_chars: int = 2000

    # Work queue
    task_max_retries: int = 5
    lease_seconds: int = Field(120, description="A document not touched for this long is stalled")
    requeue_after_seconds: int = Field(
        600, description="A queued document not started after this long is enqueued again"
    )
    reconcile_interval_seconds: int = 30
    index_batch_max_docs: int = Field(
        200,
        description="Group commit of index publishes: while other documents of the library are "
        "still ahead in the pipeline, a library's index is published once this many documents "
        "await it (or the oldest has waited index_batch_max_delay_seconds); 1 = after each one",
    )
    index_batch_max_delay_seconds: float = Field(
        20.0, description="Longest a document with stored chunks waits for its index publish"
    )
    worker_concurrency: int = 1

    # Auth and sessions
    token_ttl_hours: int = Field(12, description="Absolute lifetime of a sign-in (token/cookie)")
    session_idle_minutes: int = Field(60, description="A sign-in unused this long expires")
    login_max_failures: int = Field(
        5, description="Failed sign-ins in a row before an account is locked for a while"
    )
    login_lockout_minutes: int = 15
    login_ip_max_failures: int = Field(
        30, description="Failed sign-ins from one address per lockout window before 429"
    )
    cookie_secure: bool | None = Field(
        None, description="Secure cookies; None = when the request came over https"
    )
    auth_providers: str = Field(
        "local", description="Comma-separated identity providers tried in order (see docs)"
    )

    # Rate limits (per user and per API key, per minute; Redis)
    rate_limit_per_minute: int = 300
    rate_limit_chat_per_minute: int = Field(30, description="Questions per user or key a minute")

    # HTTP hardening
    cors_origins: str = Field(
        "", description="Comma-separated origins allowed to call the API from a browser; none"
    )

    # Audit
    audit_retention_days: int = Field(
        365, description="Audit events older than this are purged; 0 keeps them for ever"
    )

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir.resolve() / 'zhiku.db'}"

    @property
    def originals_dir(self) -> Path:
        return self.data_dir / "originals"

    @property
    def indexes_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def lexicon_path(self) -> Path:
        return self.lexicon_file or self.data_dir / "lexicon.txt"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def page_cache_dir(self) -> Path:
        return self.data_dir / "cache" / "pages"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests and the CLI change the environment)."""
    get_settings.cache_clear()
