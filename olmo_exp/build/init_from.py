"""``train.init_from``: a run's first weights from another run's latest checkpoint or from a Hugging
Face OLMo-2 directory (training still starts at step 0 with a fresh optimizer), and
``train.init_kv=mean_pool``: MHA -> GQA uptraining, each group's K and V heads averaged into one
(Ainslie et al. 2023, "GQA", §2).

The launching process checks every tensor's shape against the model before data prep
(:func:`check_init`: one ConfigError naming the first tensor that does not fit); every rank then
reads the source whole and loads it into its built, possibly FSDP-sharded model (:func:`init_model`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_exp.base.errors import ConfigError
from olmo_exp.config.train import InitKV

if TYPE_CHECKING:
    import torch
    from olmo_core.nn.transformer import TransformerConfig

Shapes = dict[str, tuple[int, ...]]

RUN, HF = "run", "hf"
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
MODEL_PREFIX = "model."  # olmo-core's checkpoints hold the model's state under "model."
# Tensors whose rows are (KV head, channel): what mean_pool averages. The k norm is olmo-core's
# OLMo-2 norm over all KV heads at once (use_head_qk_norm=False): one gain per row of w_k, laid
# out by head like w_k's rows, so it is pooled the same way (a per-head norm of head_dim gains,
# use_head_qk_norm=True, has the same shape in both models and is copied).
KV_TENSOR = re.compile(r"^blocks\.(\d+)\.attention\.(w_k|w_v|k_norm)\.(weight|bias)$")


@dataclass(frozen=True)
class InitSource:
    """Where the weights come from: ``kind`` run (``path``'s latest checkpoint, ``step``) or hf."""

    kind: str
    path: str
    """The directory given, absolute."""
    weights: str
    """What is read: the checkpoint's model_and_optim/ (run) or the HF directory itself."""
    step: int | None = None

    def record(self, init_kv: InitKV) -> dict[str, Any]:
        """model_summary.json's ``init``."""
        return {"kind": self.kind, "path": self.path, "step": self.step,
                "checkpoint": self.weights, "init_kv": InitKV(init_kv).value}

    def describe(self) -> str:
        return f"run {self.path} step {self.step}" if self.kind == RUN else f"HF model {self.path}"


def has_checkpoint(checkpoint_dir: Path) -> bool:
    """A complete olmo-core checkpoint in ``checkpoint_dir``: what the trainer resumes from."""
    if not checkpoint_dir.is_dir():
        return False
    from olmo_core.train.checkpoint import Checkpointer

    return any(True for _ in Checkpointer.find_checkpoints(checkpoint_dir))


def resolve_source(init_from: str) -> InitSource:
    """The source ``train.init_from`` names, or a one-line ConfigError."""
    path = Path(init_from).expanduser().resolve()
    valid = ("must be a run directory with a checkpoint (checkpoints/stepN) or a Hugging Face "
             "OLMo-2 directory (config.json + model.safetensors or pytorch_model.bin)")
    if not path.is_dir():
        raise ConfigError("train.init_from", init_from, f"no such directory; {valid}")
    if (path / "config.json").is_file():
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
        if model_type != "olmo2":
            raise ConfigError("train.init_from", init_from,
                              f"is a Hugging Face {model_type!r} model; only OLMo-2 "
                              "(Olmo2ForCausalLM, model_type 'olmo2') is read")
        if not any((path / name).is_file() for name in HF_WEIGHT_FILES):
            raise ConfigError("train.init_from", init_from,
                              f"has a config.json but no weights ({', '.join(HF_WEIGHT_FILES)})")
        return InitSource(kind=HF, path=str(path), weights=str(path))
    if (path / "checkpoints").is_dir():
        from olmo_core.train.checkpoint import Checkpointer

        try:
            latest = Path(Checkpointer.latest_checkpoint(path / "checkpoints"))
        except FileNotFoundError:
            raise ConfigError("train.init_from", init_from,
                              "holds no complete checkpoint under checkpoints/; " + valid) from None
        return InitSource(kind=RUN, path=str(path), weights=str(latest / "model_and_optim"),
                          step=int(latest.name.removeprefix("step")))
    raise ConfigError("train.init_from", init_from, valid)


# -- reading a source: shapes (cheap, for the checks) and tensors (olmo-core's names) --------------


def source_shapes(source: InitSource) -> Shapes:
    """Every tensor's shape, under olmo-core's names, without reading the weights."""
    if source.kind == RUN:
        from olmo_core.distributed.checkpoint import get_checkpoint_metadata

        meta = get_checkpoint_metadata(source.weights).state_dict_metadata
        return {k.removeprefix(MODEL_PREFIX): tuple(v.size) for k, v in meta.items()
                if k.startswith(MODEL_PREFIX) and hasattr(v, "size")}
    import torch

    state = {k: torch.empty(shape, device="meta") for k, shape in _hf_shapes(Path(source.weights))}
    return {k: tuple(v.shape) for k, v in _from_hf(source, state).items()}


def load_source(source: InitSource) -> dict[str, torch.Tensor]:
    """The source's full (unsharded) tensors under olmo-core's names, on CPU. Every rank reads the
    whole source (no collectives): the weights then go into each rank's shard."""
    import torch

    if source.kind == RUN:
        import torch.distributed.checkpoint as dcp
        from olmo_core.distributed.checkpoint import get_checkpoint_metadata
        from olmo_core.distributed.checkpoint.filesystem import RemoteFileSystemReader

        meta = get_checkpoint_metadata(source.weights).state_dict_metadata
        state = {k: torch.empty(tuple(v.size), dtype=v.properties.dtype)
                 for k, v in meta.items() if k.startswith(MODEL_PREFIX) and hasattr(v, "size")}
        dcp.load(state, storage_reader=RemoteFileSystemReader(source.weights), no_dist=True)
        return {k.removeprefix(MODEL_PREFIX): v for k, v in state.items()}
    hf_state: dict[str, torch.Tensor] = {}
    for file in _hf_weight_files(Path(source.weights)):
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            hf_state.update(load_file(file))
        else:
            hf_state.update(torch.load(file, map_location="cpu", weights_only=True))
    return _from_hf(source, hf_state)


def _hf_weight_files(root: Path) -> list[Path]:
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (root / single).is_file():
            return [root / single]
        if (root / index).is_file():
            weight_map = json.loads((root / index).read_text())["weight_map"]
            return [root / name for name in sorted(set(weight_map.values()))]
    return []


def _hf_shapes(root: Path) -> list[tuple[str, tuple[int, ...]]]:
    import torch

    shapes = []
    for file in _hf_weight_files(root):
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                shapes += [(k, tuple(f.get_slice(k).get_shape())) for k in f.keys()]
        else:
            state = torch.load(file, map_location="meta", weights_only=True)
            shapes += [(k, tuple(v.shape)) for k, v in state.items()]
    return shapes


def _from_hf(source: InitSource, hf_state: dict[str, Any]) -> dict[str, Any]:
    """HF names -> olmo-core's, with olmo-core's own converter (olmo_core/nn/hf/convert.py)."""
    try:
        from olmo_core.nn.hf.convert import convert_state_from_hf
        from transformers import AutoConfig
    except ImportError as e:
        raise ConfigError("train.init_from", source.path,
                          f"is a Hugging Face directory, which needs transformers ({e}); "
                          "pip install -e '.[export]'") from None
    config = AutoConfig.from_pretrained(source.weights)
    return convert_state_from_hf(config, hf_state, model_type="olmo2")


def hf_settings_mismatch(source: InitSource, model_config: TransformerConfig) -> list[str]:
    """What an HF source's config.json sets differently from this model, beyond tensor shapes
    (the model computes something else with the same weights): one item each."""
    if source.kind != HF:
        return []
    hf = json.loads((Path(source.weights) / "config.json").read_text())
    block = model_config.block
    attention = block.sequence_mixer
    rope = hf.get("rope_parameters") or {}
    theirs = {"rope_theta": rope.get("rope_theta", hf.get("rope_theta")),
              "rms_norm_eps": hf.get("rms_norm_eps"), "hidden_act": hf.get("hidden_act", "silu"),
              "rope_type": rope.get("rope_type", "default"),
              "rope_scaling": hf.get("rope_scaling")}
    ours = {"rope_theta": attention.rope.theta, "rms_norm_eps": block.layer_norm.eps,
            "hidden_act": "silu", "rope_type": "default", "rope_scaling": None}
    keys = {"rope_theta": "model.rope_theta", "rms_norm_eps": "model.layer_norm_eps"}
    return [f"{k} {theirs[k]} (this model: {keys.get(k, k)}={ours[k]})" for k in ours
            if theirs[k] is not None and theirs[k] != ours[k]
            and not (isinstance(ours[k], float | int) and float(theirs[k]) == float(ours[k]))]


# -- fitting a source to the model ---------------------------------------------------------------


def model_geometry(model_config: TransformerConfig) -> tuple[Shapes, dict[int, tuple[int, int]]]:
    """The model's tensor shapes and, per layer, (KV heads, head dim): built on the meta device."""
    import torch

    with torch.device("meta"):
        model = model_config.build(init_device="meta")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    kv = {int(name.split(".")[1]): (module.n_kv_heads, module.head_dim)
          for name, module in model.named_modules()
          if re.fullmatch(r"blocks\.\d+\.attention", name)}
    return shapes, kv


def plan(target: Shapes, source: Shapes, kv: dict[int, tuple[int, int]], init_kv: InitKV,
         source_path: str) -> dict[str, int]:
    """Per tensor, how many source KV heads pool into one (1 = copied as is). A ConfigError names
    the first tensor (in the model's order) that does not fit, with both shapes."""
    pooled = InitKV(init_kv) == InitKV.mean_pool
    groups: dict[str, int] = {}
    for key, shape in target.items():
        if key not in source:
            raise ConfigError("train.init_from", source_path,
                              f"has no tensor {key} (this model's is {shape})")
        theirs = source[key]
        match = KV_TENSOR.match(key)
        if theirs == shape:
            groups[key] = 1
        elif pooled and match and theirs[1:] == shape[1:]:
            n_kv, head_dim = kv[int(match.group(1))]
            n_src = theirs[0] // head_dim
            if theirs[0] % head_dim or n_src <= n_kv or n_src % n_kv:
                raise ConfigError(
                    "train.init_kv", InitKV.mean_pool.value,
                    f"tensor {key}: the source's {theirs} ({theirs[0] / head_dim:g} heads of "
                    f"{head_dim}) can't be mean-pooled into this model's {shape} ({n_kv} KV heads): "
                    f"the source needs a multiple of {n_kv} KV heads, more than {n_kv}")
            groups[key] = n_src // n_kv
        else:
            hint = ("; train.init_kv=mean_pool pools a source's KV heads into fewer"
                    if match and not pooled else "")
            raise ConfigError("train.init_from", source_path,
                              f"tensor {key} has shape {theirs} there but {shape} in this model{hint}")
    extra = [k for k in source if k not in target]
    if extra:
        raise ConfigError("train.init_from", source_path,
                          f"has tensor {extra[0]} {source[extra[0]]}, which this model lacks")
    return groups


def mean_pool(tensor: torch.Tensor, group: int, head_dim: int) -> torch.Tensor:
    """Rows of ``n`` KV heads -> rows of ``n / group``: head j is the mean of source heads
    j*group .. j*group+group-1, the query heads it serves (olmo-core repeats KV heads
    consecutively, repeat_interleave). Summed in float64, then back to the tensor's dtype."""
    n_src = tensor.shape[0] // head_dim
    rest = tuple(tensor.shape[1:])
    grouped = tensor.double().reshape(n_src // group, group, head_dim, *rest)
    return grouped.mean(dim=1).reshape(n_src // group * head_dim, *rest).to(tensor.dtype)


def fitted_state(source: InitSource, model_config: TransformerConfig,
                 init_kv: InitKV) -> dict[str, torch.Tensor]:
    """The source's tensors as this model's state dict (pooled where the plan says)."""
    target, kv = model_geometry(model_config)
    state = load_source(source)
    groups = plan(target, {k: tuple(v.shape) for k, v in state.items()}, kv, init_kv, source.path)
    for key, group in groups.items():
        if group > 1:
            state[key] = mean_pool(state[key], group, kv[int(key.split(".")[1])][1])
    return {key: state[key] for key in target}


def check_init(init_from: str, init_kv: InitKV, model_config: TransformerConfig) -> InitSource:
    """Before data prep: the source exists and every tensor fits the model (shapes only)."""
    source = resolve_source(init_from)
    target, kv = model_geometry(model_config)
    plan(target, source_shapes(source), kv, init_kv, init_from)
    return source


def init_model(model: torch.nn.Module, source: InitSource, init_kv: InitKV,
               model_config: TransformerConfig) -> None:
    """Replace the (initialized, possibly FSDP-sharded) model's weights with the source's: torch's
    full-state-dict loader cuts each rank's shard out of the full tensors."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    state = fitted_state(source, model_config, init_kv)
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))


def start_source(init_from: str | None, checkpoint_dir: Path) -> InitSource | None:
    """The source a run starts from: None without ``train.init_from``, and None when
    ``checkpoint_dir`` already holds a checkpoint (resume wins, as with olmo-core's own
    ``TrainerConfig.load_path``: the save folder first)."""
    if init_from is None or has_checkpoint(checkpoint_dir):
        return None
    return resolve_source(init_from)
