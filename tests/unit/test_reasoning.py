"""Keeping a reasoning model's thinking out of the answer (pure)."""

from __future__ import annotations

import pytest

from serving.reasoning import ReasoningFilter, split_reasoning


def test_whole_reply() -> None:
    s = split_reasoning(
        "<think>The user asks about [1]. Hmm.</think>\n\nThe seal is replaced yearly [2]."
    )
    assert s.answer == "The seal is replaced yearly [2]."
    assert s.reasoning == "The user asks about [1]. Hmm."


def test_no_reasoning_and_unclosed_reasoning() -> None:
    assert split_reasoning("Plain answer.").answer == "Plain answer."
    cut = split_reasoning("<think>still thinking when the tokens ran out")
    assert cut.answer == "" and cut.reasoning == "still thinking when the tokens ran out"


def test_stray_closing_tag_ends_the_reasoning() -> None:
    s = split_reasoning("thinking without an opening tag</think>答案在这里[1]。")
    assert s.answer == "答案在这里[1]。" and s.reasoning == "thinking without an opening tag"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 100])
def test_stream_in_any_piece_size_matches_the_whole(size: int) -> None:
    reply = "<think>先想一想 [3]</think>年假是五天[1]。<b>not a tag</b> <thin"
    f = ReasoningFilter()
    out = "".join(f.feed(reply[i : i + size]) for i in range(0, len(reply), size)) + f.flush()
    assert out == "年假是五天[1]。<b>not a tag</b> <thin"
    assert f.reasoning == "先想一想 [3]"


def test_stream_never_emits_part_of_a_tag() -> None:
    f = ReasoningFilter()
    assert f.feed("Answer <th") == "Answer "
    assert f.feed("ink>hidden</th") == ""
    assert f.feed("ink> done") == " done"
    assert f.reasoning == "hidden"
