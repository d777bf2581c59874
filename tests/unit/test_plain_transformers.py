"""Directories agrpo saves load with plain transformers and peft, in a clean interpreter that cannot import agrpo,
and give the logits agrpo's own loader gives.

Checked with this environment's transformers, and with transformers 4.57 (a user's environment without agrpo
may well have 4.x) in a throwaway virtual environment when one exists (`AGRPO_TF4_PYTHON`, default
/tmp/tf4/bin/python); that case is skipped without it. One way to make it, reusing this environment's torch
and peft from a path file, so that only transformers and its own pins are downloaded:

    python3 -m venv /tmp/tf4
    .venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
        > /tmp/tf4/lib/python3.11/site-packages/zz_agrpo_env.pth
    /tmp/tf4/bin/pip install 'transformers==4.57.*'
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from common.checkpoint import MANIFEST
from common.config import LoraConfig, ModelConfig, TinyModelConfig
from common.errors import CheckpointError
from common.model import build_tiny_model, build_tiny_tokenizer
from common.model.llada import AUTO_MAP
from common.model.loading import Policy, load_policy, mask_predictor_logits, save_policy
from learner.lora import apply_lora, save_adapter
from tests.unit.model_helpers import write_toy_remote_dir

CHILD = Path(__file__).resolve().parents[1] / "plain_transformers.py"
TF4 = Path(os.environ.get("AGRPO_TF4_PYTHON", "/tmp/tf4/bin/python"))
TEXTS = ["<answer>3*5</answer>", "12+7=", "<think>\nx y</think><answer>"]
SAME_LENGTH = ["12+7=", "3*4-5"]  # the toy remote model is called without a mask, so no padding
MASKED_LM = ["AutoModel", "AutoModelForMaskedLM"]


def tiny_policy(attention: str, seed: int) -> Policy:
    tokenizer = build_tiny_tokenizer()
    shape = TinyModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden_size=48, attention=attention)
    model = build_tiny_model(shape, len(tokenizer), tokenizer.mask_token_id, tokenizer.eos_token_id, 0, seed)
    with torch.no_grad():  # sharper weights, so positions, masks and blocks move the logits well above float noise
        for param in model.parameters():
            if param.dim() == 2:
                param.mul_(6)
    return Policy(model.eval(), tokenizer, tokenizer.mask_token_id, 1, 0, (2, 0), False)


def agrpo_logits(path: Path, texts: list[str], mask: bool = True, trust: bool = False) -> dict[str, torch.Tensor]:
    policy = load_policy(ModelConfig(path=str(path), trust_remote_code=trust))
    batch = policy.tokenizer(texts, return_tensors="pt", padding=True)
    attention = batch["attention_mask"] if mask else None
    with torch.no_grad():
        logits = mask_predictor_logits(policy, batch["input_ids"], attention)
    return {"input_ids": batch["input_ids"], "logits": logits}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Directories as agrpo writes them, the jobs that load them plainly, and what agrpo's loader computes."""
    root = tmp_path_factory.mktemp("saved")
    jobs, expected = [], {}
    for name, attention in (("full", "full"), ("block", "block_causal")):
        save_policy(tiny_policy(attention, seed=3), root / name)
        jobs.append({"name": name, "dir": str(root / name), "texts": TEXTS, "classes": MASKED_LM})
        expected[name] = agrpo_logits(root / name, TEXTS)

    (root / "toy-source").mkdir()
    write_toy_remote_dir(root / "toy-source")  # a model with its own code (as Dream), saved again by agrpo
    save_policy(load_policy(ModelConfig(path=str(root / "toy-source"), trust_remote_code=True)), root / "toy")
    jobs.append(
        {"name": "toy", "dir": str(root / "toy"), "texts": SAME_LENGTH, "classes": ["AutoModel"], "mask": False}
    )
    expected["toy"] = agrpo_logits(root / "toy", SAME_LENGTH, mask=False, trust=True)

    # A LoRA adapter on the saved full model, as a LoRA run writes it next to its merged weights.
    base = load_policy(ModelConfig(path=str(root / "full")))
    peft_model = apply_lora(base.model, LoraConfig(enabled=True, r=4, alpha=8), seed=1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if ".lora_B." in name:  # zero at init: give the adapter an effect
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(len(name))) * 0.5)
    adapters = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    save_adapter(peft_model, adapters, root / "adapter", base=str(root / "full"))
    batch = base.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        lora_logits = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    jobs.append(
        {
            "name": "lora",
            "dir": str(root / "full"),
            "texts": TEXTS,
            "classes": MASKED_LM,
            "adapter": str(root / "adapter"),
        }
    )
    expected["lora"] = {"input_ids": batch["input_ids"], "logits": lora_logits}
    (root / "jobs.json").write_text(json.dumps(jobs))
    return {"root": root, "jobs": jobs, "expected": expected}


