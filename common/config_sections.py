"""The sections of the config schema about the model and its training: model, sampler, algorithm, rollout,
learner (common/config_run.py holds those about the run around it; common/config.py composes both into `Config`).

Every field has a default that runs on a 2-core CPU machine and a description; validators state the
rule they enforce as `field = value: rule`, which the loader turns into one line naming the field path.
No float field of any section takes NaN or infinity (`Section`): none of them means anything with either, and a
NaN passes every `gt`/`lt` bound, so it would otherwise reach torch or a timer unnoticed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.errors import brief

MAX_ITEMS = 1_000_000
"""Most items a split may have: a million generated items take minutes and gigabytes; more belongs in a file."""

MAX_LR = 1.0
"""An AdamW step moves every weight by about lr, so a learning rate above 1 destroys the model in one step."""


class Section(BaseModel):
    """Base of every section: unknown keys are errors, assignments are validated, floats are finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def check_lr(name: str, value: float) -> float:
    """A learning rate in (0, MAX_LR]; the bound's reason goes into the message."""
    if value > MAX_LR:
        raise ValueError(
            f"{name} = {value:g}: must be at most {MAX_LR:g} (an AdamW step moves each weight by about lr; "
            "RL fine-tuning uses 1e-6 to 1e-3)"
        )
    return value


