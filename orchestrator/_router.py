"""Routing free text to a capability and an agent.

The default ``KeywordRouter`` is the original pattern's: score each live
capability by how many of its keywords (and its own name) the text contains.
Unlike the original it never starves anyone: among capabilities with the same
best score, and among the agents serving the chosen one with the same load,
it takes turns (round-robin). The ``Router`` protocol lets a semantic or LLM
router replace it.

Specific keywords win over generic ones. A capability's score is, in order:
its specific word matches, its operator matches (an arithmetic operator between
two operands, "6*7", is a word of the text: a keyword ``*`` matches it), and
all its matches, generic ones included (a keyword made only of question or
function words such as "what", "how", "is"). So "what is 6*7" goes to the
capability with the keyword ``*``, not to the one that lists "what" to catch
questions in general, and "summarize the notes of 2024-05-01" to the one with
the keyword "summarize", whoever lists ``-``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Protocol

import msgspec

from bus import CallboardError

from ._registry import AgentInfo

__all__ = [
    "GENERIC_WORDS",
    "KeywordRouter",
    "NoRouteError",
    "Route",
    "Router",
    "is_generic",
    "is_operator",
    "words_of",
]

_WORD = re.compile(r"[a-z0-9]+")
_OPERATORS = "+-*/^%"
_OPERATOR = re.compile(rf"(?<=[0-9)])[ \t]*([{re.escape(_OPERATORS)}])(?=[ \t]*[0-9(.])")
"""An arithmetic operator between two operands ("6*7", "(1 + 2) ^ 3")."""

GENERIC_WORDS = frozenset(
    "what whats why how who whom whose when where which is are was were be been do does "
    "did can could would should will shall may might must the a an of to in on at for by "
    "with from and or me my i you your we us it its this that these those please tell give "
    "much many s".split()
)
"""Question and function words: a keyword made only of these is a weak (generic) match."""


def words_of(text: str) -> set[str]:
    """Lower-case word set of a text (what keyword scoring compares).

    The words are runs of letters and digits, plus each arithmetic operator
    that stands between two operands, so a keyword ``*`` matches "6*7".
    """
    lowered = text.lower()
    return {*_WORD.findall(lowered), *_OPERATOR.findall(lowered)}


def is_generic(keyword: str) -> bool:
    """True when ``keyword`` is made only of question and function words (a weak match)."""
    words = _keyword_words(keyword)
    return bool(words) and words <= GENERIC_WORDS


def is_operator(keyword: str) -> bool:
    """True when ``keyword`` is an arithmetic operator (it matches between two operands)."""
    return len(keyword.strip()) == 1 and keyword.strip() in _OPERATORS


def _keyword_words(keyword: str) -> set[str]:
    stripped = keyword.strip().lower()
    if is_operator(stripped):
        return {stripped}
    return set(_WORD.findall(stripped))


class NoRouteError(CallboardError):
    """No live capability matches the text."""

    code = 404
    type = "no_route"


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """Where a piece of text should go.

    Attributes:
        capability: the chosen capability.
        agent_id: the chosen agent instance (None lets the queue group pick).
        score: how well the capability matched (keyword hits).
        matched: the keywords that matched.
    """

    capability: str
    agent_id: str | None = None
    score: float = 0.0
    matched: tuple[str, ...] = ()


class Router(Protocol):
    """Chooses a capability and agent for a piece of text."""

    def route(self, text: str, agents: Sequence[AgentInfo]) -> Route:
        """The route for ``text`` among the live ``agents``; raises NoRouteError."""
        ...


class KeywordRouter:
    """Keyword-overlap routing with round-robin tie breaking.

    Args:
        outstanding: tasks this orchestrator has in flight per agent id; added
            to the heartbeat load so that a burst spreads before the next beat.
    """

    def __init__(self, outstanding: dict[str, int] | None = None) -> None:
        self.outstanding = outstanding if outstanding is not None else {}
        self._turns = itertools.count()

    def route(self, text: str, agents: Sequence[AgentInfo]) -> Route:
        """Score every live capability against ``text`` and pick one agent for it.

        A capability's score is (specific word matches, operator matches, all
        matches): the most specific matches win; generic ones only break ties.
        """
        words = words_of(text)
        scores: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {}
        for agent in agents:
            for capability in agent.capabilities:
                keywords = {
                    capability.lower(),
                    *(k.lower() for k in agent.keywords.get(capability, ())),
                }
                matched = tuple(
                    sorted(k for k in keywords if _keyword_words(k) <= words and _keyword_words(k))
                )
                operators = sum(map(is_operator, matched))
                specific = sum(not is_generic(k) for k in matched) - operators
                score = (specific, operators, len(matched))
                if matched and score > scores.get(capability, ((0, 0, 0), ()))[0]:
                    scores[capability] = (score, matched)
        if not scores:
            known = ", ".join(sorted({c for a in agents for c in a.capabilities})) or "none"
            raise NoRouteError(
                f"no live capability matches {text[:80]!r}; live capabilities: {known}. "
                "Name one of them (or its keywords) in the request"
            )
        best = max(score for score, _ in scores.values())
        tied = sorted(c for c, (score, _) in scores.items() if score == best)
        turn = next(self._turns)
        capability = tied[turn % len(tied)]
        serving = [a for a in agents if capability in a.capabilities]
        chosen = self._least_loaded(serving, turn)
        return Route(
            capability=capability,
            agent_id=chosen.id if chosen else None,
            score=float(best[2]),
            matched=scores[capability][1],
        )

    def _least_loaded(self, agents: Sequence[AgentInfo], turn: int) -> AgentInfo | None:
        if not agents:
            return None

        def load(agent: AgentInfo) -> float:
            capacity = agent.max_concurrency or 1
            return (agent.in_flight + self.outstanding.get(agent.id, 0)) / capacity

        lightest = min(load(a) for a in agents)
        candidates = sorted((a for a in agents if load(a) == lightest), key=lambda a: a.id)
        return candidates[turn % len(candidates)]
