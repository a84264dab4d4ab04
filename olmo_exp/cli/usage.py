"""``--help`` text: Hydra's help template (``hydra.help.template`` in conf/config.yaml) filled by
the ``olmo_help`` resolver.

Nothing here is a second list to keep in sync: the groups and their options are read from Hydra's
config search path when help is asked for (a new ``conf/<group>/`` or ``+sweep=NAME`` preset shows
up by itself; the structured-config ``*_schema`` entries do not), current values come from the
composed config, and the examples are the README's own commands. Only the short list of most-used
keys below is written by hand (a test checks that each one exists).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from omegaconf import OmegaConf

from olmo_exp.base.files import CONF_DIR, readme_text
from olmo_exp.config.cluster import profile_file, user_config_dir

WIDTH = 100

# app -> (usage line, most-used keys with what they do, groups shown, README example filter)
APPS: dict[str, dict[str, Any]] = {
    "run": {
        "usage": "python run.py [group=option ...] [key=value ...]   (-m: a sweep, one job per point)",
        "about": "olmo-exp: Hydra-composed OLMo pretraining experiments on olmo-core (README.md).",
        "keys": {
            "train.max_steps": "optimizer steps (or null with train.max_tokens)",
            "train.max_tokens": "token budget: steps = ceil(tokens / tokens per step)",
            "train.global_batch_size": "sequences per step, all ranks together",
            "train.micro_batch_size": "sequences per forward/backward on one rank (null = all)",
            "train.lr": "peak learning rate (train.scheduler after train.warmup_steps)",
            "train.log_interval": "steps between console lines and metrics.jsonl records",
            "train.eval_interval": "steps between validation losses (0 = off)",
            "train.checkpoint_interval": "steps between checkpoints (the last step is always saved)",
            "train.keep_last_checkpoints": "permanent checkpoints kept (null = all)",
            "train.stop_at_step": "stop early at this step; rerun the same run dir to continue",
            "train.console": "compact: one line per step; full: olmo-core's metrics block",
            "model.n_kv_heads": "GQA: KV heads shared by the query heads (null = n_heads)",
            "model.lws.qkv_scalars": "LWS: [first, last] layer attention width scalars",
            "dist.nproc_per_node": "ranks on this machine (run.py starts them)",
            "data.sequence_length": "tokens per training sequence",
            "data.output_dir": "where prepared token shards are cached",
            "generate.interval": "steps between text samples (0 = only at the end)",
            "wandb.enabled": "log metrics to Weights & Biases too",
            "dry_run": "print the per-layer table and totals, write model_summary.json, exit",
            "hydra.run.dir": "the run directory (rerun it to resume)",
        },
        "groups": None,  # every application group, and hydra/launcher
        "examples": None,  # every README example
    },
    "data": {
        "usage": "python -m olmo_exp.data [data=option] [data.key=value ...]",
        "about": "Prepare token shards + manifest.json only (e.g. on CPU nodes); training reuses "
                 "them. Same config as run.py; only the data group is used.",
        "keys": {
            "data.source": "dump (MediaWiki XML), hf (Hugging Face datasets), files (jsonl/parquet)",
            "data.path": "dump file(s) or data files; null = the enwiki sample in gensim",
            "data.max_articles": "stop after this many articles (null = all)",
            "data.tokenizer": "bpe (trained here), dolma2, gpt_neox_olmo_dolma_v1_5, a path",
            "data.sequence_length": "tokens per training sequence",
            "data.output_dir": "cache root: one folder per data config hash",
            "data.num_workers": "cleaning processes",
        },
        "groups": ("data",),
        "examples": "olmo_exp.data",
    },
}


def _escape(text: str) -> str:
    # Hydra fills $FLAGS_HELP etc. with string.Template after this text is inserted.
    return text.replace("$", "$$")


def _wrap(label: str, text: str, label_width: int) -> str:
    return textwrap.fill(text, WIDTH, initial_indent=f"  {label:<{label_width}} ",
                         subsequent_indent=" " * (label_width + 3), break_on_hyphens=False)


def group_options() -> dict[str, list[str]]:
    """Every config group Hydra can see (application groups, hydra/launcher) and its options."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    loader = GlobalHydra.instance().config_loader()
    found: dict[str, list[str]] = {}

    def walk(parent: str) -> None:
        for name in loader.list_groups(parent):
            group = f"{parent}/{name}" if parent else name
            if group == "hydra":  # of Hydra's own groups, users pick the launcher
                # hydra-submitit-launcher's own submitit_local/submitit_slurm are what our local
                # and slurm wrap (validation, requeue, reports): listing them invites the wrong one.
                found["hydra/launcher"] = sorted(o for o in loader.get_group_options("hydra/launcher")
                                                 if not o.startswith("submitit_"))
                continue
            options = [o for o in loader.get_group_options(group, ObjectType.CONFIG)
                       if not o.endswith("_schema")]  # structured-config schemas, internal
            if options:
                found[group] = sorted(options)
            walk(group)

    walk("")
    return found


