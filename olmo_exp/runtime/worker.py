"""One rank's training: olmo-core's model, train module, data loader, callbacks and trainer, built
from the validated config and the prepared data dir (nanoGPT-style: read top to bottom)."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from olmo_exp.base.files import write_json_atomic
from olmo_exp.build.peaks import mfu_peak
from olmo_exp.build.summary import SUMMARY_FILE, format_resolved, format_summary, run_summary
from olmo_exp.config import topology as topo
from olmo_exp.config.run import RunConfig
from olmo_exp.config.train import ConsoleMode
from olmo_exp.runtime import console, launch, preemption

log = logging.getLogger(__name__)


class _DropLogOf(logging.Filter):
    """Drops log records that mention an exception reported elsewhere."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.exception_name = name

    def filter(self, record: logging.LogRecord) -> bool:
        return self.exception_name not in record.getMessage()


def rank_worker(config_dict: dict[str, Any], run_dir_str: str, data_dir_str: str) -> None:
    """:func:`train_worker` as one of several ranks: a failure is logged by the rank itself, with
    its rank and traceback (on the shared console under torchrun/SLURM, where other ranks show
    errors only; in its own file under logs/ when run.py started it) before it propagates."""
    try:
        train_worker(config_dict, run_dir_str, data_dir_str)
    except Exception:
        log.exception("rank %d failed", console.rank_from_env())
        raise