def run_plain(python: Path, saved: dict[str, Any], out: Path) -> dict[str, Any]:
    out.mkdir()
    env = {**os.environ, "HF_MODULES_CACHE": str(out / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(python), "-I", str(CHILD), str(saved["root"] / "jobs.json"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


PYTHONS = [
    pytest.param(Path(sys.executable), id="this-environment"),
    pytest.param(
        TF4, id="transformers-4.57", marks=pytest.mark.skipif(not TF4.is_file(), reason=f"no {TF4} (see docstring)")
    ),
]


@pytest.mark.parametrize("python", PYTHONS)
def test_plain_transformers_and_peft_load_what_agrpo_saved(python: Path, saved: dict[str, Any], tmp_path: Path) -> None:
    summary = run_plain(python, saved, tmp_path / "out")
    assert summary["agrpo_modules"] == []
    if python == TF4:
        assert summary["transformers"].startswith("4.")
    for job in saved["jobs"]:
        name, want = job["name"], saved["expected"][job["name"]]
        got = load_file(str(tmp_path / "out" / f"{name}.safetensors"))
        assert torch.equal(got["input_ids"], want["input_ids"]), name  # the same tokenizer
        for auto in job["classes"]:
            torch.testing.assert_close(got[auto], want["logits"], atol=1e-5, rtol=1e-5, msg=f"{name} {auto}")
    classes = summary["jobs"]
    assert classes["full"]["model_classes"] == {auto: "LLaDAModelLM" for auto in MASKED_LM}
    assert classes["lora"]["model_classes"] == {auto: "PeftModel" for auto in MASKED_LM}
    assert classes["toy"]["model_classes"] == {"AutoModel": "ToyModel"}


def test_a_saved_directory_carries_its_code_and_a_portable_tokenizer(saved: dict[str, Any]) -> None:
    root = saved["root"]
    config = json.loads((root / "full" / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    assert {"llada.py", "block_mask.py"} <= {p.name for p in (root / "full").iterdir()}
    assert (
        json.loads((root / "full" / "tokenizer_config.json").read_text())["tokenizer_class"]
        == "PreTrainedTokenizerFast"
    )
    assert (root / "toy" / "modeling_toy.py").is_file()
    assert json.loads((root / "toy" / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_toy.ToyModel"
    listed = json.loads((root / "full" / MANIFEST).read_text())["files"]
    assert {"llada.py", "block_mask.py", "config.json", "model.safetensors", "tokenizer_config.json"} <= set(listed)
    adapter = json.loads((root / "adapter" / "adapter_config.json").read_text())
    assert (adapter["peft_type"], adapter["r"], adapter["lora_alpha"]) == ("LORA", 4, 8)
    assert adapter["base_model_name_or_path"] == str(root / "full")
    assert (root / "adapter" / "adapter_model.safetensors").is_file()


def test_changed_modeling_code_is_refused_by_the_manifest(saved: dict[str, Any], tmp_path: Path) -> None:
    """The copied code runs when plain transformers loads the directory, so it is checksummed like the weights."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in (saved["root"] / "full").iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    with (copy / "llada.py").open("a") as f:
        f.write("\nprint('changed')\n")
    with pytest.raises(CheckpointError, match=r"llada.py is corrupt \(checksum mismatch\)"):
        load_policy(ModelConfig(path=str(copy)))