class TinyModelConfig(Section):
    """Shape of the built-in LLaDA-architecture model used when `model.path` is `tiny`."""

    d_model: int = Field(128, gt=0, description="Hidden size.")
    n_layers: int = Field(4, gt=0, description="Number of transformer blocks.")
    n_heads: int = Field(4, gt=0, description="Attention heads.")
    n_kv_heads: int = Field(4, gt=0, description="Key/value heads (grouped-query attention when < n_heads).")
    mlp_hidden_size: int = Field(384, gt=0, description="SwiGLU hidden size.")
    max_sequence_length: int = Field(256, gt=0, description="Longest prompt + completion the model accepts.")
    attention: Literal["full", "block_causal"] = Field(
        "full",
        description="`full`: a bidirectional mask predictor (LLaDA); `block_causal`: a block-diffusion model, "
        "bidirectional inside blocks of block_size tokens and causal across them (SDAR-style; exact KV cache).",
    )
    block_size: int = Field(
        4, gt=0, description="Attention block size of a block_causal model (sampler.block_length must equal it)."
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model = {self.d_model}: must be divisible by n_heads = {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads = {self.n_kv_heads}: must divide n_heads = {self.n_heads}")
        return self


class ModelConfig(Section):
    """Which mask predictor to train and how to load it."""

    path: str = Field(
        "tiny",
        description="`tiny` for the built-in model, or a local checkpoint directory (HF format or LLaDA format).",
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="Shape of the built-in model.")
    trust_remote_code: bool = Field(
        False, description="Allow a checkpoint directory's own modeling code (e.g. Dream) to be imported."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Parameter dtype; `auto` is bfloat16 on GPU and float32 on CPU."
    )
    logits_shift: bool = Field(
        False, description="Logits at position i predict token i+1 (Dream-style models); shift them back."
    )
    build_if_missing: Literal["never", "sft"] = Field(
        "never",
        description="If model.path does not exist, build it first with `agrpo sft` (the sft section) and cache it there.",
    )
    allow_pickle: bool = Field(
        False, description="Allow loading pickle (.bin/.pt) checkpoints; unsafe, off by default."
    )


REMASKING = Literal["low_confidence", "random", "entropy", "leftmost"]
CONFIDENCE_DTYPES = Literal["model", "float32", "float64"]
TIE_BREAKS = Literal["reference", "position"]


def yaml_off(value: object) -> object:
    """YAML 1.1 reads an unquoted `off` as false, in a file and in a key=value override alike: it means `off`."""
    return "off" if value is False else value


class SamplerConfig(Section):
    """The diffusion sampler used for training rollouts (ALGORITHM.md section 1)."""

    gen_length: int = Field(32, gt=0, description="Completion length C in tokens.")
    block_length: int = Field(32, gt=0, description="Block length BL of the semi-autoregressive schedule.")
    steps: int = Field(
        16,
        gt=0,
        description="Total sampling steps N over the whole completion (unmask: fixed); threshold decoding takes "
        "as many steps as each row needs.",
    )
    temperature: float = Field(1.0, ge=0.0, description="Softmax temperature; 0 is greedy.")
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens; 0 disables top-k.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus truncation; 1.0 disables top-p.")
    remasking: REMASKING = Field(
        "random",
        description="Which positions to commit each step: `random` (training: exact gradient), `low_confidence` "
        "(evaluation), `entropy`, or `leftmost` (left to right inside the block; exact gradient too).",
    )
    unmask: Literal["fixed", "threshold"] = Field(
        "fixed",
        description="How many positions a step commits: `fixed` (LLaDA's schedule over `steps`), or `threshold` "
        "(Fast-dLLM's parallel decoding: every open position of the block whose confidence reaches `threshold`, "
        "at least one and at most `max_unmask_per_step`).",
    )
    threshold: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Confidence threshold tau of `unmask: threshold` (probability of the drawn token).",
    )
    max_unmask_per_step: int = Field(
        0, ge=0, description="Most positions one step of `unmask: threshold` commits; 0 = no cap (Fast-dLLM)."
    )
    confidence_dtype: CONFIDENCE_DTYPES = Field(
        "float64",
        description="Precision of the confidence that ranks positions (low_confidence) and meets the threshold: "
        "`model` (the logits' dtype, as LLaDA's generate.py ranks since June 2025), `float32`, or `float64`.",
    )
    tie_break: TIE_BREAKS = Field(
        "position",
        description="Among exactly tied position scores: `position` (leftmost first, the same in any batch) or "
        "`reference` (what torch.topk picks over the row's own unpadded sequence, as LLaDA's generate.py).",
    )
    batch_size: int = Field(64, gt=0, description="Sequences per sampler forward pass.")
    early_exit: bool = Field(
        True,
        description="Once a row's block is all EOS, fill the rest of its completion with EOS and stop "
        "running the model on it (saves forward passes; filled tokens carry no log-prob and no loss).",
    )
    kv_cache: Literal["auto", "off", "prefix", "dual"] = Field(
        "auto",
        description="`auto`: an exact KV cache for block-causal models (each step runs the current block only), "
        "none for full attention; `off`: every step runs the whole sequence; `prefix` / `dual` (full-attention "
        "LLaDA models): approximate caches refreshed at each block start, a step runs the block and what follows "
        "it (prefix) or the block alone (dual).",
    )
    cache_refresh_steps: int = Field(
        0,
        ge=0,
        description="`prefix` / `dual`: also refresh the cache (one full forward) every n steps of a block; "
        "0 = at block starts only.",
    )

    @field_validator("kv_cache", mode="before")
    @classmethod
    def _off_is_a_word(cls, value: object) -> object:
        return yaml_off(value)

    @model_validator(mode="after")
    def _schedule(self) -> SamplerConfig:
        if self.gen_length % self.block_length:
            raise ValueError(f"block_length = {self.block_length}: must divide gen_length = {self.gen_length}")
        blocks = self.gen_length // self.block_length
        if self.steps % blocks:
            raise ValueError(
                f"steps = {self.steps}: must be divisible by the number of blocks "
                f"(gen_length / block_length = {blocks})"
            )
        if self.steps > self.gen_length:
            raise ValueError(f"steps = {self.steps}: must be at most gen_length = {self.gen_length}")
        return self


class DiffuGRPOConfig(Section):
    """Settings of the diffu-GRPO baseline (ALGORITHM.md section 4)."""

    prompt_mask_prob: float = Field(0.15, ge=0.0, lt=1.0, description="Probability of masking each prompt token.")
    inner_iterations: int = Field(1, gt=0, description="Gradient updates per rollout batch (mu).")
    beta: float = Field(0.04, ge=0.0, description="KL coefficient of the diffu-GRPO loss.")


class AlgorithmConfig(Section):
    """The policy-gradient estimator and its variance-reduction options (ALGORITHM.md section 3)."""

    name: Literal["agrpo", "diffu_grpo"] = Field("agrpo", description="Loss: AGRPO or the diffu-GRPO baseline.")
    group_size: int = Field(8, ge=2, description="Completions G per prompt; advantages are relative to the group.")
    k: int | Literal["all"] = Field(
        4, description="Monte Carlo timesteps per trajectory; `all` sums every step 0..L_i exactly."
    )
    timestep_sampling: Literal["uniform", "low_discrepancy"] = Field(
        "low_discrepancy", description="How the k timesteps are drawn (both unbiased)."
    )
    importance_sampling: Literal["uniform", "entropy"] = Field(
        "uniform", description="Draw timesteps uniformly or in proportion to the rollout entropy (reweighted)."
    )
    clip_eps: float = Field(0.2, gt=0.0, description="PPO clipping epsilon of the per-token ratio.")
    beta: float = Field(0.0, ge=0.0, description="k3 KL coefficient against the reference (base) model.")
    scale_advantages: bool = Field(False, description="Divide advantages by the group reward std.")
    rollout_correction: Literal["none", "tis", "mask", "seq_tis", "seq_mask"] = Field(
        "none",
        description="Rollout/learner mismatch correction (AGRPO): `none` takes the recorded behaviour log-probs as "
        "the old policy; `tis` recomputes the rollout weights' exact log-probs (no gradient) as the old policy and "
        "weights each token by min(ratio, tis_cap), ratio = pi_old / pi_behaviour; `mask` weights by the ratio "
        "and drops tokens whose ratio leaves [mask_low, mask_high]; `seq_tis` / `seq_mask` use one ratio per "
        "trajectory, the geometric mean of its scored tokens' ratios.",
    )
    tis_cap: float = Field(2.0, gt=1.0, description="Upper bound of the importance weight under tis / seq_tis.")
    mask_low: float = Field(
        0.5, gt=0.0, lt=1.0, description="Lowest ratio a token keeps under mask (a trajectory under seq_mask)."
    )
    mask_high: float = Field(
        2.0, gt=1.0, description="Highest ratio a token keeps under mask (a trajectory under seq_mask)."
    )
    measure_mismatch: bool = Field(
        True,
        description="Under rollout_correction = none, still recompute the old policy (no gradient) for groups "
        "sampled with older weights, so the mismatch and drift metrics cover every token; the other modes always "
        "recompute. Costs one forward per such (trajectory, timestep) pair and keeps max_staleness weight versions "
        "on each learner rank.",
    )
    diffu_grpo: DiffuGRPOConfig = Field(default_factory=DiffuGRPOConfig, description="diffu-GRPO settings.")

    @field_validator("k", mode="before")
    @classmethod
    def _k_positive(cls, value: object) -> object:
        # Checked before pydantic tries each member of the union, which would report one error per member.
        if (isinstance(value, str) and value.strip().isdigit()) or (isinstance(value, float) and value.is_integer()):
            value = int(value)
        if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"k = {brief(value)}: must be an integer of at least 1, or `all`")

    @model_validator(mode="after")
    def _correction_applies(self) -> AlgorithmConfig:
        if self.name == "diffu_grpo" and self.rollout_correction != "none":
            raise ValueError(
                f"rollout_correction = {self.rollout_correction}: applies to agrpo only (diffu-GRPO recomputes its "
                "own old log-probs and never reads the rollout's)"
            )
        return self


