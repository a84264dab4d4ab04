"""Checkpoints that survive the worst moment: olmo-core's checkpointer with exact retention, the
remains of interrupted saves cleared before training, and one line when a save finds no room.

olmo-core writes a checkpoint into ``stepN-tmp``, renames it to ``stepN`` and writes its metadata
file last (and removes that file first when it deletes one): a directory without it is never
loaded, so a run killed while saving resumes from the newest complete checkpoint, and
metrics.jsonl drops the records past it (``MetricsFileCallback``): nothing lost, nothing twice.
"""

from __future__ import annotations

import errno
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from olmo_core.distributed.utils import broadcast_object, get_fs_local_rank, get_rank
from olmo_core.train.callbacks import CheckpointerCallback

log = logging.getLogger(__name__)

# errno of a write that found no room: no space, quota, a file size limit (RLIMIT_FSIZE).
_NO_ROOM = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file too large"}


def no_room(error: BaseException) -> str | None:
    """Why a save failed if it was for want of room, else None. torch's distributed checkpoint
    wraps each rank's OSError in its own exceptions (with the original as text): both are read."""
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _NO_ROOM:
            return _NO_ROOM[e.errno]
        stack += [c for c in (e.__cause__, e.__context__) if c is not None]
        for failure in getattr(e, "failures", {}).values():  # CheckpointException: rank -> error
            stack += [f for f in (failure if isinstance(failure, tuple) else (failure,))
                      if isinstance(f, BaseException)]
    text = str(error)
    return next((why for why in _NO_ROOM.values() if why in text.lower()), None)


class CheckpointSpaceError(RuntimeError):
    """A checkpoint could not be written for want of room (one line; the run ends with it)."""


def incomplete_checkpoints(folder: Path) -> list[Path]:
    """What interrupted saves or removals left in a checkpoint folder: ``stepN-tmp`` directories
    (olmo-core writes there, then renames to ``stepN``) and ``stepN`` without the metadata file
    olmo-core writes last (and removes first); a resume never loads either."""
    from olmo_core.train.checkpoint import Checkpointer

    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and (
        re.fullmatch(r"step\d+-tmp", p.name)
        or (re.fullmatch(r"step\d+", p.name) and not Checkpointer.dir_is_checkpoint(str(p)))))


def complete_checkpoint_steps(folder: Path) -> list[int]:
    from olmo_core.train.checkpoint import Checkpointer

    if not folder.is_dir():
        return []
    return sorted(step for step, _ in Checkpointer.find_checkpoints(str(folder)))


@dataclass
class RetainingCheckpointer(CheckpointerCallback):
    """olmo-core's checkpointer, plus exact retention at the end, the remains of interrupted saves
    removed at the start, and one clear error when a save finds no room.

    olmo-core deletes what it schedules for removal only after a later training step, so the
    final save's trim (``max_checkpoints``) and the last ephemeral checkpoint are never deleted,
    and its trim counts only this attempt's saves. At the end of training this removes, from the
    whole checkpoint folder (earlier attempts included): every ephemeral checkpoint (the final one
    is permanent), and all but the newest ``max_checkpoints`` permanent ones; never the newest
    checkpoint of all.

    A run killed while it saved (SIGKILL, a node lost) leaves an incomplete ``stepN-tmp`` or
    ``stepN``: the next run resumes from the newest complete checkpoint and, before training,
    removes the incomplete one (olmo-core would refuse to save ``stepN`` again over it). A save
    that runs out of room raises :class:`CheckpointSpaceError` after removing its own partial files.
    """

    def pre_train(self) -> None:
        if self.enabled and get_rank() == 0:
            for path in incomplete_checkpoints(Path(self.save_folder)):
                log.warning("removing %s: an interrupted save left it incomplete", path)
                shutil.rmtree(path, ignore_errors=True)
        broadcast_object(None)  # every rank waits for the clean-up
        super().pre_train()

    def _save_checkpoint(self, save_async: bool | None = None, ephemeral: bool = False) -> str:
        try:
            return super()._save_checkpoint(save_async=save_async, ephemeral=ephemeral)
        except BaseException as e:  # torch's CheckpointException is a BaseException
            why = None if isinstance(e, KeyboardInterrupt | SystemExit) else no_room(e)
            if why is None:
                raise
            folder = Path(self.save_folder)
            if get_fs_local_rank() == 0:  # the partial save: its room back for the next attempt
                for path in incomplete_checkpoints(folder):
                    shutil.rmtree(path, ignore_errors=True)
            complete = complete_checkpoint_steps(folder)
            resume = f"step {complete[-1]}" if complete else "scratch (no complete checkpoint)"
            raise CheckpointSpaceError(
                f"the checkpoint of step {self.step} did not fit in {folder} ({why}; "
                f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free after removing the partial "
                f"save): make room and run the same command; it resumes from {resume}") from None

    def post_train(self) -> None:
        super().post_train()
        if not self.enabled:
            return
        doomed: list[str] = []
        if get_rank() == 0:
            found = self.checkpointer.find_checkpoints
            newest = max(found(self.save_folder), default=(0, ""))[1]
            ephemeral = [path for _, path in found(self.save_folder, ephemeral=True)]
            permanent = [path for _, path in sorted(found(self.save_folder, ephemeral=False))]
            keep = len(permanent) if self.max_checkpoints is None else self.max_checkpoints
            # The newest is what a resume loads: never removed, whatever kind it is.
            doomed = [p for p in ephemeral + permanent[:-keep] if p != newest]
        doomed = broadcast_object(doomed)
        self._checkpoints_to_remove.clear()  # all of them are in doomed, or already gone
        for path in doomed:
            self._remove_checkpoint(path)