def train_worker(config_dict: dict[str, Any], run_dir_str: str, data_dir_str: str) -> None:
    """One rank's training: build everything from the validated config and the prepared data dir.

    Module-level and fed plain data, so that torch's elastic launcher can start it in new processes.
    """
    import torch
    from olmo_core.data import NumpyDataLoaderConfig
    from olmo_core.distributed.utils import broadcast_object, get_rank, get_world_size
    from olmo_core.utils import setup_logging

    from olmo_exp.build.eval import eval_callbacks
    from olmo_exp.build.init_from import init_model, start_source
    from olmo_exp.data.manifest import Manifest
    from olmo_exp.data.prep import load_tokenizer
    from olmo_exp.runtime.callbacks import (
        ConsoleCallback,
        DistMemoryCallback,
        MetricsFileCallback,
        SpeedMonitor,
        StopOnSignalCallback,
        TrainStepTimer,
        WandbLogCallback,
    )
    from olmo_exp.runtime.checkpoints import CheckpointSpaceError, RetainingCheckpointer
    from olmo_exp.runtime.generation import GenerationCallback

    cfg = RunConfig.from_dict(config_dict)
    run_dir = Path(run_dir_str)
    train, seq_len = cfg.train, cfg.data.sequence_length

    # olmo-core sets up logging once per process (its handler, its format): let it do so now,
    # then install this project's handlers, which its environment setup below keeps.
    setup_logging()
    console.configure_logging(log_file=run_dir / console.LOG_FILE, rank=console.rank_from_env(),
                              full=train.console == ConsoleMode.full)
    launch.init_distributed(cfg.dist, seed=train.seed)
    world = topo.topology(cfg.dist)
    manifest = Manifest.load(data_dir_str)  # what the launching process prepared and verified

    # model group -> olmo-core TransformerConfig (LWS as block_overrides)
    model_config = cfg.model.build_config(cfg.model.padded_vocab_size(manifest.vocab_size))
    model_config.init_seed = train.seed
    summary = run_summary(cfg, model_config, world)
    # train.init_from: the source's weights replace olmo-core's init below, unless this run dir
    # already holds a checkpoint: then the trainer resumes from it and the source is not read.
    # Rank 0 decides, so that all ranks read the same source checkpoint.
    init_source = broadcast_object(
        start_source(train.init_from, run_dir / "checkpoints") if get_rank() == 0 else None)
    summary["init"] = (init_source.record(train.init_kv) if init_source is not None
                       else previous_init(run_dir))
    # Which token files trained this model: prepared shards, or data=tokens files in place.
    summary["data"] = {"dir": str(manifest.root), "dtype": manifest.dtype,
                       "tokenizer": manifest.data["tokenizer"]["identity"],
                       **{f"{split}_files": manifest.paths(split) for split in ("train", "validation")}}
    if get_rank() == 0:
        log.info("%s", format_resolved(summary["dist"]))
        write_json_atomic(run_dir / SUMMARY_FILE, summary)
        log.info("model:\n%s", format_summary(summary))

    # train + dist groups -> train module (parallelizes and initializes the meta-device model)
    dist, on_gpu = cfg.dist, world.on_gpu
    train_module = train.train_module_config(
        sequence_length=seq_len, dp_config=dist.dp_config(world.world_size, on_gpu),
        autocast_precision=dist.autocast_precision(on_gpu), ac_config=dist.ac_config(),
        compile_model=dist.compile_enabled(on_gpu),
    ).build(model_config.build(init_device="meta"))
    if init_source is not None:  # before the first step: AdamW's state is still empty
        init_model(train_module.model, init_source, train.init_kv, model_config)
        if get_rank() == 0:
            log.info("weights from %s (train.init_kv=%s); step 0, fresh optimizer",
                     init_source.describe(), train.init_kv.value)

    # data group -> olmo-core dataset and loader over the manifest's token files
    work_dir = str(run_dir / "dataset-work")
    dataset = manifest.dataset_config("train", sequence_length=seq_len, work_dir=work_dir).build()
    data_loader = NumpyDataLoaderConfig(
        global_batch_size=train.global_batch_size * seq_len,  # tokens
        seed=train.seed,
        num_workers=train.num_workers,
        work_dir=work_dir,
    ).build(dataset, dp_process_group=train_module.dp_process_group)

    callbacks: dict[str, Any] = {
        "checkpointer": train.checkpointer(RetainingCheckpointer),  # exact retention at the end
        "metrics_file": MetricsFileCallback(path=run_dir / "metrics.jsonl"),
        # dist/rank_state_bytes vs dist/unsharded_state_bytes: what sharding saves, per rank.
        "dist_memory": DistMemoryCallback(),
        # training time per step alone: the report's tokens/s and training time (continued on requeue)
        "train_step_timer": TrainStepTimer(),
        "generation": GenerationCallback(
            config=dataclasses.replace(cfg.generate,
                                       interval=min(cfg.generate.interval, train.max_steps)),
            tokenizer=load_tokenizer(manifest),
            eos_token_id=manifest.eos_token_id,
            path=run_dir / "generations.jsonl",
        ),
    }
    if train.eval_interval > 0:  # validation loss + BPB (+ the eval group's downstream tasks)
        interval, on_finish = train.eval_schedule()
        callbacks.update(eval_callbacks(
            manifest=manifest, sequence_length=seq_len, work_dir=work_dir,
            eval_tokens=train.eval_tokens, micro_batch_size=train.micro_batch_size,
            eval_interval=interval, eval_on_finish=on_finish, tasks=cfg.eval.tasks,
            max_examples=cfg.eval.max_examples, context=cfg.model.max_sequence_length))
    if train.console == ConsoleMode.compact:  # replaces olmo-core's block (train.trainer_config)
        callbacks["console"] = ConsoleCallback(
            world_size=get_world_size(), progress_bar=console.want_progress_bar(),
            start_from=None if init_source is None else init_source.describe())
    # The time-limit signal (sweep jobs), SIGINT and SIGTERM stop all ranks after one step, saved.
    callbacks["stop_on_signal"] = StopOnSignalCallback()
    if cfg.wandb.enabled:
        callbacks["wandb"] = WandbLogCallback(
            config=cfg.wandb, run_dir=run_dir, run_name=cfg.wandb.name or run_dir.name,
            run_config=config_dict
        )

    # MFU against the device's dense bf16 peak: none for fp32, on CPU, on an unknown GPU or a MIG
    # slice (the compute units tell parts that share a name apart: MI250X / MI250).
    device, bf16 = (summary["dist"]["device"] if on_gpu else None), dist.precision(on_gpu) != "fp32"
    units = torch.cuda.get_device_properties(0).multi_processor_count if on_gpu else None
    peak = mfu_peak(device, bf16=bf16, override_tflops=train.peak_tflops, compute_units=units)
    if peak is None and device is not None and bf16 and get_rank() == 0:
        log.warning("no MFU: no dense bf16 peak known for %r (%s compute units; an unknown GPU "
                    "or a MIG slice): set train.peak_tflops to report it", device, units)
    callbacks["speed_monitor"] = SpeedMonitor(
        num_flops_per_token=summary["flops_per_token"],
        device_peak_flops_per_second=None if peak is None else int(peak))

    trainer = train.trainer_config(
        run_dir=run_dir, callbacks=callbacks, on_gpu=world.on_gpu,
    ).build(train_module, data_loader)
    is_rank0 = get_rank() == 0  # asked before teardown: afterwards every process says rank 0
    # A save with no room is one line (below), not olmo-core's "Training failed" block as well.
    quiet = _DropLogOf(CheckpointSpaceError.__name__)
    logging.getLogger("olmo_core.train.trainer").addFilter(quiet)
    try:
        trainer.fit()  # loads the latest checkpoint in run_dir/checkpoints first, if any
    except CheckpointSpaceError as e:
        if is_rank0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        logging.getLogger("olmo_core.train.trainer").removeFilter(quiet)
        launch.teardown()
    if trainer.is_canceled:  # the time limit's signal: requeue at once (the next attempt plots)
        preemption.requeue_if_signaled(trainer.global_step)  # submitit requeues; the next attempt resumes
    if is_rank0:
        from olmo_exp.runtime.plots import plot_run

        plot_run(run_dir, tokens_per_step=train.global_batch_size * seq_len)
    if trainer.is_canceled:
        preemption.exit_if_stopped(trainer.global_step, train.max_steps, rank0=is_rank0)  # 130/143
    elif is_rank0 and trainer.global_step < train.max_steps:  # train.stop_at_step: a planned break
        log.info("stopped at step %d/%d (train.stop_at_step): resume with the same command and "
                 "train.stop_at_step=null (or a later step)", trainer.global_step, train.max_steps)


def previous_init(run_dir: Path) -> dict[str, Any] | None:
    """A resumed run's ``init`` as its first attempt recorded it (None: a random start)."""
    import json

    try:
        return json.loads((run_dir / SUMMARY_FILE).read_text()).get("init")
    except (OSError, ValueError):
        return None
