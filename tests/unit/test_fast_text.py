from ingest.fast_text import sent_tokenize, word_tokenize


def test_sentences_in_english_and_chinese() -> None:
    assert sent_tokenize("It rained. We stayed in! Did you? Yes") == [
        "It rained.",
        "We stayed in!",
        "Did you?",
        "Yes",
    ]
    assert sent_tokenize("今天下雨。我们在家！你呢？") == ["今天下雨。", "我们在家！", "你呢？"]
    assert sent_tokenize("Pi is 3.14 exactly.") == ["Pi is 3.14 exactly."]


def test_words() -> None:
    assert word_tokenize("Don't stop-loss now, Bob.") == [
        "Don't",
        "stop-loss",
        "now",
        ",",
        "Bob",
        ".",
    ]