def _groups(app: dict[str, Any]) -> str:
    from hydra.core.hydra_config import HydraConfig

    choices = dict(HydraConfig.get().runtime.choices)
    groups = group_options()
    if app["groups"] is not None:
        groups = {g: o for g, o in groups.items() if g in app["groups"]}
    width = max(len(g) + 1 for g in groups)
    lines = []
    for group, options in groups.items():
        if group in choices:
            label, shown = group, [("*" if o == choices[group] else "") + o for o in options]
        else:  # not in the defaults list: added with +group=option
            label, shown = f"+{group}", options
        lines.append(_wrap(label, ", ".join(shown), width))
    return "\n".join(lines)


def _keys(app: dict[str, Any], root: Any) -> str:
    rows = []
    for key, what in app["keys"].items():
        if key.startswith("hydra."):
            rows.append((f"{key}=...", what))
            continue
        value = OmegaConf.select(root, key, throw_on_missing=False)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        shown = "null" if value is None else str(value).replace(" ", "")
        if hasattr(value, "value"):  # enums
            shown = value.value
        rows.append((f"{key}={shown}", what))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {w}" for k, w in rows)


def _cluster_profile(root: Any) -> str:
    """Which SLURM profile every -m hydra/launcher=slurm command of this command line uses."""
    from hydra.core.hydra_config import HydraConfig

    name = HydraConfig.get().runtime.choices.get("cluster")
    path = profile_file(name, CONF_DIR)
    if path is None:
        return (f"Cluster profile (SLURM): none; write {user_config_dir()}/cluster/default.yaml "
                "once (README \"Cluster profile\")")
    cluster = OmegaConf.to_container(root.cluster, resolve=True)
    assert isinstance(cluster, dict)
    settings = " ".join(f"{k}={v}" for k, v in cluster.items() if v not in (None, [], ""))
    return f"Cluster profile (SLURM): {name} ({path}): {settings}"


def readme_examples(contains: str | None = None) -> list[str]:
    """The README's example commands: its ```bash blocks after the first (install and tests)."""
    blocks = re.findall(r"```bash\n(.*?)```", readme_text(), flags=re.S)
    lines = [line for block in blocks[1:] for line in block.splitlines() if line.strip()]
    return [line for line in lines if contains is None or contains in line]


def _examples(app: dict[str, Any]) -> str:
    lines = readme_examples(contains=app["examples"])
    return "\n".join(f"  {line}" for line in lines) or "  (see README.md)"


def help_section(section: str, app_name: str, *, _root_: Any) -> str:
    app = APPS[app_name]
    if section == "header":
        text = f"{textwrap.fill(app['about'], WIDTH)}\n\nUsage: {app['usage']}"
        if app_name == "run":
            text += f"\n{_cluster_profile(_root_)}"
    elif section == "groups":
        text = _groups(app)
    elif section == "keys":
        text = _keys(app, _root_)
    elif section == "examples":
        text = _examples(app)
    else:
        raise ValueError(f"unknown help section {section!r}")
    return _escape(text)


def answer_help(app: str, argv: list[str]) -> bool:
    """``--help``/``-h``: print ``hydra.help.template`` for ``app`` and return True.

    The same template Hydra's own ``--help`` would fill, but without Hydra's eager listing of all
    of its internal groups for placeholders this template does not use (5x the time of composing
    the config, measured with ``python -m olmo_exp.bench.cli``). Overrides on the command line
    are applied, so the help shows the values in use.
    """
    if "--help" not in argv and "-h" not in argv:
        return False
    import string

    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from olmo_exp.config.compose import compose

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None, job_name=app):
        try:
            cfg = compose([a for a in argv if not a.startswith("-")], return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as e:  # a typo next to --help
            raise SystemExit(f"error: {e}") from None
        register(app)  # after compose's schema.register(), which registers run.py's help
        HydraConfig.instance().set_config(cfg)
        print(string.Template(cfg.hydra.help.template).safe_substitute(FLAGS_HELP=""))
    return True


def register(app: str = "run") -> None:
    """``${olmo_help:SECTION}`` in hydra.help.template, for ``app`` (run.py or the data CLI)."""
    OmegaConf.register_new_resolver(
        "olmo_help", lambda section, _root_: help_section(section, app, _root_=_root_),
        replace=True)
