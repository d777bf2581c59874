"""Loading policies: tiny, saved, LLaDA-format, remote-code and pickle directories, and every refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from common.config import ModelConfig
from common.errors import CheckpointError
from common.model import LLaDAModelLM
from common.model.llada import AUTO_MAP
from common.model.loading import (
    Policy,
    load_policy,
    mask_predictor_logits,
    resolve_dtype,
    save_policy,
)
from common.model.tokenizer import build_tiny_tokenizer
from tests.unit.model_helpers import write_toy_remote_dir

TINY = {"d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "mlp_hidden_size": 48}
D, LAYERS, KV, MLP, EMB, VOCAB = 32, 2, 2, 48, 128, 105

# The public LLaDA-8B-Instruct config.json keys, scaled down (LLaDA-8B: d_model 4096, 32 layers and heads,
# mlp_hidden_size 12288, vocab_size = embedding_size = 126464, mask 126336, eos = pad = 126081).
LLADA_CONFIG: dict[str, object] = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": D,
    "embedding_dropout": 0.0,
    "embedding_size": EMB,
    "eos_token_id": 1,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 2,
    "max_sequence_length": 64,
    "mlp_hidden_size": MLP,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 4,
    "n_kv_heads": KV,
    "n_layers": LAYERS,
    "pad_token_id": 1,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": VOCAB,
    "weight_tying": False,
}


def public_llada_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the public LLaDA-8B parameter names, stored in bfloat16 as released."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"model.transformer.wte.weight": (EMB, D), "model.transformer.ln_f.weight": (D,)}
    shapes["model.transformer.ff_out.weight"] = (EMB, D)
    per_block = {
        "attn_norm": (D,),
        "q_proj": (D, D),
        "k_proj": (KV * D // 4, D),
        "v_proj": (KV * D // 4, D),
        "attn_out": (D, D),
        "ff_norm": (D,),
        "ff_proj": (MLP, D),
        "up_proj": (MLP, D),
        "ff_out": (D, MLP),
    }
    for i in range(LAYERS):
        shapes |= {f"model.transformer.blocks.{i}.{name}.weight": shape for name, shape in per_block.items()}
    return {name: torch.randn(*shape, generator=gen).to(torch.bfloat16) for name, shape in shapes.items()}


def write_llada_dir(path: Path, weights: dict[str, torch.Tensor], **overrides: object) -> Path:
    """A LLaDA-format directory: public config keys, sharded safetensors with an index, LLaDA's remote code
    files (which raise if imported, so a test fails if the loader ever runs them), and a tokenizer."""
    path.mkdir(parents=True, exist_ok=True)
    config = {**LLADA_CONFIG, **overrides}
    (path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not ...}))
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, shard_names in shards.items():
        save_file({n: weights[n].contiguous() for n in shard_names}, str(path / file), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(shard_names, file)
    index = {"metadata": {}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    for module in ("modeling_llada.py", "configuration_llada.py"):
        (path / module).write_text('raise RuntimeError("LLaDA remote code must never be imported")\n')
    build_tiny_tokenizer().save_pretrained(path)
    return path


def tiny_policy(seed: int = 0) -> Policy:
    return load_policy(ModelConfig(path="tiny", tiny=TINY), seed=seed)


def ids(seed: int, shape: tuple[int, int]) -> torch.Tensor:
    return torch.randint(9, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("saved")
    save_policy(tiny_policy(seed=7), path)
    return path


def copy_of(source: Path, target: Path) -> Path:
    """A copy edited by hand (the tests below break it on purpose), so without the manifest of checksums."""
    shutil.copytree(source, target)
    (target / "manifest.json").unlink()
    return target


def test_tiny_policy_has_the_tokenizer_ids_and_bans_mask_and_pad() -> None:
    policy = tiny_policy()
    assert (policy.mask_id, policy.eos_id, policy.pad_id) == (2, 1, 0)
    assert policy.banned_ids == (2, 0)
    assert policy.model.config.vocab_size == len(policy.tokenizer) == VOCAB
    assert policy.model.dtype == torch.float32 and policy.logits_shift is False
    same, other = tiny_policy(), tiny_policy(seed=1)
    weight = policy.model.get_input_embeddings().weight
    assert torch.equal(weight, same.model.get_input_embeddings().weight)
    assert not torch.equal(weight, other.model.get_input_embeddings().weight)


def test_dtype_auto_is_bfloat16_on_cuda_and_float32_on_cpu() -> None:
    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("float16", "cpu") == torch.float16
    policy = load_policy(ModelConfig(path="tiny", tiny=TINY, dtype="bfloat16"))
    assert policy.model.dtype == torch.bfloat16
    assert load_policy(ModelConfig(path="tiny", tiny=TINY), dtype=torch.float16).model.dtype == torch.float16


def test_saved_policy_reloads_with_identical_logits(saved_dir: Path) -> None:
    original, loaded = tiny_policy(seed=7), load_policy(ModelConfig(path=str(saved_dir)))
    assert isinstance(loaded.model, LLaDAModelLM)
    x = ids(0, (2, 9))
    assert torch.equal(original.model(x).logits, loaded.model(x).logits)
    assert (loaded.mask_id, loaded.eos_id, loaded.pad_id, loaded.banned_ids) == (2, 1, 0, (2, 0))
    tokenizer = AutoTokenizer.from_pretrained(saved_dir, local_files_only=True)
    assert tokenizer("<answer>3*5</answer>")["input_ids"] == [3, 28, 19, 30, 4]


def test_a_damaged_copy_of_a_saved_policy_is_refused(saved_dir: Path, tmp_path: Path) -> None:
    """A flipped byte in the weights' payload would load silently; the manifest save_policy writes catches it."""
    path = Path(shutil.copytree(saved_dir, tmp_path / "copy"))
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-5] ^= 0x01
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors is corrupt .*delete manifest.json"):
        load_policy(ModelConfig(path=str(path)))


