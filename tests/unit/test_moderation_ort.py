"""The API's sentence encoder loads the ORT-format file written at export (issue 12).

Optimised once at export and saved in onnxruntime's own format, the int8 session costs the API
36-44 MB of RSS instead of 47-53 MB; its embeddings must be the .onnx file's bit for bit, so
every score and decision of the classifier stays the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kreaserve.moderation import encoder as encoder_module
from kreaserve.moderation import evaluate


def test_the_encoder_runs_the_ort_file_with_the_onnx_files_embeddings(cache_dir: Path) -> None:
    import onnxruntime as ort

    target = encoder_module.ensure_encoder(cache_dir)
    marker = json.loads((target / encoder_module.MARKER_FILE).read_text())
    assert marker["export"]["ort_vs_onnx_max_abs"] == {
        "model.fp32.onnx": 0.0,
        "model.int8.onnx": 0.0,
    }
    enc = encoder_module.Encoder(target)
    assert Path(enc._session._model_path).name == "model.int8.ort"
    prompts = [e.prompt for e in evaluate.load_eval_set()][:300]
    long_prompt = " ".join(prompts[:40])  # several windows
    got = np.vstack([enc.embed_many(prompts), enc.embed_windows(long_prompt)])
    # The same options, the .onnx file optimised at load (what the API ran before).
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    enc._session = ort.InferenceSession(
        str(target / "model.int8.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
    )
    want = np.vstack([enc.embed_many(prompts), enc.embed_windows(long_prompt)])
    assert got.shape[0] > 300
    assert np.array_equal(got, want)
