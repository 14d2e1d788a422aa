"""Figures of the supporter stages, logged as MLflow artifacts (matplotlib, headless Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # no display on the workers; must precede pyplot
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 3.5), dpi=100)


def histogram(values: Sequence[float], title: str, xlabel: str, bins: int = 30) -> Any:
    """A histogram figure (an empty one says so in its title)."""
    fig, ax = _figure()
    if len(values):
        ax.hist(list(values), bins=bins, color="#4477aa")
    ax.set_title(title if len(values) else f"{title} (no data)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    fig.tight_layout()
    return fig


def bars(values: Mapping[str, float], title: str, ylabel: str) -> Any:
    fig, ax = _figure()
    ax.bar(list(values), list(values.values()), color="#228833")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def log_figure(fig: Any, name: str) -> None:
    """Log to the active MLflow run under plots/ and free the figure."""
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(fig, f"plots/{name}")
    plt.close(fig)
