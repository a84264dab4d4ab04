"""A sweep's ``report.png``: every job's train and validation loss curves side by side."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from olmo_exp.base.files import atomic_path
from olmo_exp.runtime.console import TRAIN_LOSS, VAL_LOSS
from olmo_exp.runtime.plots import curve

if TYPE_CHECKING:
    from olmo_exp.sweep.report import JobData


def write_plot(data: list[JobData], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(13, 5.5), sharex=True)
    unit = "tokens" if all(d.curve_tokens_per_step for d in data if d.metrics) else "steps"
    for i, d in enumerate(data):
        label = f"#{d.row.job} {d.row.overrides or '(no overrides)'}"
        if d.row.status != "finished":
            label += f" [{d.row.status}]"
        color = f"C{i % 10}"
        x, y = curve(d.metrics, TRAIN_LOSS, d.curve_tokens_per_step)
        ax_train.plot(x, y, color=color, label=label, linewidth=1.2)
        x, y = curve(d.metrics, VAL_LOSS, d.curve_tokens_per_step)
        ax_val.plot(x, y, color=color, label=label, marker="o", markersize=4)
    for ax, name in ((ax_train, "train CE loss"), (ax_val, "validation CE loss")):
        ax.set_xlabel(f"{unit} seen")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    handles, labels = ax_train.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=1 if len(labels) > 4 else 2,
               fontsize=9, frameon=False)
    fig.suptitle(textwrap.fill(title, width=160), fontsize=9)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * math.ceil(len(labels) / (1 if len(labels) > 4 else 2)),
                           1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
