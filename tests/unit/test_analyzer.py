import pytest

from retrieval.analyzer import analyze, is_keyword_query, normalize, text_language


def test_fullwidth_folds_to_halfwidth() -> None:
    assert normalize("ＡＢＣ－１２３") == "abc-123"
    assert analyze("ＡＢＣ－１２３") == analyze("abc-123")


def test_english_stems_and_drops_stop_words() -> None:
    tokens = analyze("The servers are running")
    assert "the" not in tokens and "are" not in tokens
    assert analyze("running") == analyze("runs") == ["run"]


def test_product_codes_are_kept_whole_and_split() -> None:
    tokens = analyze("Order part XJ-9000.b2 today")
    assert "xj-9000.b2" in tokens
    assert "xj" in tokens and "9000" in tokens


def test_chinese_is_segmented_with_jieba() -> None:
    tokens = analyze("股东大会会议通知")
    assert "股东" in tokens
    assert "会议" in tokens
    assert "的" not in analyze("公司的股东")


def test_mixed_chinese_english_query() -> None:
    tokens = analyze("Zhiku知识库的OCR功能")
    assert "zhiku" in tokens and "ocr" in tokens
    assert "知识库" in tokens or "知识" in tokens


def test_person_name_survives() -> None:
    assert "张伟" in analyze("联系人：张伟") or "张" in analyze("联系人：张伟")
    assert "smith" in analyze("Contact: John Smith")


@pytest.mark.parametrize(
    ("query", "lang"),
    [
        ("How do I reset my password?", "en"),
        ("如何重置密码", "zh"),
        ("Zhiku 的 API key 怎么创建", "zh"),
        ("XR-7731-B", "en"),
        ("ＺＫ－２０２４ 保养", "zh"),
        ("What does 知库 mean in the product name Zhiku", "en"),
    ],
)
def test_text_language(query: str, lang: str) -> None:
    assert text_language(query) == lang


@pytest.mark.parametrize(
    ("query", "keyword"),
    [
        ("ZK-2024-017", True),
        ("ＺＫ－２０２４－０１７", True),
        ("What is XR-7731-B", True),
        ("张伟", True),
        ("年假", True),
        ("Dominic Thiem", True),
        ("What was Tesla's revenue in Q1 2021?", False),
        ("How much can I get back for a hotel room on a business trip?", False),
        ("我工作满一年了，可以休几天假？", False),
        ("张伟的电话是多少", False),
        ("ZK-2024-017 空压机多久保养一次", False),
    ],
)
def test_keyword_queries_are_recognised(query: str, keyword: bool) -> None:
    assert is_keyword_query(query) is keyword
