"""Content moderation: basic checks on every prompt, stricter ones with ``nsfw_check``.

* `PromptModerator.check(prompt, strict=...)` runs in the API at task creation: normalised-text
  rules (rules.py over normalize.py) and a semantic classifier (MiniLM on onnxruntime,
  semantic.py). No torch in this process.
* `ImageModerator.check(png)` runs in the worker before an output image is stored (open_nsfw).
* `kreaserve.moderation.evaluate` measures both modes on ``data/eval_prompts.jsonl``.
"""

from __future__ import annotations

import threading

from .encoder import DEFAULT_PRECISION, ModerationUnavailable
from .image import ImageModerator
from .normalize import Canonicalizer, Normalized, fold, normalize
from .policy import (
    BASIC_CATEGORIES,
    CATEGORIES,
    STRICT_CATEGORIES,
    Decision,
    ModerationConfig,
    category_text,
    decide,
    default_cache_dir,
    log_decision,
)
from .rules import Rules
from .semantic import SemanticClassifier

#: Prompts longer than this many words are also scored clause by clause (in chunks of about
#: CHUNK_WORDS words): a mean-pooled embedding of a long prompt dilutes one unsafe clause.
CHUNK_FROM = 40
CHUNK_WORDS = 20


class PromptModerator:
    """The prompt check. Thread-safe; loads its models on `warm()` or on the first check."""

    def __init__(self, config: ModerationConfig, *, precision: str = DEFAULT_PRECISION) -> None:
        self.config = config
        self._rules = Rules(config.extra_terms)
        self._canonicalizer = Canonicalizer(self._rules.vocabulary)
        self._semantic = SemanticClassifier(config.cache_dir, precision=precision)
        self._ready = threading.Event()

    def warm(self) -> None:
        """Build (first time only: a one-time export in a subprocess) and load the models."""
        if not self._ready.is_set():
            fold("warm")  # builds the homoglyph table
            self._semantic.load(self.semantic_text)
            self._ready.set()

    def semantic_text(self, prompt: str) -> str:
        """What the semantic classifier reads for `prompt` (normalised, senses resolved)."""
        return self._rules.semantic_text(normalize(prompt, self._canonicalizer))

    def _chunks(self, norm: Normalized) -> list[str]:
        chunks: list[str] = []
        current: list[str] = []
        for words in self._rules.semantic_clauses(norm):
            if current and len(current) + len(words) > CHUNK_WORDS:
                chunks.append(" ".join(current))
                current = []
            current += words
        if current:
            chunks.append(" ".join(current))
        return chunks if len(chunks) > 1 else []

    def check(self, prompt: str, *, strict: bool) -> Decision:
        self.warm()
        norm = normalize(prompt, self._canonicalizer)
        rules = self._rules.score(norm)
        text = self._rules.semantic_text(norm)
        chunks = self._chunks(norm) if len(norm.tokens) > CHUNK_FROM else []
        semantic = self._semantic.scores(text, chunks) if text else {}
        decision = decide(rules.scores, semantic, config=self.config, strict=strict)
        closest = None
        if decision.allowed:
            active = self.config.categories(strict)
            scored = {c: max(rules.scores.get(c, 0.0), semantic.get(c, 0.0)) for c in active}
            closest = max(scored, key=scored.__getitem__) if scored else None
        log_decision(
            decision,
            config=self.config,
            prompt=prompt,
            closest=closest,
            evidence=rules.evidence.get(decision.category or ""),
        )
        return decision


__all__ = [
    "BASIC_CATEGORIES",
    "CATEGORIES",
    "STRICT_CATEGORIES",
    "Decision",
    "ImageModerator",
    "ModerationConfig",
    "ModerationUnavailable",
    "PromptModerator",
    "category_text",
    "default_cache_dir",
]
