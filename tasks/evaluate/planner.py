"""A PPDPP-style strategy planner: a classifier trained on ESConv's supporter strategy labels picks the strategy of
the next supporter turn; the LLM then writes a reply with that strategy (tasks/evaluate/policy.py).

PPDPP (Deng et al., 2024) fine-tunes RoBERTa as the planner and then tunes it with RL against a simulated critic;
we keep its first, supervised stage, with TF-IDF features of the last turns and multinomial logistic regression —
trained in seconds on CPU from ESConv *train*, scored on ESConv *valid* against the majority strategy (the
accuracy and macro-F1 are logged with the evaluation). Features: the last `context_turns` turns, each prefixed by
its speaker, so "seeker asked a question" and "supporter just asked" are different tokens.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tasks.domain.strategies import STRATEGIES

log = logging.getLogger(__name__)


def context_text(history: list[tuple[str, str]], context_turns: int) -> str:
    return " || ".join(f"{role}: {text}" for role, text in history[-context_turns:])


def examples(dialogues: list[dict[str, Any]], context_turns: int) -> tuple[list[str], list[str]]:
    """(context text, strategy) for every labelled supporter turn that has at least one turn before it."""
    xs, ys = [], []
    for d in dialogues:
        history: list[tuple[str, str]] = []
        for t in d["turns"]:
            if t["role"] == "supporter" and t.get("strategy") and history:
                xs.append(context_text(history, context_turns))
                ys.append(t["strategy"])
            history.append((t["role"], t["text"]))
    return xs, ys


@dataclass
class StrategyPlanner:
    vectorizer: Any
    model: Any
    context_turns: int

    def predict(self, history: list[tuple[str, str]]) -> str:
        return str(self.model.predict(self.vectorizer.transform([context_text(history, self.context_turns)]))[0])


def fit(train: list[dict[str, Any]], valid: list[dict[str, Any]], context_turns: int, max_features: int, c: float,
        seed: int) -> tuple[StrategyPlanner, dict[str, float]]:
    """Train on `train` dialogues (ESConv, tasks/evaluate/human.py), report on `valid`."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    xs, ys = examples(train, context_turns)
    if len(set(ys)) < 2:
        raise ValueError(f"planner: {len(ys)} labelled supporter turns with {len(set(ys))} strategies; need >= 2")
    vec = TfidfVectorizer(max_features=max_features, ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    model = LogisticRegression(C=c, max_iter=1000, random_state=seed)
    model.fit(vec.fit_transform(xs), ys)
    vx, vy = examples(valid, context_turns)
    report: dict[str, float] = {"train_examples": float(len(xs)), "valid_examples": float(len(vy))}
    if vy:
        pred = model.predict(vec.transform(vx))
        majority = Counter(ys).most_common(1)[0][0]
        report.update(valid_accuracy=float(accuracy_score(vy, pred)),
                      valid_macro_f1=float(f1_score(vy, pred, average="macro", labels=list(STRATEGIES),
                                                    zero_division=0)),
                      majority_accuracy=float(sum(y == majority for y in vy) / len(vy)))
    log.info("strategy planner: %s", report)
    return StrategyPlanner(vec, model, context_turns), report
