"""Rules over normalised text: word groups (lexicon.py) combined into per-category scores.

A category is rarely one word. ``nude`` is adult nudity (``explicit_sexual``), ``nude`` with a
minor is ``sexual_minors``, ``nude`` with a real person's name is ``real_person_sexual``, and
``nude`` before ``colour`` is no nudity at all. So the rules find which *groups* occur (after the
sense exceptions have masked colours, cocktails, bands and birds) and score the combinations.

Scores are fixed confidence levels: 0.95 and up for unambiguous combinations, about 0.9 for
strong ones, 0.8 for real people in underwear, and 0.4-0.5 for weak signals that only strict
mode acts on. Operators' own terms score 1.0 for their category.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from . import lexicon, person_names
from .context import ANATOMY, Context, read_context
from .normalize import Normalized, Token, _raw_tokens, fold

SEXUAL_MINORS = "sexual_minors"
SEXUAL_VIOLENCE = "sexual_violence"
REAL_PERSON_SEXUAL = "real_person_sexual"
EXPLICIT_SEXUAL = "explicit_sexual"
GRAPHIC_GORE = "graphic_gore"

_GROUPS = (
    "EXPLICIT",
    "SUGGESTIVE",
    "EXPLICIT_WEAK",
    "MINOR",
    "MINOR_SEXUAL",
    "SEXUAL_VIOLENCE",
    "FORCE",
    "COVERT",
    "PRIVATE_PLACE",
    "ADVOCACY",
    "DEPICTION",
    "GORE",
    "GORE_MEDIUM",
    "BODY_PART",
    "INJURY",
    "ATTRIBUTION",
)
#: Minor words that are anime slang: without a sexual word they are only a strict-mode signal.
_ANIME_MINOR = frozenset({"loli", "lolis", "shota", "shotas"})
#: Suggestive words about underwear: with a real person's name, enough for basic mode.
_UNDERWEAR = frozenset({"lingerie", "underwear", "panties", "bra", "thong", "g string"})

_NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
}
_NUM = r"(\d{1,2}|" + "|".join(_NUMBER_WORDS) + r")"
_AGE_PATTERNS = (
    re.compile(r"\b" + _NUM + r"\s*[- ]?\s*(?:years?|yrs?|yr)\s*[- ]?\s*olds?\b"),
    re.compile(r"\b" + _NUM + r"\s*(?:y\s*/\s*o|y\.\s*o\.?|yo|yrs?)\b"),
    re.compile(r"\baged?\s+" + _NUM + r"\b"),
    re.compile(r"\b" + _NUM + r"\s+years?\s+of\s+age\b"),
    re.compile(r"\b(?:girl|boy|child|kid|teen)\s*,?\s*" + _NUM + r"\b"),
)
#: "holding a woman down", "pinned her down": force with up to three words in between.
_HELD_DOWN = re.compile(
    r"\b(?:hold|holds|holding|held|pin|pins|pinning|pinned)\b(?:\s+\S+){0,3}"
    r"\s+down\b"
)
_NAME_PATTERN = re.compile(r"\b([A-Z][a-z]+)\s+([A-Z][a-z']+(?:[- ][A-Z][a-z']+)?)\b")


def _age(value: str) -> int:
    return _NUMBER_WORDS[value] if value in _NUMBER_WORDS else int(value)


def _phrase_tokens(phrase: str) -> tuple[str, ...]:
    """A lexicon phrase as prompt tokens: folded like prompts (Cyrillic spelled in Latin)."""
    return tuple(_raw_tokens(fold(phrase).casefold()))


@lru_cache(maxsize=1)
def public_figures() -> tuple[tuple[str, ...], ...]:
    """The names in data/public_figures.txt, tokenised like prompts are."""
    text = (
        resources.files("kreaserve.moderation")
        .joinpath("data/public_figures.txt")
        .read_text("utf-8")
    )
    names = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        toks = _phrase_tokens(line.lstrip("="))
        if toks:
            names.append(toks)
    return tuple(names)


@dataclass
class RuleResult:
    """Per-category scores, and for each scored category the groups that decided it (group
    names such as ``MINOR+EXPLICIT``, never the matched words)."""

    scores: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)

    def put(self, category: str, score: float, evidence: str) -> None:
        if score > self.scores.get(category, 0.0):
            self.scores[category] = score
            self.evidence[category] = evidence


class Rules:
    """Matches the lexicon, public figures and an operator's extra terms against a prompt."""

    def __init__(self, extra_terms: Mapping[str, Iterable[str]] | None = None) -> None:
        index: dict[tuple[str, ...], set[str]] = {}

        def add(toks: tuple[str, ...], group: str) -> None:
            if toks:
                index.setdefault(toks, set()).add(group)

        for group in _GROUPS:
            for phrase in lexicon.phrases(getattr(lexicon, group)):
                add(_phrase_tokens(phrase), group)
            for phrase in lexicon.phrases(getattr(lexicon, f"{group}_OTHER_LANGUAGES", "")):
                add(_phrase_tokens(phrase), group)
        for name in public_figures():
            add(name, "NAME")
        self.extra_categories: set[str] = set()
        for category, terms in (extra_terms or {}).items():
            for term in terms:
                toks = _phrase_tokens(term)
                if toks:
                    add(toks, f"EXTRA:{category}")
                    self.extra_categories.add(category)
        self._index = index
        self._max_len = max(len(k) for k in index)
        # Exceptions: phrase tokens -> the word in it that the phrase masks.
        self._exceptions: dict[tuple[str, ...], str] = {}
        for word, exception_phrases in lexicon.SENSE_EXCEPTIONS.items():
            for phrase in exception_phrases:
                self._exceptions[_phrase_tokens(phrase)] = word
        self._exc_max_len = max(len(k) for k in self._exceptions)
        # Spelled-out runs ("anude", "sexualassault") are searched for phrases without spaces.
        self._joined_terms = sorted(
            ((("".join(k)), k) for k in index if len("".join(k)) >= 3),
            key=lambda item: -len(item[0]),
        )
        self._first_names = frozenset(person_names.FIRST_NAMES.split())
        self._not_surnames = frozenset(person_names.NOT_SURNAMES.split())
        self._fictional = lexicon.phrases(person_names.FICTIONAL)
        self._attribution = frozenset(
            w for p in lexicon.phrases(lexicon.ATTRIBUTION) for w in p.split()
        )

    @property
    def vocabulary(self) -> frozenset[str]:
        """Every word the rules know: what leetspeak and stretched spellings may map onto."""
        words = {w for k in self._index for w in k}
        words.update(lexicon.COMMON.split())
        return frozenset(words)

    # --- matching ------------------------------------------------------------------------------

    def _masked(self, words: list[str]) -> set[int]:
        masked: set[int] = set()
        n = len(words)
        for i in range(n):
            for length in range(2, self._exc_max_len + 1):
                if i + length > n:
                    break
                target = self._exceptions.get(tuple(words[i : i + length]))
                if target is not None:
                    masked.update(j for j in range(i, i + length) if words[j] == target)
        return masked

    def _matches(self, tokens: tuple[Token, ...]) -> list[tuple[str, int, int]]:
        """Every (group, start, end) the lexicon matches, before any masking."""
        words = [t.text for t in tokens]
        found: list[tuple[str, int, int]] = []
        n = len(words)
        for i in range(n):
            for length in range(1, self._max_len + 1):
                if i + length > n:
                    break
                for group in self._index.get(tuple(words[i : i + length]), ()):
                    found.append((group, i, i + length))
            if tokens[i].joined:
                readings = (tokens[i].text, *tokens[i].variants)
                for joined, key in self._joined_terms:
                    if any(joined in text for text in readings):
                        found.extend((group, i, i + 1) for group in self._index[key])
        return found

    def _read(
        self, tokens: tuple[Token, ...]
    ) -> tuple[dict[str, list[tuple[int, int]]], Context, set[int]]:
        """The groups found (spans that no sense exception, negation or drink name masks),
        the prompt's context, and the indexes the sense exceptions mask."""
        words = [t.text for t in tokens]
        matches = self._matches(tokens)
        context = read_context(tokens, [(s, e) for _, s, e in matches])
        senses = self._masked(words)
        masked = senses | context.masked
        hits: dict[str, list[tuple[int, int]]] = {}
        for group, start, end in matches:
            if not any(j in masked for j in range(start, end)):
                hits.setdefault(group, []).append((start, end))
        return hits, context, senses

    def semantic_text(self, norm: Normalized) -> str:
        """The canonical text as the rules understood it, for the semantic classifier: each
        masked sense replaced by its meaning ("nude colour" -> "beige colour"), a drink name
        by "cocktail", and negations left out ("a battle, no gore" -> "a battle")."""
        return " ".join(word for word, _brk in self._semantic_words(norm))

    def semantic_clauses(self, norm: Normalized) -> list[list[str]]:
        """`semantic_text`'s words split into the prompt's clauses (at commas and sentence
        breaks), read in the context of the whole prompt: a clause of a "Negative prompt:"
        list stays negated."""
        clauses: list[list[str]] = []
        for word, brk in self._semantic_words(norm):
            if brk or not clauses:
                clauses.append([])
            clauses[-1].append(word)
        return clauses

    def _semantic_words(self, norm: Normalized) -> list[tuple[str, int]]:
        words = [t.text for t in norm.tokens]
        _hits, context, senses = self._read(norm.tokens)
        for i in sorted(senses):
            substitute = lexicon.SENSE_SUBSTITUTES.get(words[i])
            if substitute is not None:
                words[i] = substitute
        out: list[tuple[str, int]] = []
        brk = 0
        for i, token in enumerate(norm.tokens):
            brk = max(brk, token.brk)
            if i not in context.dropped:
                out.append((context.substitutes.get(i, words[i]), brk))
                brk = 0
        return out

    def _names(self, norm: Normalized, hits: dict[str, list[tuple[int, int]]]) -> bool:
        """Whether a real person's name is the subject (not "in the style of <name>")."""
        words = [t.text for t in norm.tokens]
        for start, _end in hits.get("NAME", []):
            if not self._attributed(words[max(0, start - 3) : start]):
                return True
        for match in _NAME_PATTERN.finditer(norm.folded):
            first, last = match.group(1), match.group(2)
            if f"{first} {last.split()[0]}".lower() in self._fictional:
                continue
            if (
                first.lower() in self._first_names
                and last.split()[0].lower() not in self._not_surnames
            ):
                before = _raw_tokens(norm.folded[: match.start()].casefold())[-3:]
                if not self._attributed(before):
                    return True
        return False

    def _attributed(self, before: list[str]) -> bool:
        return any(w in self._attribution for w in before)

    @staticmethod
    def _minor_age(lower: str) -> bool:
        for pattern in _AGE_PATTERNS:
            for match in pattern.finditer(lower):
                if _age(match.group(1)) < 18:
                    return True
        return False

    @staticmethod
    def _near(a: list[tuple[int, int]], b: list[tuple[int, int]], distance: int) -> bool:
        return any(
            abs(sa - sb) <= distance or abs(ea - eb) <= distance for sa, ea in a for sb, eb in b
        )

    # --- scoring -------------------------------------------------------------------------------

    def score(self, norm: Normalized) -> RuleResult:
        hits, context, _senses = self._read(norm.tokens)
        words = [t.text for t in norm.tokens]
        has = {g for g, spans in hits.items() if spans}
        result = RuleResult()

        explicit = "EXPLICIT" in has
        suggestive = "SUGGESTIVE" in has
        weak = "EXPLICIT_WEAK" in has
        minor_words = {" ".join(words[s:e]) for s, e in hits.get("MINOR", [])}
        minor = bool(minor_words) or self._minor_age(norm.lower)
        anime_only = (
            bool(minor_words) and minor_words <= _ANIME_MINOR and not self._minor_age(norm.lower)
        )
        sexual_word = explicit or suggestive
        advocacy = "ADVOCACY" in has and "DEPICTION" not in has and not explicit

        # sexual content involving minors
        if "MINOR_SEXUAL" in has:
            result.put(SEXUAL_MINORS, 0.98, "MINOR_SEXUAL")
        if minor and explicit:
            result.put(SEXUAL_MINORS, 0.97, "MINOR+EXPLICIT")
        if minor and suggestive:
            result.put(SEXUAL_MINORS, 0.9, "MINOR+SUGGESTIVE")
        if minor and weak:
            result.put(SEXUAL_MINORS, 0.6, "MINOR+EXPLICIT_WEAK")
        if anime_only:
            result.put(SEXUAL_MINORS, 0.45, "MINOR")

        # sexual violence and non-consent
        if "SEXUAL_VIOLENCE" in has:
            result.put(SEXUAL_VIOLENCE, 0.3 if advocacy else 0.97, "SEXUAL_VIOLENCE")
        force = "FORCE" in has or bool(_HELD_DOWN.search(" ".join(words)))
        if force and sexual_word:
            result.put(SEXUAL_VIOLENCE, 0.3 if advocacy else 0.9, "FORCE+SEXUAL")
        if "COVERT" in has and ("PRIVATE_PLACE" in has or sexual_word):
            result.put(SEXUAL_VIOLENCE, 0.9, "COVERT+PRIVATE")

        # sexual depictions of real, named people
        if (explicit or "SEXUAL_VIOLENCE" in has or suggestive or weak) and self._names(norm, hits):
            if explicit or "SEXUAL_VIOLENCE" in has:
                result.put(REAL_PERSON_SEXUAL, 0.97, "NAME+EXPLICIT")
            elif any(" ".join(words[s:e]) in _UNDERWEAR for s, e in hits.get("SUGGESTIVE", [])):
                result.put(REAL_PERSON_SEXUAL, 0.8, "NAME+UNDERWEAR")
            else:
                result.put(REAL_PERSON_SEXUAL, 0.45, "NAME+SUGGESTIVE")

        # nudity and explicit sexual content (anatomy words in a medical or teaching context
        # are anatomy: they still combined with minors, names and force above)
        explicit_words = {" ".join(words[s:e]) for s, e in hits.get("EXPLICIT", [])}
        if explicit and context.medical and explicit_words <= ANATOMY:
            result.put(EXPLICIT_SEXUAL, 0.3, "EXPLICIT_ANATOMY+MEDICAL")
        elif explicit:
            result.put(EXPLICIT_SEXUAL, 0.95, "EXPLICIT")
        elif weak:
            result.put(EXPLICIT_SEXUAL, 0.4, "EXPLICIT_WEAK")

        # graphic gore
        if "GORE" in has:
            result.put(GRAPHIC_GORE, 0.95, "GORE")
        if (
            "BODY_PART" in has
            and "INJURY" in has
            and self._near(hits["BODY_PART"], hits["INJURY"], 3)
        ):
            result.put(GRAPHIC_GORE, 0.9, "BODY_PART+INJURY")
        if "GORE_MEDIUM" in has:
            result.put(GRAPHIC_GORE, 0.5, "GORE_MEDIUM")

        # the operator's own terms
        for group in has:
            if group.startswith("EXTRA:"):
                result.put(group.split(":", 1)[1], 1.0, "OPERATOR_TERM")
        return result