def test_public_llada_directory_loads_into_the_native_class(tmp_path: Path) -> None:
    weights = public_llada_weights()
    path = write_llada_dir(tmp_path / "llada", weights)
    for trust in (False, True):  # the native class is used either way; LLaDA's own files are never run
        policy = load_policy(ModelConfig(path=str(path), trust_remote_code=trust))
        assert type(policy.model) is LLaDAModelLM
        state = policy.model.state_dict()
        assert set(state) == set(weights)
        assert all(torch.equal(state[name], weights[name].float()) for name in weights)
    assert policy.model.config.n_kv_heads == KV and policy.model.config.rope_theta == 500000.0
    assert policy.model.get_input_embeddings().num_embeddings == EMB
    assert policy.model(ids(1, (2, 6))).logits.shape == (2, 6, VOCAB)
    assert (policy.mask_id, policy.eos_id, policy.pad_id, policy.banned_ids) == (2, 1, 1, (2,))
    # The directory's auto_map points at LLaDA's modeling_llada.py; a saved copy carries (and names) ours instead.
    assert policy.model.config.to_dict()["auto_map"] == AUTO_MAP


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"alibi": True, "rope": False}, "alibi = True"),
        ({"block_type": "sequential"}, "block_type = 'sequential'"),
        ({"layer_norm_type": "default"}, "layer_norm_type"),
        ({"weight_tying": ...}, "lacks weight_tying"),
        ({"n_heads": 5}, "invalid LLaDA config.json"),
    ],
)
def test_unsupported_llada_settings_are_refused(tmp_path: Path, overrides: dict, message: str) -> None:
    path = write_llada_dir(tmp_path / "llada", public_llada_weights(), **overrides)
    with pytest.raises(CheckpointError, match=message) as err:
        load_policy(ModelConfig(path=str(path)))
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("index_text", "message"),
    [
        ('{"weight_map": {', "model.safetensors.index.json is not valid JSON"),
        ("[]", "model.safetensors.index.json has no weight_map object"),
    ],
)
def test_damaged_shard_index_is_named(tmp_path: Path, index_text: str, message: str) -> None:
    path = write_llada_dir(tmp_path / "llada", public_llada_weights())
    (path / "model.safetensors.index.json").write_text(index_text)
    with pytest.raises(CheckpointError, match=rf"model.path {path}: {message}") as err:
        load_policy(ModelConfig(path=str(path)))
    assert "\n" not in str(err.value)


