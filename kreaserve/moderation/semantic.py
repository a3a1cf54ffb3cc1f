"""The semantic prompt classifier: MiniLM sentence embeddings, a logistic regression per category.

The encoder (MiniLM on onnxruntime, its cached ONNX export) is in `encoder.py`.

Classifier: for each category, an L2-regularised logistic regression on the embeddings of the
labelled exemplars in ``data/exemplars.jsonl`` (one-vs-rest: the category's exemplars against
the safe ones and those of the categories it must be told apart from). The exemplars are a
training set written separately from the evaluation set (``data/eval_prompts.jsonl``); the
evaluation never trains anything, and a test checks that no evaluation prompt is an exemplar.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .encoder import DEFAULT_PRECISION, Encoder, ModerationUnavailable, ensure_encoder
from .rules import (
    EXPLICIT_SEXUAL,
    GRAPHIC_GORE,
    REAL_PERSON_SEXUAL,
    SEXUAL_MINORS,
    SEXUAL_VIOLENCE,
)

SEMANTIC_CATEGORIES = (
    SEXUAL_MINORS,
    SEXUAL_VIOLENCE,
    REAL_PERSON_SEXUAL,
    EXPLICIT_SEXUAL,
    GRAPHIC_GORE,
)
#: Exemplars of these categories are left out of a category's negatives: "a naked celebrity" is
#: explicit too, so it must not teach the explicit classifier that nudity is fine.
_NOT_NEGATIVE = {
    EXPLICIT_SEXUAL: {SEXUAL_MINORS, SEXUAL_VIOLENCE, REAL_PERSON_SEXUAL},
}
#: The basic categories are kinds of sexual content, so their semantic score is capped by a
#: "sexual content" head (trained on all four sexual categories against safe and gore): a school
#: portrait is not "sexual content involving minors" however child-like its embedding is.
#: Chosen by cross-validation on the exemplars (evaluate.py --cv): it removed most safe
#: false positives at the same recall.
SEXUAL_HEAD = "_sexual_content"
_GATED = (SEXUAL_MINORS, SEXUAL_VIOLENCE, REAL_PERSON_SEXUAL)
_SEXUAL = (SEXUAL_MINORS, SEXUAL_VIOLENCE, REAL_PERSON_SEXUAL, EXPLICIT_SEXUAL)
#: L2 penalty of the logistic regressions (on unit-norm 384-d embeddings), chosen by 5-fold
#: cross-validation on the exemplars only (see evaluate.py --cv).
L2 = 1e-4


# --- the classifier ------------------------------------------------------------------------------

#: The training files: the original exemplars, and those added for issue 17's failure families
#: (explicit prompts naming places, fiction and consensual adults; medicine and first aid as
#: teaching; modest clothing), written apart from every evaluation set.
EXEMPLAR_FILES = ("data/exemplars.jsonl", "data/exemplars_tuning.jsonl")


def load_exemplars() -> list[tuple[str, str]]:
    """(text, label) pairs of the training files (EXEMPLAR_FILES)."""
    rows = []
    for name in EXEMPLAR_FILES:
        raw = resources.files("kreaserve.moderation").joinpath(name).read_text("utf-8")
        rows += [json.loads(line) for line in raw.splitlines() if line.strip()]
    return [(r["text"], r["label"]) for r in rows]


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = L2, iterations: int = 50
) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (weights, bias); deterministic."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1), dtype=x.dtype)]).astype(np.float64)
    w = np.zeros(d + 1)
    reg = np.full(d + 1, l2 * n)
    reg[-1] = 0.0  # no penalty on the bias
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + reg * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w[:-1].astype(np.float32), float(w[-1])


def training_sets(labels: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For each category, (row indices, 0/1 targets) of its one-vs-rest training set."""
    labels_arr = np.asarray(labels)
    out = {}
    for category in SEMANTIC_CATEGORIES:
        excluded = _NOT_NEGATIVE.get(category, set())
        keep = np.array([lab == category or lab not in excluded for lab in labels])
        rows = np.nonzero(keep)[0]
        out[category] = (rows, (labels_arr[rows] == category).astype(np.float64))
    out[SEXUAL_HEAD] = (np.arange(len(labels)), np.isin(labels_arr, _SEXUAL).astype(np.float64))
    return out


@dataclass(frozen=True)
class Linear:
    weights: np.ndarray  # (categories, 384)
    bias: np.ndarray  # (categories,)
    categories: tuple[str, ...]

    def scores(self, embeddings: np.ndarray) -> dict[str, float]:
        logits = embeddings @ self.weights.T + self.bias
        probs = 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))
        best = probs.max(axis=0)
        scores = {c: float(best[i]) for i, c in enumerate(self.categories)}
        sexual = scores.pop(SEXUAL_HEAD, None)
        if sexual is not None:
            for category in _GATED:
                scores[category] = min(scores[category], sexual)
        return scores


