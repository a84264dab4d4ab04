"""A run's ``loss.png``: train and validation loss against tokens seen, generation steps marked."""

from __future__ import annotations

from pathlib import Path

from olmo_exp.base.files import atomic_path, read_jsonl
from olmo_exp.runtime.console import TRAIN_LOSS, VAL_LOSS


def curve(metrics: list[dict], key: str, tokens_per_step: int | None) -> tuple[list, list]:
    points = [(r["step"], r[key]) for r in metrics if key in r and "step" in r]
    scale = tokens_per_step or 1
    return [s * scale for s, _ in points], [v for _, v in points]



def plot_run(run_dir: Path, tokens_per_step: int | None) -> Path:
    """loss.png: train and validation loss against tokens, generation steps marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = read_jsonl(run_dir / "metrics.jsonl")
    fig, ax = plt.subplots(figsize=(8, 5))
    unit = "tokens" if tokens_per_step else "steps"
    x, y = curve(metrics, TRAIN_LOSS, tokens_per_step)
    ax.plot(x, y, label="train CE loss", color="C0")
    x, y = curve(metrics, VAL_LOSS, tokens_per_step)
    if x:
        ax.plot(x, y, label="validation CE loss", color="C1", marker="o")
    gen_steps = sorted({r["step"] for r in read_jsonl(run_dir / "generations.jsonl")})
    for i, step in enumerate(gen_steps):
        ax.axvline(step * (tokens_per_step or 1), color="grey", linestyle=":", linewidth=1,
                   label="generation sample" if i == 0 else None)
    ax.set_xlabel(f"{unit} seen")
    ax.set_ylabel("CE loss")
    ax.set_title(f"{run_dir.parent.name}/{run_dir.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = run_dir / "loss.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