def test_llada_directory_with_a_missing_tensor_is_refused(tmp_path: Path) -> None:
    weights = public_llada_weights()
    del weights["model.transformer.blocks.1.up_proj.weight"]
    path = write_llada_dir(tmp_path / "llada", weights)
    with pytest.raises(CheckpointError, match=r"1 missing weight tensor\(s\), e.g. .*blocks.1.up_proj"):
        load_policy(ModelConfig(path=str(path)))


@pytest.fixture(scope="module")
def toy_remote_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    path = tmp_path_factory.mktemp("toy_remote")
    return path, write_toy_remote_dir(path)


def test_remote_code_needs_trust_remote_code(toy_remote_dir: tuple[Path, torch.nn.Module]) -> None:
    path, reference = toy_remote_dir
    with pytest.raises(CheckpointError, match=r"auto_map.*set model.trust_remote_code=true") as err:
        load_policy(ModelConfig(path=str(path)))
    assert str(path) in str(err.value)
    policy = load_policy(ModelConfig(path=str(path), trust_remote_code=True, logits_shift=True))
    assert type(policy.model).__name__ == "ToyModel"
    x = ids(2, (2, 7))
    assert torch.equal(policy.model(x).logits, reference(x).logits)
    # No mask id in the config: the tokenizer's is used. Config EOS/pad come first.
    assert (policy.mask_id, policy.eos_id, policy.pad_id, policy.logits_shift) == (2, 1, 0, True)


def test_logits_shift_realigns_dream_style_outputs(toy_remote_dir: tuple[Path, torch.nn.Module]) -> None:
    path, reference = toy_remote_dir
    policy = load_policy(ModelConfig(path=str(path), trust_remote_code=True, logits_shift=True))
    x = ids(3, (2, 7))
    raw = reference(x).logits
    shifted = mask_predictor_logits(policy, x)
    assert torch.equal(shifted[:, 1:], raw[:, :-1]) and torch.equal(shifted[:, 0], raw[:, 0])
    assert torch.equal(mask_predictor_logits(policy, x, logits_shift=False), raw)
    assert torch.equal(mask_predictor_logits(policy.model, x), raw)  # a bare model is not shifted


def test_padded_rows_match_unpadded_ones_for_any_model(toy_remote_dir: tuple[Path, torch.nn.Module]) -> None:
    """Non-native models get a (B, 1, S, S) key mask and positions that count real tokens."""
    path, _ = toy_remote_dir
    toy = load_policy(ModelConfig(path=str(path), trust_remote_code=True))
    native = tiny_policy()
    row = ids(4, (1, 6))
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), row], dim=1)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])
    for policy in (toy, native):
        plain = mask_predictor_logits(policy, row)
        masked = mask_predictor_logits(policy, padded, mask)
        assert torch.allclose(masked[:, 2:], plain, atol=1e-5)
        assert torch.isfinite(masked).all()
        assert not torch.allclose(mask_predictor_logits(policy, padded)[:, 2:], plain, atol=1e-3)


