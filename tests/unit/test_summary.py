"""Tests for the extractive summariser."""

from __future__ import annotations

import pytest

from actors.builtins._summary import MAX_TEXT_LENGTH, SummaryError, summarize

CATS = (
    "Cats are independent animals. "
    "The weather today is sunny and warm. "
    "Many cats enjoy sleeping, and cats love warm sunny windows. "
    "Stock prices fell sharply on Monday. "
    "Owners say their cats purr when cats feel safe."
)


def test_picks_sentences_about_the_dominant_topic() -> None:
    assert summarize(CATS, 2) == (
        "Many cats enjoy sleeping, and cats love warm sunny windows. "
        "Owners say their cats purr when cats feel safe."
    )


def test_keeps_original_order() -> None:
    text = (
        "Rust compiles fast code. "
        "Bananas are yellow. "
        "Rust code is safe code and rust is fast. "
        "Rust rust rust code."
    )
    summary = summarize(text, 2)
    first, second = "Rust code is safe code and rust is fast.", "Rust rust rust code."
    assert summary == f"{first} {second}"


def test_default_keeps_three_sentences() -> None:
    text = " ".join(f"Sentence number {word} here." for word in "one two three four five".split())
    assert summarize(text).count(".") == 3


@pytest.mark.parametrize("count", [5, 6, 100])
def test_returns_everything_when_asking_for_at_least_the_sentence_count(count: int) -> None:
    assert summarize(CATS, count) == CATS.strip()


def test_short_text_is_whitespace_normalised() -> None:
    text = "  First   line\twraps\nhere.  Second one!   "
    assert summarize(text, 5) == "First line wraps here. Second one!"


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t  \n"])
def test_blank_text_gives_empty_summary(text: str) -> None:
    assert summarize(text, 1) == ""


@pytest.mark.parametrize("count", [0, -1, -100])
def test_non_positive_sentence_count_is_rejected(count: int) -> None:
    with pytest.raises(SummaryError, match="sentences must be at least 1"):
        summarize(CATS, count)


def test_sentence_count_is_validated_even_for_blank_text() -> None:
    with pytest.raises(SummaryError):
        summarize("", 0)


def test_ties_prefer_earlier_sentences() -> None:
    text = "Alpha beta gamma. Gamma beta alpha. Beta gamma alpha. Alpha gamma beta."
    assert summarize(text, 1) == "Alpha beta gamma."
    assert summarize(text, 2) == "Alpha beta gamma. Gamma beta alpha."


def test_is_deterministic() -> None:
    results = {summarize(CATS, 2) for _ in range(5)}
    assert len(results) == 1


def test_stopword_only_sentences_do_not_win() -> None:
    text = "It is what it is. Compilers compile code. Code compilers are useful. And so on."
    assert summarize(text, 2) == "Compilers compile code. Code compilers are useful."


def test_length_normalisation_stops_long_sentences_always_winning() -> None:
    text = (
        "Python is great. "
        "Python tooling, packaging, documentation, community, libraries, conferences, "
        "tutorials, books, podcasts and jobs exist. "
        "Python python."
    )
    assert summarize(text, 1) == "Python python."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One! Two? Three.", ["One!", "Two?", "Three."]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("Pi is 3.14 exactly. Next.", ["Pi is 3.14 exactly.", "Next."]),
        ("Title\n\nBody text follows", ["Title", "Body text follows"]),
        ("Wrapped\nline stays together.", ["Wrapped line stays together."]),
        ("Wait... really?! Yes.", ["Wait...", "really?!", "Yes."]),
    ],
)
def test_sentence_boundaries(text: str, expected: list[str]) -> None:
    assert summarize(text, len(expected)) == " ".join(expected)
    assert summarize(text, len(expected) + 1) == " ".join(expected)


def test_paragraph_breaks_separate_unpunctuated_headings() -> None:
    text = "Databases\n\nDatabases store data. Indexes speed up databases queries.\n\nThe end"
    assert summarize(text, 1) == "Databases"


def test_text_over_length_limit_is_rejected() -> None:
    with pytest.raises(SummaryError, match="too long"):
        summarize("a" * (MAX_TEXT_LENGTH + 1), 1)


def test_text_at_length_limit_is_accepted() -> None:
    sentence = "Word soup here. "
    text = (sentence * (MAX_TEXT_LENGTH // len(sentence) + 1))[:MAX_TEXT_LENGTH]
    assert summarize(text, 2) == "Word soup here. Word soup here."


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a" + "." * 200_000 + "b", id="dot-run"),
        pytest.param("a" + " " * 200_000 + "b", id="space-run"),
        pytest.param("\n " * 100_000, id="blank-lines"),
        pytest.param(". " * 100_000, id="empty-sentences"),
        pytest.param('." ' * 100_000, id="quoted-empty-sentences"),
    ],
)
def test_pathological_inputs_complete(text: str) -> None:
    assert isinstance(summarize(text, 3), str)


def test_summary_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        summarize("text", 0)
