"""Extractive text summarisation without models or third-party dependencies.

Sentences are ranked by how many of the text's frequent content words they contain, which is
crude but deterministic, language-model-free and linear in the size of the input, so it is
safe to run on arbitrary text received over the bus.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from typing import Final

__all__ = ["MAX_TEXT_LENGTH", "SummaryError", "summarize"]

MAX_TEXT_LENGTH: Final = 1_000_000
"""Longest accepted input, in characters, so one request cannot monopolise a worker."""

_PARAGRAPH_BREAK: Final = re.compile(r"\n[^\S\n]*\n")
_SENTENCE_BREAK: Final = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]\u2019\u201d])\s+")
_WORD: Final = re.compile(r"[a-zA-Z0-9']+")

_STOPWORDS: Final = frozenset(
    """
    a about above after again against all am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each few for from further had hadn't has hasn't have
    haven't having he he'd he'll he's her here here's hers herself him himself his how how's
    i i'd i'll i'm i've if in into is isn't it it's its itself just let's me more most
    mustn't my myself no nor not of off on once only or other ought our ours ourselves out
    over own same shan't she she'd she'll she's should shouldn't so some such than that
    that's the their theirs them themselves then there there's these they they'd they'll
    they're they've this those through to too under until up very was wasn't we we'd we'll
    we're we've were weren't what what's when when's where where's which while who who's whom
    why why's will with won't would wouldn't you you'd you'll you're you've your yours
    yourself yourselves also may might must shall s t
    """.split()
)


class SummaryError(ValueError):
    """The summary request itself is invalid (not merely a text with nothing to summarise)."""


def summarize(text: str, sentences: int = 3) -> str:
    """Pick the ``sentences`` most representative sentences of ``text``.

    The picked sentences keep their original order so the summary still reads naturally;
    equal scores favour the earlier sentence so the output is reproducible.

    Args:
        text: Plain prose. Sentences end with ``.``, ``!`` or ``?`` followed by whitespace.
            A blank line also ends one, so an unpunctuated heading stays separate, while a
            single line break is treated as hard wrapping inside a sentence.
        sentences: How many sentences to keep; at least 1.

    Returns:
        The chosen sentences with whitespace normalised, joined by single spaces, or ``""``
        when the text is blank.

    Raises:
        SummaryError: If ``sentences`` is below 1 or the text exceeds :data:`MAX_TEXT_LENGTH`.
    """
    if sentences < 1:
        raise SummaryError(f"sentences must be at least 1, got {sentences}")
    if len(text) > MAX_TEXT_LENGTH:
        raise SummaryError(
            f"text is too long to summarise ({len(text):,} characters; "
            f"the maximum is {MAX_TEXT_LENGTH:,})"
        )
    parts = _split_sentences(text)
    if len(parts) <= sentences:
        return " ".join(parts)
    scores = _score(parts)
    best = heapq.nsmallest(sentences, range(len(parts)), key=lambda index: (-scores[index], index))
    return " ".join(parts[index] for index in sorted(best))


def _split_sentences(text: str) -> list[str]:
    """Split on terminal punctuation and blank lines.

    Only fixed-width lookbehinds and anchored patterns are used so that splitting stays linear
    even on adversarial input such as long runs of dots or spaces.
    """
    found: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        for raw in _SENTENCE_BREAK.split(paragraph):
            sentence = " ".join(raw.split())
            if sentence:
                found.append(sentence)
    return found


def _content_words(sentence: str) -> list[str]:
    words = (word.strip("'") for word in _WORD.findall(sentence.lower()))
    return [word for word in words if word and word not in _STOPWORDS]


def _score(parts: list[str]) -> list[float]:
    """Score each sentence by the normalised frequency of its content words.

    Frequencies are summed as integers before dividing, so sentences with the same words tie
    exactly rather than differing in the last floating-point bit. Dividing by the square root
    of the word count damps, without cancelling, the advantage of long sentences.
    """
    words_per_sentence = [_content_words(part) for part in parts]
    frequencies = Counter(word for words in words_per_sentence for word in words)
    if not frequencies:
        return [0.0] * len(parts)
    top = max(frequencies.values())
    return [
        sum(frequencies[word] for word in words) / top / math.sqrt(len(words)) if words else 0.0
        for words in words_per_sentence
    ]