def test_pickle_weights_are_refused_unless_allowed(saved_dir: Path, tmp_path: Path) -> None:
    path = copy_of(saved_dir, tmp_path / "pickle")
    state = load_policy(ModelConfig(path=str(saved_dir))).model.state_dict()
    (path / "model.safetensors").unlink()
    torch.save(state, path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin.*arbitrary code.*model.allow_pickle=true"):
        load_policy(ModelConfig(path=str(path)))
    loaded = load_policy(ModelConfig(path=str(path), allow_pickle=True))
    x = ids(5, (1, 8))
    assert torch.equal(loaded.model(x).logits, load_policy(ModelConfig(path=str(saved_dir))).model(x).logits)
    (path / "pytorch_model.bin").rename(path / "weights.pt")
    with pytest.raises(CheckpointError, match=r"weights.pt"):
        load_policy(ModelConfig(path=str(path)))
    assert torch.equal(
        load_policy(ModelConfig(path=str(path), allow_pickle=True)).model(x).logits, loaded.model(x).logits
    )


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=rf"model.path {tmp_path / 'absent'}: directory not found"):
        load_policy(ModelConfig(path=str(tmp_path / "absent")))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("drop_config", "config.json is missing"),
        ("bad_json", "config.json is not valid JSON"),
        ("json_list", "config.json must hold a JSON object"),
        ("drop_weights", "no weights"),
        ("drop_tokenizer", "no tokenizer"),
        ("unknown_type", "model_type 'not_a_model' is not an architecture"),
        ("no_mask", "no mask token id"),
        ("mask_out_of_range", "mask token id 500 is outside"),
        ("garbage_weights", "cannot load the model: Error while deserializing header"),
        ("truncated_weights", "cannot load the model: Error while deserializing header"),
        (
            "wrong_shape",
            r"6 wrongly shaped weight tensor\(s\), e.g. model.transformer.blocks.0.ff_out.weight "
            r"\(\(32, 48\) in the checkpoint, \(32, 96\) from config.json\)",
        ),
    ],
)
def test_broken_directories_name_the_path_and_the_problem(
    saved_dir: Path, tmp_path: Path, damage: str, message: str
) -> None:
    path = copy_of(saved_dir, tmp_path / "broken")
    config = json.loads((path / "config.json").read_text())
    if damage == "drop_config":
        (path / "config.json").unlink()
    elif damage == "bad_json":
        (path / "config.json").write_text("{ not json")
    elif damage == "json_list":
        (path / "config.json").write_text("[1, 2]")
    elif damage == "drop_weights":
        (path / "model.safetensors").unlink()
    elif damage == "drop_tokenizer":
        (path / "tokenizer.json").unlink()
        (path / "tokenizer_config.json").unlink()
    elif damage == "unknown_type":  # and no code of its own (a saved directory's auto_map names ours)
        config.pop("auto_map")
        (path / "config.json").write_text(json.dumps({**config, "model_type": "not_a_model"}))
    elif damage == "no_mask":
        (path / "config.json").write_text(json.dumps({**config, "mask_token_id": None}))
        tok_config = json.loads((path / "tokenizer_config.json").read_text())
        del tok_config["mask_token"]
        (path / "tokenizer_config.json").write_text(json.dumps(tok_config))
    elif damage == "mask_out_of_range":
        (path / "config.json").write_text(json.dumps({**config, "mask_token_id": 500}))
    elif damage == "garbage_weights":
        (path / "model.safetensors").write_bytes(b"not a safetensors file" * 64)
    elif damage == "truncated_weights":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "wrong_shape":
        (path / "config.json").write_text(json.dumps({**config, "mlp_hidden_size": 2 * MLP}))
    with pytest.raises(CheckpointError, match=message) as err:
        load_policy(ModelConfig(path=str(path)))
    assert f"model.path {path}" in str(err.value)
    assert "\n" not in str(err.value)


def test_registered_transformers_types_load_through_the_auto_classes(tmp_path: Path) -> None:
    """A plain HF directory (here BERT, whose output head is tied to its embeddings) needs no flag."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    reference = BertForMaskedLM(config).eval()
    reference.save_pretrained(tmp_path)
    build_tiny_tokenizer().save_pretrained(tmp_path)
    policy = load_policy(ModelConfig(path=str(tmp_path)))
    assert type(policy.model) is BertForMaskedLM
    x = ids(6, (2, 7))
    assert torch.allclose(policy.model(x).logits, reference(x).logits, atol=1e-6)
    assert policy.mask_id == 2


def test_unreadable_pickle_is_named(saved_dir: Path, tmp_path: Path) -> None:
    path = copy_of(saved_dir, tmp_path / "corrupt")
    (path / "model.safetensors").unlink()
    (path / "weights.pt").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match=rf"model.path {path}: cannot read weights.pt"):
        load_policy(ModelConfig(path=str(path), allow_pickle=True))
