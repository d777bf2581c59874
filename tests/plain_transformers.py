"""Load model directories with plain transformers (and peft), as a user without agrpo would: run it as
`python -I tests/plain_transformers.py JOBS.json OUT_DIR`.

`-I` keeps the working directory and PYTHONPATH off sys.path, and a finder placed first on the import path
refuses every agrpo package, so a directory whose code reaches for agrpo fails here even in an environment
where agrpo is installed. Each job names a directory, texts to tokenize, the Auto classes to load it with and,
optionally, a PEFT adapter to apply onto it; the child writes the token ids and every logits tensor to
`OUT_DIR/<job>.safetensors` and what it loaded to `OUT_DIR/summary.json`, for the test to compare with agrpo's
own loader. This file imports nothing of agrpo's.
"""

from __future__ import annotations

import json
import sys
from importlib.abc import MetaPathFinder
from pathlib import Path
from typing import Any

AGRPO_PACKAGES = frozenset({"common", "rewards", "rollout", "learner", "cluster", "tests"})


class RefuseAgrpo(MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in AGRPO_PACKAGES:
            raise ImportError(f"{name}: a directory agrpo saved must load without agrpo")


def run_job(job: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    import torch
    import transformers
    from safetensors.torch import save_file

    tokenizer = transformers.AutoTokenizer.from_pretrained(job["dir"], trust_remote_code=True)
    batch = tokenizer(job["texts"], return_tensors="pt", padding=True)
    inputs = {"input_ids": batch["input_ids"]}
    if job.get("mask", True):
        inputs["attention_mask"] = batch["attention_mask"]
    tensors = {name: value.contiguous() for name, value in batch.items() if name in ("input_ids", "attention_mask")}
    loaded = {}
    for auto in job["classes"]:
        model = getattr(transformers, auto).from_pretrained(job["dir"], trust_remote_code=True).eval()
        if job.get("adapter"):
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, job["adapter"]).eval()
        with torch.no_grad():
            tensors[auto] = model(**inputs).logits.float().contiguous()
        loaded[auto] = type(model).__name__
    save_file(tensors, str(out_dir / f"{job['name']}.safetensors"))
    return {"model_classes": loaded, "tokenizer_class": type(tokenizer).__name__}


def main(jobs_file: str, out_dir: str) -> None:
    sys.meta_path.insert(0, RefuseAgrpo())
    import transformers

    jobs = json.loads(Path(jobs_file).read_text())
    results = {job["name"]: run_job(job, Path(out_dir)) for job in jobs}
    summary = {
        "transformers": transformers.__version__,
        "jobs": results,
        "agrpo_modules": sorted(m for m in sys.modules if m.split(".")[0] in AGRPO_PACKAGES),
    }
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main(*sys.argv[1:])
