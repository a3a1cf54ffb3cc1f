"""Would batching concurrent prompts into one ONNX run keep every moderation decision?

The semantic classifier's int8 MiniLM quantises its activations dynamically, one scale per
tensor: in a batch, each prompt's embedding depends on the other prompts in it. This scores
every evaluation prompt alone (as a create does) and inside batches of 2, 4 and 8 other
evaluation prompts, and prints the largest score difference, how many scores cross the basic
(0.5) and strict (0.4) thresholds, and the CPU time per prompt of each batch size.

    .venv/bin/python bench/moderation_batching.py
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

from kreaserve.config import Settings
from kreaserve.moderation import PromptModerator

EVAL = Path(__file__).resolve().parents[1] / "kreaserve/moderation/data/eval_prompts.jsonl"
THRESHOLDS = (0.5, 0.4)


def main() -> None:
    moderator = PromptModerator(Settings().moderation_config())
    moderator.warm()
    semantic = moderator._semantic  # a benchmark of the internals
    encoder, linear = semantic.encoder, semantic._linear
    assert linear is not None
    rows = [json.loads(line) for line in EVAL.read_text().splitlines() if line.strip()]
    texts = [t for t in (moderator.semantic_text(r["prompt"]) for r in rows) if t]
    windows = [w[0] for w in (encoder._windows(t) for t in texts) if len(w) == 1]
    start = time.process_time()
    alone = [linear.scores(encoder._run([w])) for w in windows]
    single_ms = (time.process_time() - start) / len(windows) * 1e3
    print(
        f"load {os.getloadavg()[0]:.1f}; {len(windows)} evaluation prompts; alone: "
        f"{single_ms:.2f} ms CPU per prompt"
    )
    rng = random.Random(0)
    for size in (2, 4, 8):
        order = list(range(len(windows)))
        rng.shuffle(order)
        worst, crossings = 0.0, 0
        start = time.process_time()
        for first in range(0, len(order), size):
            group = order[first : first + size]
            embeddings = encoder._run([windows[i] for i in group])
            for row, i in enumerate(group):
                scores = linear.scores(embeddings[row : row + 1])
                for category, value in scores.items():
                    before = alone[i][category]
                    worst = max(worst, abs(value - before))
                    crossings += sum((value >= t) != (before >= t) for t in THRESHOLDS)
        ms = (time.process_time() - start) / len(windows) * 1e3
        print(
            f"batches of {size}: {ms:.2f} ms CPU per prompt, largest score change "
            f"{worst:.4f}, threshold crossings {crossings}"
        )


if __name__ == "__main__":
    main()
