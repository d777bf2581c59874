"""The sections of the config schema about the run around the model: the data and rewards it reads, the
cluster it runs on, what it writes (checkpoints, metrics), how it is evaluated, and SFT of its base model.

The sections of the model and its training (model, sampler, algorithm, learner) are in common/config_sections.py,
with `Section`, the base whose rules (unknown keys are errors, floats are finite) every section here follows too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from common.config_sections import (
    CONFIDENCE_DTYPES,
    MAX_ITEMS,
    MAX_LR,
    REMASKING,
    TIE_BREAKS,
    SamplerConfig,
    Section,
    check_lr,
    yaml_off,
)
from common.task_names import check_task_name


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
        return yaml_off(value)

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
