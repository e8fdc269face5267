"""Is anything retrieved good enough to answer from? (pure)"""

from __future__ import annotations

import pytest

from core.types import Passage
from serving.evidence import EvidenceThresholds, coverage, is_evidence, relevant_passages

TH = EvidenceThresholds()


def _p(n: int, text: str = "食堂中午十一点半开门。", **scores: float) -> Passage:
    return Passage(
        chunk_id=n,
        document_id=n,
        library_id=1,
        text=text,
        title=f"doc{n}",
        heading_path=[],
        page_start=None,
        page_end=None,
        score=0.01,
        scores=dict(scores),
    )


def test_default_thresholds() -> None:
    assert (TH.dense, TH.dense_en, TH.coverage, TH.min_question_tokens) == (0.30, 0.60, 0.30, 2)


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ({"dense": 0.30}, True),
        ({"dense": 0.29}, False),
        ({"dense_en": 0.60}, True),
        ({"dense_en": 0.59}, False),
        ({"dense": 0.1, "dense_en": 0.9}, True),  # either signal is enough
        ({"dense": 0.5, "dense_en": 0.1}, True),
        ({"bm25": 25.0}, False),  # unbounded scores are not evidence by themselves
        ({}, False),
    ],
)
def test_dense_thresholds(scores: dict[str, float], expected: bool) -> None:
    # The text shares nothing with the question, so only the scores can decide.
    assert is_evidence("年假有几天？", _p(1, **scores), TH) is expected


def test_coverage_is_the_share_of_question_tokens_found() -> None:
    # 年假有几天 → bigrams 年假 假有 有几 几天; the passage has 年假 and 假有.
    assert coverage("年假有几天？", "员工年假有五天。") == pytest.approx(0.5)
    assert coverage("How many days of annual leave?", "Annual leave is five days.") == 0.75
    assert coverage("年假有几天？", "食堂开门。") == 0.0
    assert coverage("", "anything") == 0.0
    assert coverage("the of and", "the of and") == 0.0  # stop words only


def test_lexical_coverage_is_a_fallback_for_low_dense_scores() -> None:
    low = {"dense": 0.05, "dense_en": 0.1}
    assert is_evidence("年假有几天？", _p(1, "员工年假有五天。", **low), TH)
    assert not is_evidence("年假有几天？", _p(2, "员工年终奖发放时间。", **low), TH)  # 1/4
    assert is_evidence(
        "How many days of annual leave?", _p(3, "Annual leave is five days.", **low), TH
    )
    strict = EvidenceThresholds(coverage=0.8)
    assert not is_evidence("年假有几天？", _p(1, "员工年假有五天。", **low), strict)


def test_coverage_needs_enough_question_tokens() -> None:
    # One content token: finding it in a passage says little.
    assert not is_evidence("年", _p(1, "年假五天。"), TH)
    assert not is_evidence("the leave?", _p(2, "Leave is five days."), TH)
    assert is_evidence(
        "the leave?", _p(2, "Leave is five days."), EvidenceThresholds(min_question_tokens=1)
    )
    # …but a dense score still counts.
    assert is_evidence("年", _p(3, "无关。", dense=0.9), TH)


def test_relevant_passages_is_all_or_nothing() -> None:
    weak = [_p(1, dense=0.1), _p(2, dense=0.2), _p(3, dense=0.05)]
    assert relevant_passages("年假有几天？", weak) == []

    # One good passage, even ranked last, keeps all of them, in their ranked order.
    mixed = [*weak, _p(4, dense=0.45)]
    kept = relevant_passages("年假有几天？", mixed)
    assert kept == mixed and kept is not mixed
    assert [p.chunk_id for p in kept] == [1, 2, 3, 4]

    by_words = [_p(1, dense=0.1), _p(2, "员工年假有五天。", dense=0.1)]
    assert relevant_passages("年假有几天？", by_words) == by_words


def test_relevant_passages_with_custom_thresholds_and_empty_input() -> None:
    passages = [_p(1, dense=0.45)]
    assert relevant_passages("年假有几天？", passages) == passages
    assert relevant_passages("年假有几天？", passages, EvidenceThresholds(dense=0.5)) == []
    assert relevant_passages("年假有几天？", []) == []
    assert relevant_passages("", []) == []
