"""The ``cluster`` group: one SLURM profile (partition, account, GPUs, time limit, setup lines, ...)
that every ``-m hydra/launcher=slurm`` command picks up, and what SLURM says about a partition.

A profile is a file ``cluster/<name>.yaml`` on Hydra's search path: ``conf/cluster/`` (shipped
ones) and the user's own directory (``$OLMO_EXP_CONFIG_DIR``, default ``~/.config/olmo-exp``; see
:mod:`olmo_exp.cli.registry`). ``conf/config.yaml`` loads ``cluster/default.yaml`` when one exists,
so a profile written there once applies to every command; ``cluster=NAME`` picks another.
``conf/hydra/launcher/slurm.yaml`` reads these keys; an explicit ``hydra.launcher.KEY=...`` wins.

The GPUs a job asks for default to what the partition's nodes have (``sinfo``'s GRES): a job on a
GPU partition gets one rank per GPU without saying so, a CPU partition none. Reading the cluster
is cheap (one ``sinfo`` per partition and process) and needs no torch.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olmo_exp.base.errors import ConfigError

# The user's directory of config groups (cluster/<name>.yaml, ...), added to Hydra's search path.
USER_DIR_ENV = "OLMO_EXP_CONFIG_DIR"
USER_DIR_DEFAULT = "~/.config/olmo-exp"


def user_config_dir() -> Path:
    """The user's own config groups (``cluster/default.yaml``, ...): ``$OLMO_EXP_CONFIG_DIR``,
    default ``~/.config/olmo-exp``; outside the repository, so a profile survives checkouts."""
    return Path(os.path.expanduser(os.environ.get(USER_DIR_ENV) or USER_DIR_DEFAULT))


def profile_file(name: str | None, conf_dir: Path) -> Path | None:
    """The file of cluster profile ``name``, as Hydra finds it (conf/ first), or None."""
    if not name:
        return None
    for root in (conf_dir, user_config_dir()):
        path = root / "cluster" / f"{name}.yaml"
        if path.is_file():
            return path
    return None


@dataclass
class ClusterConfig:
    """sbatch settings of every SLURM job (``hydra.launcher.*`` reads them); null = SLURM's default."""

    partition: str | None = None
    """null = the cluster's default partition."""
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_node: int | None = None
    """null = what the partition's nodes have (sinfo GRES, ``gpu:N``; 1 for dist=single, one per
    rank when dist.nproc_per_node is set); 0 = none."""
    cpus_per_task: int | None = None
    """CPUs per rank (threads per rank follow it)."""
    mem_gb: int | None = None
    """Memory per node."""
    timeout_min: int = 60
    signal_delay_s: int = 120
    """USR2 this long before the time limit: checkpoint the current step, requeue."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run in the job before the ranks start (module load, activate a venv, ...)."""


# -- what SLURM says -------------------------------------------------------------------------------


def gres_gpus(gres: str) -> int:
    """GPUs per node in one sinfo ``%G`` field: ``gpu:2`` -> 2, ``gpu:a100:8(S:0-1),mps:100`` -> 8,
    ``(null)`` -> 0."""
    total = 0
    for item in re.split(r",(?![^(]*\))", gres):  # commas outside (S:0-1) socket lists
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


# One line of ``sinfo -h -o SINFO_FORMAT`` per node group (sinfo merges nodes that agree on every
# field shown): partition (``*`` marks the default), GRES, features, node list.
SINFO_FORMAT = "%P|%G|%f|%N"


@dataclass(frozen=True)
class NodeGroup:
    """Nodes of one partition that ``sinfo`` lists on one line (the same GRES and features)."""

    partition: str
    default: bool
    """The cluster's default partition (``*`` after its name)."""
    gres: str
    features: frozenset[str]
    nodes: str

    @property
    def gpus(self) -> int:
        return gres_gpus(self.gres)

    def describe(self) -> str:
        return f"{self.nodes}: {self.gres if self.gpus else 'no GPUs'}" + (
            f" (features {','.join(sorted(self.features))})" if self.features else "")


def parse_sinfo(out: str) -> list[NodeGroup]:
    """The node groups of ``sinfo -h -o SINFO_FORMAT``'s output."""
    groups = []
    for line in out.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4:
            continue
        name, gres, features, nodes = fields
        groups.append(NodeGroup(
            partition=name.rstrip("*"), default=name.endswith("*"), gres=gres,
            features=frozenset(f for f in features.split(",") if f and f != "(null)"), nodes=nodes))
    return groups


def satisfies(features: frozenset[str], constraint: str) -> bool:
    """Whether nodes with ``features`` meet an sbatch ``--constraint`` of features joined by
    ``&`` (and) and ``|`` (or); brackets and ``*count`` suffixes are read as plain and/or."""
    alternatives = re.sub(r"[\[\]()]|\*\d+", "", constraint).split("|")
    return any(all(f.strip() in features for f in alt.split("&") if f.strip())
               for alt in alternatives)