class RolloutConfig(Section):
    """Rollout workers and the streaming between them and the learner."""

    num_workers: int = Field(1, gt=0, description="RolloutWorker actors.")
    max_staleness: int = Field(
        1, ge=0, description="Accept a group only if learner_version - group.weight_version <= this; 0 is on-policy."
    )


class LoraConfig(Section):
    """LoRA adapters (peft); the released recipe uses r=64, alpha=64."""

    enabled: bool = Field(False, description="Train LoRA adapters instead of all weights.")
    r: int = Field(64, gt=0, description="Adapter rank.")
    alpha: int = Field(64, gt=0, description="Adapter scaling alpha.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Adapter dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"],
        description="Module names that get adapters (LLaDA parameter names).",
    )


class LearnerConfig(Section):
    """The DeepSpeed learner group and its optimizer."""

    world_size: int = Field(1, gt=0, description="LearnerWorker ranks.")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    steps: int = Field(100, gt=0, description="Optimizer steps of the run.")
    groups_per_step: int = Field(16, gt=0, description="Prompt groups per optimizer step (global batch).")
    grad_accumulation: int = Field(1, gt=0, description="Gradient accumulation steps per optimizer step.")
    micro_batch_size: int = Field(64, gt=0, description="(trajectory, timestep) rows packed into one forward/backward.")
    lr: float = Field(2e-4, gt=0.0, description=f"Peak AdamW learning rate (at most {MAX_LR:g}).")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas (beta1, beta2), each in [0, 1).")
    warmup_ratio: float = Field(0.01, ge=0.0, lt=1.0, description="Fraction of steps of linear warmup.")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="Learning-rate schedule after warmup.")
    grad_clip: float = Field(1.0, gt=0.0, description="Global gradient-norm clipping.")
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each transformer block's activations in the backward pass instead of keeping them "
        "(less memory, about one more forward pass; on in the LLaDA-8B recipes; the model class must support it).",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapters.")

    @field_validator("lr")
    @classmethod
    def _lr(cls, value: float) -> float:
        return check_lr("lr", value)

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in value):
            raise ValueError(f"betas = {list(value)}: each must be in [0, 1) (AdamW's moment decay rates)")
        return value

    @model_validator(mode="after")
    def _divisible(self) -> LearnerConfig:
        ranks = self.world_size * self.grad_accumulation
        if self.groups_per_step % ranks:
            raise ValueError(
                f"groups_per_step = {self.groups_per_step}: must be divisible by "
                f"world_size * grad_accumulation = {ranks} (each rank takes whole groups)"
            )
        return self
