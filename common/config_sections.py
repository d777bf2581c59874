"""The sections of the config schema (common/config.py composes them into `Config`).

Every field has a default that runs on a 2-core CPU machine and a description; validators state the
rule they enforce as `field = value: rule`, which the loader turns into one line naming the field path.
No float field of any section takes NaN or infinity (`Section`): none of them means anything with either, and a
NaN passes every `gt`/`lt` bound, so it would otherwise reach torch or a timer unnoticed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.errors import brief
from common.task_names import check_task_name

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


def _yaml_off(value: object) -> object:
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
        return _yaml_off(value)

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


class RewardPluginConfig(Section):
    """One reward plugin and its weight in the combined reward."""

    name: str = Field(
        ..., description="Registered name, or a dotted path `package.module:function` to an object marked with @reward."
    )
    weight: float = Field(1.0, description="Weight in the combined reward.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the plugin.")


class RewardsConfig(Section):
    """The reward-service pool and the plugins it calls."""

    plugins: list[RewardPluginConfig] | None = Field(
        None, min_length=1, description="Reward plugins combined by weight; none = the reward of data.task."
    )
    scheme: Literal["d1", "agrpo"] = Field("d1", description="Reward scheme of the built-in task rewards.")
    pool_size: int = Field(1, gt=0, description="RewardService actors.")
    timeout_s: float = Field(5.0, gt=0.0, description="Per-call timeout; a call past it scores 0 with `timeout`.")
    startup_timeout_s: float = Field(
        60.0,
        gt=0.0,
        description="Time the driver's start-up check, and then each sandbox child, may take to import and build "
        "the plugins (e.g. load a reward model).",
    )
    modules: list[str] = Field(
        default_factory=list, description="Modules imported at start so their @reward decorators register."
    )
    error_window: int = Field(
        5, gt=0, description="Steps over which each plugin's error rate is measured for the failing-plugin warning."
    )
    error_warn_rate: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Warn, naming the plugin and its last error, when at least this fraction of a plugin's calls "
        "over the last `error_window` steps failed (error or timeout).",
    )
    stop_when_all_fail: bool = Field(
        True,
        description="Stop the run, before its update, when every sample of a step failed to score; false trains "
        "on (every failed sample scores 0) after a warning.",
    )
    memory_limit_mb: int = Field(
        8192,
        ge=0,
        description="Address-space limit in MB of each reward sandbox child; an allocation past it fails with "
        "`memory limit`. 0 = none (for plugins that use CUDA, which reserves far more address space than it uses).",
    )
    grade_timeout_s: float = Field(
        1.0,
        gt=0.0,
        description="Time limit per graded item (held-out evaluation, success rate, `agrpo score`); an item past "
        "it is graded wrong and counted as a grading timeout.",
    )


class DataConfig(Section):
    """Where prompts come from and how they are rendered."""

    task: str = Field(
        "countdown",
        description="Task: a registered name (entry point group `agrpo.tasks`; built in: arithmetic, countdown, "
        "gsm8k, math, sudoku, and `generic` for your own prompts and reward plugins) or a module path "
        "`package.module`; decides the fields, prompts, reward and grader.",
    )
    path: str | None = Field(None, description="Local data file or `save_to_disk` directory; none = generated.")
    format: Literal["auto", "jsonl", "json", "csv", "parquet", "hf_disk"] = Field(
        "auto", description="File format; `auto` picks it from the suffix."
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Map of our field names to the file's column names; a dotted name reads a nested column, e.g. "
        "`ground_truth: reward_model.ground_truth` (verl's parquet files).",
    )
    train_split: str = Field(
        "train",
        description="Name of the training split: replaces `{split}` in data.path, and picks the split of a "
        "`save_to_disk` DatasetDict.",
    )
    eval_split: str = Field(
        "eval",
        description="Name of the held-out split, as train_split (GSM8K and MATH on the Hugging Face hub call it `test`).",
    )
    on_malformed: Literal["skip", "fail"] = Field(
        "skip", description="A malformed row is reported with file and line, then skipped or fatal."
    )
    template: Literal["d1", "agrpo", "plain"] = Field("plain", description="Prompt template.")
    num_train: int = Field(20000, gt=0, le=MAX_ITEMS, description="Generated training items.")
    num_eval: int = Field(
        2000,
        gt=0,
        le=MAX_ITEMS,
        description="Held-out items: generated, or the first rows of the shuffled file when data.path has no {split}.",
    )
    generator: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the task generator (e.g. numbers, blanks)."
    )

    @field_validator("task")
    @classmethod
    def _registered(cls, value: str) -> str:
        return check_task_name(value)

    @model_validator(mode="after")
    def _split_names(self) -> DataConfig:
        for name in ("train_split", "eval_split"):  # a file name and a DatasetDict key: no path separator, no padding
            value = getattr(self, name)
            if not value or value != value.strip() or "/" in value or "{" in value:
                raise ValueError(f"{name} = {value!r}: must be a non-empty name without '/', '{{' or padding")
        if self.train_split == self.eval_split:
            raise ValueError(f"eval_split = {self.eval_split!r}: must differ from train_split")
        return self


class ClusterConfig(Section):
    """Where the actors run."""

    address: str | None = Field(
        None,
        description="Ray address to connect to (`host:port`, `ray://host:port`, or `auto` for the cluster `ray start` "
        "runs on this machine); none = the job's cluster under `ray job submit`, otherwise a new local cluster.",
    )
    namespace: str = Field("agrpo", description="Ray namespace of the run's named actors (one run per namespace).")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of a local cluster started by the driver (none = all).")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of a local cluster started by the driver (none = all).")
    gpus_per_rollout_worker: float = Field(0.0, ge=0.0, description="GPUs per rollout worker (0 = CPU).")
    gpus_per_learner: float = Field(0.0, ge=0.0, description="GPUs per learner rank (0 = CPU).")
    cpus_per_rollout_worker: float = Field(0.5, gt=0.0, description="CPUs reserved per rollout worker.")
    cpus_per_learner: float = Field(0.5, gt=0.0, description="CPUs reserved per learner rank.")
    cpus_per_reward_actor: float = Field(0.25, gt=0.0, description="CPUs reserved per reward actor.")
    object_store_memory: int = Field(
        200 * 1024**2, gt=0, description="Object store bytes of a local cluster started by the driver."
    )
    dashboard: bool = Field(
        True,
        description="Start Ray's dashboard with a local cluster and print its URL; it also writes the service-discovery "
        "file Prometheus reads. False: neither (the metrics endpoint is still printed).",
    )
    dashboard_host: str = Field("127.0.0.1", description="Dashboard bind address of a local cluster.")
    weight_sync_bucket_mb: float = Field(64.0, gt=0.0, description="Bucket size of the weight broadcast.")


class CheckpointConfig(Section):
    """When and where checkpoints are written, and whether to resume."""

    every_steps: int = Field(50, gt=0, description="Write a checkpoint every n optimizer steps (and at the end).")
    keep_last: int = Field(2, gt=0, description="Checkpoints kept; older ones are deleted.")
    stop_at: int | None = Field(
        None,
        gt=0,
        description="Stop after the checkpoint of this step (a planned preemption); resume continues the run.",
    )
    resume: str = Field("never", description="`never`, `auto` (latest in the run directory) or a checkpoint directory.")
    overwrite: bool = Field(
        False,
        description="Start a new run in a run_dir that already holds one, deleting its metrics, plots, summary, "
        "checkpoints and tracker files first (without it, such a run_dir is refused unless resuming).",
    )


class MetricsConfig(Section):
    """Metrics files and plots."""

    log_every: int = Field(1, gt=0, description="Write a metrics.jsonl line every n steps.")
    collapse_window: int = Field(
        20, ge=0, description="Steps averaged by the collapse guard on the training success rate; 0 disables it."
    )
    collapse_ratio: float = Field(
        0.3,
        ge=0.0,
        lt=1.0,
        description="Stop when the windowed success rate falls below this fraction of its best (once that is >= 0.05).",
    )
    plots: bool = Field(True, description="Write PNG plots at the end of the run.")
    run_name: str | None = Field(
        None,
        description="Name of the run: the `run` tag of every agrpo_* metric and the run's name in the trackers; "
        "none = the run directory's name.",
    )
    loggers: list[Literal["jsonl", "tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["jsonl"],
        description="Where the driver logs each step's metrics line and the completion tables; jsonl (metrics.jsonl, "
        "completions.jsonl) is always written. tensorboard, wandb and mlflow need `pip install 'agrpo[trackers]'`.",
    )
    completions_every: int = Field(
        10,
        ge=0,
        description="Log a table of sample completions (prompt, completion, reward per plugin, advantage) every n "
        "steps; 0 = never.",
    )
    completions_rows: int = Field(16, gt=0, description="Completions per table: whole groups of the step, in order.")
    project: str = Field("agrpo", description="wandb project and MLflow experiment the run is logged to.")
    wandb_mode: Literal["auto", "online", "offline"] = Field(
        "auto",
        description="auto = WANDB_MODE if set, else online when a wandb API key is configured and the server answers "
        "within seconds, else offline (files in run_dir/wandb; `wandb sync` uploads them).",
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; none = a local file store in run_dir/mlruns."
    )


class EvalConfig(Section):
    """Held-out accuracy during training: sampler settings that differ from training, cadence, grading protocol."""

    every_steps: int = Field(25, ge=0, description="Evaluate every n steps (0: only the base and the end).")
    num_items: int | None = Field(
        None,
        gt=0,
        description="Held-out items per evaluation; none = the whole held-out split. More than the split holds "
        "(data.num_eval when generated) is an error.",
    )
    remasking: REMASKING = Field(
        "low_confidence", description="Remasking at evaluation (the d1 protocol uses low_confidence)."
    )
    temperature: float = Field(0.0, ge=0.0, description="Temperature at evaluation; 0 is greedy (d1 protocol).")
    steps: int | None = Field(None, gt=0, description="Sampling steps at evaluation; none = sampler.steps.")
    kv_cache: Literal["auto", "off", "prefix", "dual"] | None = Field(
        None, description="KV cache at evaluation; none = sampler.kv_cache (`auto` evaluates full attention exactly)."
    )
    unmask: Literal["fixed", "threshold"] | None = Field(
        None, description="Unmasking at evaluation (`fixed` or `threshold`); none = sampler.unmask."
    )
    confidence_dtype: CONFIDENCE_DTYPES = Field(
        "model",
        description="Precision of the low_confidence ranking at evaluation; `model` with tie_break `reference` "
        "reproduces LLaDA's generate.py (it ranks by a softmax in the model's dtype).",
    )
    tie_break: TIE_BREAKS = Field(
        "reference", description="Among exactly tied position scores at evaluation (see sampler.tie_break)."
    )
    batch_size: int = Field(256, gt=0, description="Sequences per evaluation forward pass.")
    protocol: Literal["agrpo", "d1"] = Field(
        "agrpo",
        description="Grading protocol: `agrpo` (our graders) or `d1` (decision for decision d1's parse_and_get_acc.py).",
    )

    @field_validator("kv_cache", mode="before")
    @classmethod
    def _off_is_a_word(cls, value: object) -> object:
        return _yaml_off(value)

    def sampler(self, train: SamplerConfig) -> SamplerConfig:
        """The training sampler with the evaluation overrides applied (validated again)."""
        values = train.model_dump()
        values.update(
            remasking=self.remasking,
            temperature=self.temperature,
            batch_size=self.batch_size,
            confidence_dtype=self.confidence_dtype,
            tie_break=self.tie_break,
        )
        for name in ("steps", "kv_cache", "unmask"):
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        return SamplerConfig.model_validate(values)


class SFTConfig(Section):
    """Masked-diffusion supervised fine-tuning of the base policy (`agrpo sft`), LLaDA's SFT objective."""

    steps: int = Field(1000, gt=0, description="Optimizer steps.")
    lr: float = Field(1e-3, gt=0.0, description=f"Peak AdamW learning rate (at most {MAX_LR:g}).")
    batch_size: int = Field(64, gt=0, description="(prompt, completion) pairs per optimizer step.")
    warmup_ratio: float = Field(
        0.05, ge=0.0, lt=1.0, description="Fraction of steps of linear warmup before cosine decay."
    )
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0.0, description="Global gradient-norm clipping.")
    wrong_fraction: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Share of training examples whose completion is a plausible wrong answer (rewards/perturb.py), "
        "so the base model's pass@G is far above its pass@1 and RL mainly sharpens.",
    )
    num_items: int | None = Field(
        None, gt=0, description="Training items used; none = the whole train split (data.num_train when generated)."
    )
    output: str | None = Field(
        None,
        description="Directory of the fine-tuned policy; none = `base-<task>` next to run_dir (runs/base-countdown).",
    )

    @field_validator("lr")
    @classmethod
    def _lr(cls, value: float) -> float:
        return check_lr("lr", value)