def select_groups(groups: list[NodeGroup], partition: str | None,
                  constraint: str | None = None) -> list[NodeGroup]:
    """The node groups a job in ``partition`` (None: the default one) with ``constraint`` may get."""
    found = [g for g in groups if (g.default if partition is None else g.partition == partition)]
    if constraint:
        found = [g for g in found if satisfies(g.features, constraint)]
    return found


def gpus_of_groups(groups: list[NodeGroup], partition: str | None,
                   constraint: str | None = None) -> int | None:
    """GPUs per node of the groups a job may land on; None when none is known (sbatch will name
    the problem). Groups with different GPU counts are refused: the job could land on either (a
    GPU partition with CPU-only nodes would silently train on CPU), unless the constraint picks."""
    found = select_groups(groups, partition, constraint)
    counts = {g.gpus for g in found}
    if len(counts) > 1:
        name = partition or next(g.partition for g in found)
        raise ConfigError(
            "cluster.constraint" if constraint else "cluster.partition",
            constraint or name,
            f"has nodes with different GPUs ({'; '.join(g.describe() for g in found)}) in "
            f"partition {name}: set cluster.gpus_per_node, or cluster.constraint to a feature "
            "of the nodes the jobs should run on")
    return counts.pop() if counts else None


@functools.cache
def sinfo_groups() -> tuple[NodeGroup, ...] | None:
    """What ``sinfo`` says about every partition (once per process); None without SLURM here."""
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", SINFO_FORMAT], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return tuple(parse_sinfo(out))


def partition_gpus(partition: str | None, constraint: str | None = None) -> int | None:
    """GPUs per node of ``partition`` (None: the default one) as ``sinfo`` reports them, on the
    nodes ``constraint`` allows. None when SLURM cannot say (no sinfo here, or no such partition:
    sbatch will name the problem); a one-line ConfigError when the nodes differ."""
    groups = sinfo_groups()
    return None if groups is None else gpus_of_groups(list(groups), partition, constraint)


def check_partition_gpus(launcher: Any) -> None:
    """Refuse (one ConfigError) a job whose GPUs are left to a partition with nodes that differ:
    ``launcher`` is the unresolved ``hydra.launcher`` node, whose ``gpus_per_node`` is this
    module's resolver unless the user set it (then the nodes are the user's choice)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(launcher, resolve=False).get("gpus_per_node")
    if not (isinstance(raw, str) and "olmo_gpus_per_node" in raw):
        return
    if OmegaConf.select(launcher, "gpus_per_node", default=None) is not None:
        return  # the profile's cluster.gpus_per_node, or the nodes agreed
    partition_gpus(OmegaConf.select(launcher, "partition"), OmegaConf.select(launcher, "constraint"))


def loader_cpus_notice(num_workers: int, cpus_per_task: int | None) -> str:
    """A line when a rank's data-loader workers outnumber its CPUs (train=olmo2 starts 4 per rank;
    SLURM gives a task one CPU unless asked): they would share one core with the training loop."""
    cpus = int(cpus_per_task or 1)
    if num_workers == 0 or num_workers < cpus:
        return ""
    given = f"cluster.cpus_per_task={cpus}" if cpus_per_task else \
        "cluster.cpus_per_task=null: SLURM's default of 1"
    return (f"train.num_workers={num_workers} data-loader workers per rank, but each task gets "
            f"{cpus} CPU(s) ({given}): set cluster.cpus_per_task={num_workers + 1} (or "
            f"hydra.launcher.cpus_per_task), or fewer train.num_workers")


# -- resolvers of conf/hydra/launcher/slurm.yaml ---------------------------------------------------


def _strategy(value: Any) -> str:
    return str(getattr(value, "value", value))


def default_gpus_per_node(profile: int | None, nproc_per_node: int | None, strategy: Any,
                          partition: str | None, constraint: str | None = None) -> int | None:
    """GPUs a job asks for per node: the profile's, else from the GRES of the partition's nodes
    (those the constraint allows): one per rank (dist.nproc_per_node), one for dist=single, else
    every GPU of a node; None = no GPUs."""
    if profile is not None:
        return int(profile)
    try:
        gpus = partition_gpus(partition, constraint or None)
    except ConfigError:  # nodes that differ: refused by the launcher (check_partition_gpus)
        return None
    if not gpus:
        return None
    if nproc_per_node is not None:
        return int(nproc_per_node)
    return 1 if _strategy(strategy) == "single" else gpus


def tasks_per_node(nproc_per_node: int | None, gpus_per_node: int | None,
                   strategy: Any = "fsdp") -> int:
    """One task = one rank: ``dist.nproc_per_node``; null = one per GPU (1 for dist=single), or 1
    without GPUs."""
    if nproc_per_node is not None:
        return int(nproc_per_node)
    if _strategy(strategy) == "single":
        return 1
    return max(int(gpus_per_node or 0), 1)
