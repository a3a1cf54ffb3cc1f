"""Choosing the semantic classifier's L2 penalty: k-fold cross-validation on the exemplars,
never on an evaluation set (``kreaserve moderation eval --cv``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import PromptModerator, semantic
from .policy import BASIC_CATEGORIES, CATEGORIES, ModerationConfig


def cross_validate(
    config: ModerationConfig, l2_values: Sequence[float], folds: int = 5, precision: str = "int8"
) -> str:
    """k-fold CV of the semantic classifier on the exemplars (not the evaluation set)."""
    moderator = PromptModerator(config, precision=precision)
    moderator.warm()
    exemplars = semantic.load_exemplars()
    texts = [moderator.semantic_text(t) for t, _ in exemplars]
    labels = np.array([label for _, label in exemplars])
    emb = moderator._semantic.encoder.embed_many(texts)
    rng = np.random.default_rng(0)
    fold_of = rng.integers(0, folds, len(texts))
    lines = [f"{folds}-fold cross-validation on {len(texts)} exemplars"]
    for l2 in l2_values:
        probs = np.zeros((len(texts), len(semantic.SEMANTIC_CATEGORIES)))
        for k in range(folds):
            train_idx = np.nonzero(fold_of != k)[0]
            test_idx = np.nonzero(fold_of == k)[0]
            linear = semantic.train(emb[train_idx], list(labels[train_idx]), l2)
            for i in test_idx:
                s = linear.scores(emb[i : i + 1])
                probs[i] = [s[c] for c in semantic.SEMANTIC_CATEGORIES]
        safe = labels == "safe"
        parts = []
        for t_name, t in (("basic", config.basic_threshold), ("strict", config.strict_threshold)):
            cats = BASIC_CATEGORIES if t_name == "basic" else CATEGORIES
            idx = [semantic.SEMANTIC_CATEGORIES.index(c) for c in cats]
            flagged = np.asarray((probs[:, idx] >= t).any(axis=1))
            target = np.isin(labels, cats)
            parts.append(
                f"{t_name}: safe blocked {flagged[safe].mean():.1%}, "
                f"recall {flagged[target].mean():.1%}"
            )
        lines.append(f"  l2={l2:<6} " + "; ".join(parts))
    return "\n".join(lines)
