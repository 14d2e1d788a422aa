"""Contract commands of the supporter: `esvr supporter reward`, `esvr supporter pairs`, `esvr supporter rollouts`
(heavy imports inside the commands)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="The supporter's value reward, DPO pairs and rollouts (docs/supporter.md).",
                  no_args_is_help=True, add_completion=False)


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _params(params_file: Path):  # noqa: ANN202 - the validated Params
    from tasks.common import paths
    from tasks.common.config import ConfigError, load_params

    try:
        return load_params(paths.ROOT / params_file)
    except ConfigError as e:
        _fail(str(e))


@app.command()
def reward(
    input: Path = typer.Option(..., "--input", help="Scored candidates JSONL: {state_id, candidate_id, "
                               "target_values, continuations: [[{value_probs: {category: prob}}, ...], ...]}."),
    out: Path = typer.Option(..., "--out", help="Output JSONL: the same rows plus `n` and `reward`."),
    gamma: float = typer.Option(None, "--gamma", help="Discount (default: params supporter.reward.gamma)."),
    horizon: int = typer.Option(None, "--horizon", help="Later seeker turns counted, h (default: params "
                                "supporter.rollouts.horizon)."),
    threshold: float = typer.Option(None, "--threshold", help="Presence cut for every category (default: params "
                                    "supporter.reward.threshold)."),
    kind: str = typer.Option("value", "--kind", help="value | emotion (emotion: the turns' `positivity` or "
                             "`emotion_intensity`, by params supporter.reward.emotion_signal)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Params file for the defaults."),
) -> None:
    """R = mean over continuations of sum_{k <= min(h, len)} gamma^(k-1) N_k, N_k = target values with prob >= the
    threshold in the k-th later seeker turn (a turn beyond a continuation's end counts 0)."""
    from tasks.supporter.reward import RewardInputError, reward_file

    if kind not in ("value", "emotion"):
        _fail(f"--kind must be value or emotion, got {kind!r}")
    # params only for what the flags leave open: with every flag given, no params file is read
    p = _params(params_file) if None in (gamma, horizon, threshold) or kind == "emotion" else None
    g = gamma if gamma is not None else p.supporter.reward.gamma
    h = horizon if horizon is not None else p.supporter.rollouts.horizon
    th = threshold if threshold is not None else p.supporter.reward.threshold
    if not 0.0 <= g <= 1.0 or h < 1 or not 0.0 < th <= 1.0:
        _fail(f"need 0 <= gamma <= 1, horizon >= 1, 0 < threshold <= 1 (got {g}, {h}, {th})")
    signal = p.supporter.reward.emotion_signal if p is not None else "positivity"
    try:
        summary = reward_file(input, out, g, h, th, kind, signal)  # type: ignore[arg-type]
    except RewardInputError as e:
        _fail(str(e))
    typer.echo(json.dumps({**summary, "gamma": g, "horizon": h, "threshold": th, "kind": kind}))


@app.command()
def pairs(
    input: Path = typer.Option(..., "--input", help="Rewarded candidates JSONL (the output of `reward`)."),
    out: Path = typer.Option(..., "--out", help="Output JSONL: {state_id, chosen, rejected, delta} per pair."),
    t_diff: float = typer.Option(None, "--t-diff", help="Reward gap a pair must exceed (default: params "
                                 "supporter.pairs.t_diff)."),
    consistent: bool = typer.Option(False, "--consistent", help="Also drop pairs that some continuation ranks the "
                                    "other way (needs `n`; gamma/horizon from params)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Params file for the defaults."),
) -> None:
    """Every (chosen, rejected) of one state with reward(chosen) - reward(rejected) > T_diff."""
    from tasks.supporter.pairs import pairs_file
    from tasks.supporter.reward import RewardInputError

    p = _params(params_file) if t_diff is None or consistent else None
    t = t_diff if t_diff is not None else p.supporter.pairs.t_diff
    try:
        summary = pairs_file(input, out, t, consistent, *((p.supporter.reward.gamma, p.supporter.rollouts.horizon)
                                                          if p is not None else (1.0, 1)))
    except RewardInputError as e:
        _fail(str(e))
    typer.echo(json.dumps({**summary, "t_diff": t, "consistent": consistent}))


@app.command()
def rollouts(
    out: Path = typer.Option(None, "--out", help="Output folder for states/candidates.jsonl (default data/rollouts)."),
    sim_dir: Path = typer.Option(None, "--sim-dir", help="Simulated dialogues folder (default data/simulated)."),
    persona_file: Path = typer.Option(None, help="Personas JSONL (default data/personas/train.jsonl)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Params file (relative to the root)."),
) -> None:
    """Run the rollouts stage's flow on its own (no DVC); resumable: re-run after a crash."""
    from flows.rollouts import rollouts_flow

    out_dir = out.resolve() if out else None
    report = rollouts_flow(str(params_file), out_dir=str(out_dir) if out_dir else None,
                           sim_dir=str(sim_dir.resolve()) if sim_dir else None,
                           persona_file=str(persona_file.resolve()) if persona_file else None)
    typer.echo(json.dumps(report, sort_keys=True, default=str))