def train(embeddings: np.ndarray, labels: Sequence[str], l2: float = L2) -> Linear:
    weights, biases = [], []
    sets = training_sets(labels)
    for rows, y in sets.values():
        w, b = fit_logistic(embeddings[rows], y, l2)
        weights.append(w)
        biases.append(b)
    return Linear(np.stack(weights), np.asarray(biases, dtype=np.float32), tuple(sets))


#: Bump when the training changes in a way the cache key does not see.
TRAINING_VERSION = 1
_TRAINED: dict[str, Linear] = {}
_TRAINED_LOCK = threading.Lock()


def _atomic_save(path: Path, write) -> None:  # type: ignore[no-untyped-def]
    """Write a cache file via a temporary file and a rename; a failure only skips caching."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # shared, read-only data, like the export itself
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class SemanticClassifier:
    """Scores a normalised prompt for each category (0..1). Thread-safe after `load`."""

    def __init__(
        self, cache_dir: Path, precision: str = DEFAULT_PRECISION, cache_size: int = 4096
    ) -> None:
        self.cache_dir = Path(cache_dir).expanduser()
        self.precision = precision
        self._lock = threading.Lock()
        self._encoder: Encoder | None = None
        self._linear: Linear | None = None
        self._cache: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def load(self, normalize_exemplar) -> None:  # type: ignore[no-untyped-def]
        """Build/load the encoder and train the per-category regressions (once)."""
        with self._lock:
            if self._linear is not None:
                return
            model_dir = ensure_encoder(self.cache_dir)
            encoder = Encoder(model_dir, self.precision)
            exemplars = load_exemplars()
            texts = [normalize_exemplar(t) for t, _ in exemplars]
            labels = [label for _, label in exemplars]
            self._linear = self._trained(model_dir, encoder, texts, labels)
            self._encoder = encoder

    def _trained(
        self, model_dir: Path, encoder: Encoder, texts: list[str], labels: list[str]
    ) -> Linear:
        """The regressions for these exemplars: from memory, from the cache folder (an .npz
        written atomically), or trained now (about a second) and saved."""
        key = hashlib.sha256(
            json.dumps([TRAINING_VERSION, self.precision, L2, texts, labels]).encode()
        ).hexdigest()[:20]
        with _TRAINED_LOCK:
            if key in _TRAINED:
                return _TRAINED[key]
        path = model_dir.parent / f".{model_dir.name}.classifier-{key}.npz"
        linear = None
        try:
            with np.load(path) as saved:
                linear = Linear(
                    saved["weights"], saved["bias"], tuple(str(c) for c in saved["categories"])
                )
        except (OSError, ValueError, KeyError):
            embeddings = self._exemplar_embeddings(model_dir, encoder, texts)
            linear = train(embeddings, labels)
            _atomic_save(
                path,
                lambda f: np.savez(
                    f,
                    weights=linear.weights,
                    bias=linear.bias,
                    categories=np.array(linear.categories),
                ),
            )
        with _TRAINED_LOCK:
            _TRAINED[key] = linear
        return linear

    def _exemplar_embeddings(
        self, model_dir: Path, encoder: Encoder, texts: list[str]
    ) -> np.ndarray:
        key = hashlib.sha256(json.dumps([self.precision, texts]).encode()).hexdigest()[:20]
        path = model_dir.parent / f".{model_dir.name}.exemplars-{key}.npy"
        try:
            cached = np.load(path)
            if cached.shape == (len(texts), 384):
                return cached
        except (OSError, ValueError):
            pass
        embeddings = encoder.embed_many(texts)
        _atomic_save(path, lambda f: np.save(f, embeddings))
        return embeddings

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            raise ModerationUnavailable("the semantic classifier is not loaded")
        return self._encoder

    def scores(self, text: str, chunks: Sequence[str] = ()) -> dict[str, float]:
        """Per-category scores of `text`; with `chunks` (parts of a long prompt) the highest
        score over the whole text and each chunk, so one unsafe clause in a long list of safe
        ones is not averaged away."""
        if self._linear is None or self._encoder is None:
            raise ModerationUnavailable("the semantic classifier is not loaded")
        key = "\x1f".join((text, *chunks))
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        if chunks:
            embeddings = self._encoder.embed_text_and_chunks(text, chunks)
        else:
            embeddings = self._encoder.embed_windows(text)
        result = self._linear.scores(embeddings)
        with self._cache_lock:
            self._cache[key] = result
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()
