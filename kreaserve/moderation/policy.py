"""Policy: the configuration, the decision, and how rule and semantic scores become a decision.

Every decision is logged on ``kreaserve.moderation`` with its mode, category, score and source;
the prompt text is added only when the operator's ``log_prompts`` is on (otherwise the log
carries the prompt's length, nothing of its text).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .rules import (
    EXPLICIT_SEXUAL,
    GRAPHIC_GORE,
    REAL_PERSON_SEXUAL,
    SEXUAL_MINORS,
    SEXUAL_VIOLENCE,
)

logger = logging.getLogger("kreaserve.moderation")
logger.addHandler(logging.NullHandler())  # a library logs; the application configures output

#: Built-in categories, most severe first (the order a refusal names when several apply).
CATEGORIES = (SEXUAL_MINORS, SEXUAL_VIOLENCE, REAL_PERSON_SEXUAL, EXPLICIT_SEXUAL, GRAPHIC_GORE)
BASIC_CATEGORIES = (SEXUAL_MINORS, SEXUAL_VIOLENCE, REAL_PERSON_SEXUAL)
STRICT_CATEGORIES = (EXPLICIT_SEXUAL, GRAPHIC_GORE)

CATEGORY_TEXT = {
    SEXUAL_MINORS: "sexual content involving minors",
    SEXUAL_VIOLENCE: "sexual violence or non-consensual sexual content",
    REAL_PERSON_SEXUAL: "sexual depictions of real, named people",
    EXPLICIT_SEXUAL: "nudity or explicit sexual content",
    GRAPHIC_GORE: "graphic gore",
}


def category_text(category: str) -> str:
    return CATEGORY_TEXT.get(category, category.replace("_", " "))


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "kreaserve" / "moderation"


@dataclass(frozen=True)
class ModerationConfig:
    """Plain settings for moderation.

    Basic mode checks ``basic_categories`` at ``basic_threshold``. Strict mode (``nsfw_check``)
    checks ``basic_categories`` and ``strict_categories`` at ``strict_threshold`` (never laxer
    than basic: the lower of the two thresholds applies). ``image_threshold`` is the open_nsfw
    score at which an output image is withheld. ``extra_terms`` maps a category to the operator's
    own words or phrases (normalised like prompts, so leetspeak and spacing tricks are caught
    too); a hit scores 1.0. Terms for a built-in category count when that category is checked;
    terms under a category name of the operator's own count in both modes.
    """

    basic_categories: tuple[str, ...] = BASIC_CATEGORIES
    strict_categories: tuple[str, ...] = STRICT_CATEGORIES
    basic_threshold: float = 0.5
    strict_threshold: float = 0.4
    image_threshold: float = 0.5
    extra_terms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cache_dir: Path = field(default_factory=default_cache_dir)
    log_prompts: bool = False

    def categories(self, strict: bool) -> tuple[str, ...]:
        active = list(self.basic_categories)
        if strict:
            active += [c for c in self.strict_categories if c not in active]
        active += [c for c in self.extra_terms if c not in CATEGORIES and c not in active]
        return tuple(active)

    def threshold(self, strict: bool) -> float:
        return min(self.strict_threshold, self.basic_threshold) if strict else self.basic_threshold


@dataclass(frozen=True)
class Decision:
    allowed: bool
    category: str | None
    score: float
    mode: str
    source: str

    @property
    def message(self) -> str:
        subject = "generated image was withheld" if self.source == "image" else "prompt was refused"
        if self.allowed or self.category is None:
            what = "generated image" if self.source == "image" else "prompt"
            return f"The {what} passed content moderation."
        return f"The {subject} by content moderation: {category_text(self.category)}."


def _severity(category: str, active: tuple[str, ...]) -> int:
    return (
        CATEGORIES.index(category)
        if category in CATEGORIES
        else len(CATEGORIES) + active.index(category)
    )


def decide(
    rule_scores: Mapping[str, float],
    semantic_scores: Mapping[str, float],
    *,
    config: ModerationConfig,
    strict: bool,
) -> Decision:
    """Combine rule and semantic scores (each 0..1, per category) into a decision."""
    mode = "strict" if strict else "basic"
    active = config.categories(strict)
    threshold = config.threshold(strict)
    best: tuple[float, str, str] | None = None
    refused: list[tuple[int, float, str, str]] = []
    for category in active:
        rule = rule_scores.get(category, 0.0)
        semantic = semantic_scores.get(category, 0.0)
        score, source = (rule, "rules") if rule >= semantic else (semantic, "semantic")
        if category not in CATEGORIES and rule > 0:
            source = "operator_terms"
        if best is None or score > best[0]:
            best = (score, category, source)
        if score >= threshold:
            refused.append((_severity(category, active), score, category, source))
    if refused:
        _, score, category, source = min(refused)
        return Decision(False, category, round(score, 4), mode, source)
    score, _category, source = best if best else (0.0, "", "rules")
    return Decision(True, None, round(score, 4), mode, source)


def log_decision(
    decision: Decision,
    *,
    config: ModerationConfig,
    prompt: str | None,
    closest: str | None = None,
    evidence: str | None = None,
    kind: str = "prompt",
) -> None:
    """Log one decision: refusals at WARNING, the rest at DEBUG (an allowed prompt's
    closest category is routine, not news)."""
    level = logging.DEBUG if decision.allowed else logging.WARNING
    if not logger.isEnabledFor(level):
        return
    fields = {
        "kind": kind,
        "allowed": decision.allowed,
        "mode": decision.mode,
        "category": decision.category,
        "score": decision.score,
        "source": decision.source,
    }
    if closest:
        fields["closest"] = closest
    if evidence:
        fields["evidence"] = evidence
    if prompt is not None:
        fields["prompt_chars"] = len(prompt)
        if config.log_prompts:
            fields["prompt"] = prompt
    text = " ".join(f"{k}={v!r}" if k == "prompt" else f"{k}={v}" for k, v in fields.items())
    logger.log(level, "moderation decision %s", text, extra={"moderation": fields})
