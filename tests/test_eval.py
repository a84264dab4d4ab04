"""Evaluation: one validation set for every job (train.eval_tokens), bits per byte, downstream tasks.

Fast: BPB and the token count against a hand computation, on real token files of the OLMo-1
tokenizer that ai2-olmo-eval ships. Slow (real runs on the sample): micro-batch 1 vs 2 and 1 vs 2
ranks score the same sequences (same token count, same loss within float noise); eval=downstream
puts task metrics in metrics.jsonl.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, assert_one_line_error, cli, read_jsonl

from olmo_exp.base.errors import DataError

TESTDATA = REPO.parent / "shared" / "testdata"
VAL = "eval/lm/validation/"
# 11 sequences of 64 tokens: neither micro-batches of 2 nor 2 ranks divide them evenly.
EVAL = [*TINY, "train.max_steps=2", "train.checkpoint_interval=0", "train.eval_interval=2",
        "train.eval_tokens=704"]
REL_TOL = 1e-5  # fp32 forward passes over other batch shapes, summed in another order


def olmo1_tokenizer() -> Path:
    """The OLMo-1 tokenizer JSON inside ai2-olmo-eval's wheel (no file outside the repo)."""
    olmo_eval = pytest.importorskip("olmo_eval")
    return Path(olmo_eval.__file__).parent / "tokenizers" / "allenai_gpt-neox-olmo-dolma-v1_5.json"


# Text whose characters take 1-4 UTF-8 bytes, and byte-level BPE tokens that cut them.
NON_ASCII = ["Zürich: naïve café, crème brûlée.", "東京都の人口は約1400万人です。",
             "Ελληνικά και русский текст; emoji 🦜🧪🫠 and ½ ∑ ∞.", "São Paulo – 10 °C ≈ 50 °F"]


def byte_level_bytes() -> dict[str, int]:
    """Byte-level BPE's character for each byte (GPT-2's table): printable Latin-1 bytes stand
    for themselves, the other bytes, in order, for U+0100 onwards."""
    own = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    rest = [b for b in range(256) if b not in own]
    return {**{chr(b): b for b in own}, **{chr(0x100 + n): b for n, b in enumerate(rest)}}


def test_bits_per_byte_by_hand(tmp_path: Path) -> None:
    """Non-ASCII text cut into sequences inside characters, a loss that differs per token, and
    each label found by its definition (position j predicts token j + 1), not the evaluator's."""
    from olmo_core.data import DataCollator, NumpyFSLDatasetConfig, TokenizerConfig
    from tokenizers import Tokenizer

    from olmo_exp.build.eval import ValidationEvaluator
    from olmo_exp.data.tokenizer import TextTokenizer

    path = olmo1_tokenizer()
    tok, eos, seq = Tokenizer.from_file(str(path)), 50279, 8
    ids = [i for d in NON_ASCII for i in [*tok.encode(d, add_special_tokens=False).ids, eos]]
    # Each token's bytes by hand, checked against the text: the docs' UTF-8, EOS none.
    to_byte = byte_level_bytes()

    def token_bytes(i: int) -> bytes:
        return b"" if i == eos else bytes(to_byte[c] for c in tok.id_to_token(i))

    assert b"".join(map(token_bytes, ids)) == "".join(NON_ASCII).encode()
    np.array(ids, dtype=np.uint16).tofile(tmp_path / "val.bin")
    dataset = NumpyFSLDatasetConfig(
        tokenizer=TokenizerConfig(vocab_size=50280, eos_token_id=eos, pad_token_id=1),
        paths=[str(tmp_path / "val.bin")], sequence_length=seq, work_dir=str(tmp_path / "w"),
    ).build()
    dataset.prepare()
    n = len(ids) // seq - 1  # odd: batches of 2 end in a filler
    assert n % 2
    sequences = [ids[s * seq:(s + 1) * seq] for s in range(n)]
    # Some sequence starts inside a character: its predicted tokens don't decode on their own.
    assert any("\ufffd" in tok.decode(s[1:]) for s in sequences)
    predicted = [i for s in sequences for i in s[1:]]
    num_bytes = sum(len(token_bytes(i)) for i in predicted)

    def loss_of(label: int) -> float:  # any loss that differs from token to token
        return 1.0 + (label % 13) / 4

    evaluator = ValidationEvaluator(dataset=dataset, num_sequences=n, rank_batch_size=2,
                                    collator=DataCollator(pad_token_id=1),
                                    tokenizer=TextTokenizer(path), device=torch.device("cpu"))
    batches = list(evaluator)
    assert len(batches) == (n + 1) // 2
    for batch in batches:
        inputs = batch.pop("input_ids")  # as the train module does before update_metrics
        ce = torch.full(inputs.shape, 100.0)  # where nothing is predicted: must not count
        for row, real in enumerate(batch["label_mask"].all(dim=1).tolist()):
            if real:
                ce[row, :-1] = torch.tensor([loss_of(t) for t in inputs[row, 1:].tolist()])
        evaluator.update_metrics(batch, ce, None)
    metrics = {k: float(v) for k, v in evaluator.compute_metrics().items()}
    ce_by_hand = sum(map(loss_of, predicted)) / len(predicted)
    assert metrics["validation/tokens"] == len(predicted) == n * (seq - 1)
    assert metrics["validation/bytes"] == num_bytes
    assert metrics["validation/CE loss"] == pytest.approx(ce_by_hand)
    assert metrics["validation/BPB"] == pytest.approx(
        ce_by_hand / math.log(2) * len(predicted) / num_bytes)


def metaspace_byte_fallback(tmp_path: Path) -> Path:
    """A SentencePiece-style tokenizer (metaspace, byte fallback), built here: pieces for the
    ASCII letters, "▁" and "é"; every other character becomes its <0xNN> bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    pieces = [f"<0x{b:02X}>" for b in range(256)] + ["\u2581", "é"]
    pieces += [chr(c) for c in range(0x21, 0x7F)]
    tok = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[],
                               byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    tok.add_special_tokens(["</s>"])
    tok.save(str(tmp_path / "metaspace.json"))
    return tmp_path / "metaspace.json"


def test_token_byte_table_sums_to_the_texts_bytes_wherever_it_is_cut(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    from olmo_exp.data.tokenizer import EOS_TOKEN, TextTokenizer, train_bpe

    train_bpe(iter(NON_ASCII * 3), 300, tmp_path / "bpe.json")
    paths = [olmo1_tokenizer(), tmp_path / "bpe.json", metaspace_byte_fallback(tmp_path)]
    if (TESTDATA / "tokenizers" / "allenai_dolma2.json").is_file():
        paths.append(TESTDATA / "tokenizers" / "allenai_dolma2.json")
    for path in paths:
        tok = Tokenizer.from_file(str(path))
        eos = next(tok.token_to_id(t) for t in (EOS_TOKEN, "</s>") if tok.token_to_id(t) is not None)
        stream = [i for d in NON_ASCII for i in [*tok.encode(d, add_special_tokens=False).ids, eos]]
        table = TextTokenizer(path).byte_counts
        assert table[eos] == 0
        for seq in (3, 5, 8):  # cut into sequences; a character split at an edge still adds up
            cuts = [stream[s:s + seq] for s in range(0, len(stream), seq)]
            assert sum(int(table[c].sum()) for c in cuts) == len("".join(NON_ASCII).encode()), path
        if path.name == "metaspace.json":  # byte fallback and metaspace spaces really occur
            pieces = [tok.id_to_token(i) for i in stream]
            assert "<0xF0>" in pieces and "\u2581" in pieces


def test_eval_tokens_needs_one_sequence() -> None:
    assert_one_line_error(["data.sequence_length=64", "train.eval_tokens=63"], "train.eval_tokens")


def test_eval_tokens_beyond_the_split_is_one_line(sample) -> None:
    held = sample.sequences("validation", 64)
    assert sample.eval_sequences(held * 64, 64) == held
    with pytest.raises(DataError, match=r"^train.eval_tokens=\d+ is more than the validation"):
        sample.eval_sequences((held + 1) * 64, 64)


def test_downstream_tasks_checked_at_compose_time() -> None:
    pytest.importorskip("olmo_eval")
    assert_one_line_error(["eval=downstream", "eval.tasks=[arc_easy,no_such_task]"], "eval.tasks")
    assert_one_line_error(["eval=downstream", "model.max_sequence_length=64",
                           "data.sequence_length=64"], "eval.tasks")


def evals(run_dir: Path) -> list[dict]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if VAL + "CE loss" in r]


def run(data_dir: Path, root: Path, name: str, *overrides: str, ranks: int = 1) -> Path:
    run_dir = root / name
    cli(f"data.output_dir={data_dir}", *EVAL, *overrides, f"hydra.run.dir={run_dir}", cwd=root,
        check=True, env={"HYDRA_FULL_ERROR": "1", "CUDA_VISIBLE_DEVICES": "",
                         "OMP_NUM_THREADS": "1" if ranks > 1 else "2"})
    return run_dir


@pytest.fixture(scope="module")
def eval_runs(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {}


def get(eval_runs: dict[str, Path], data_dir: Path, tmp_path_factory, name: str,
        *overrides: str, ranks: int = 1) -> Path:
    if name not in eval_runs:
        eval_runs[name] = run(data_dir, tmp_path_factory.mktemp(name), name, *overrides, ranks=ranks)
    return eval_runs[name]


def assert_same_eval(a: Path, b: Path) -> None:
    ea, eb = evals(a), evals(b)
    assert [r["step"] for r in ea] == [r["step"] for r in eb] == [2]
    assert ea[0][VAL + "tokens"] == eb[0][VAL + "tokens"] == 11 * 63
    assert ea[0][VAL + "bytes"] == eb[0][VAL + "bytes"]
    for key in ("CE loss", "BPB"):
        assert eb[0][VAL + key] == pytest.approx(ea[0][VAL + key], rel=REL_TOL), key


@pytest.mark.slow
def test_micro_batch_size_does_not_change_the_validation_set(sample, eval_runs, data_dir,
                                                             tmp_path_factory) -> None:
    two = get(eval_runs, data_dir, tmp_path_factory, "micro2")
    one = get(eval_runs, data_dir, tmp_path_factory, "micro1", "train.micro_batch_size=1")
    assert_same_eval(two, one)
    record = evals(two)[0]  # BPB as the metrics file's own numbers say
    assert record[VAL + "BPB"] == pytest.approx(
        record[VAL + "CE loss"] / math.log(2) * record[VAL + "tokens"] / record[VAL + "bytes"],
        rel=1e-6)


@pytest.mark.slow
def test_two_ranks_score_the_same_validation_set(sample, eval_runs, data_dir,
                                                 tmp_path_factory) -> None:
    one = get(eval_runs, data_dir, tmp_path_factory, "micro2")
    two = get(eval_runs, data_dir, tmp_path_factory, "fsdp2", "dist=fsdp",
              "dist.nproc_per_node=2", "train.micro_batch_size=2", ranks=2)
    assert_same_eval(one, two)


@pytest.mark.slow
def test_downstream_metrics_in_metrics_file(sample, eval_runs, data_dir, tmp_path_factory) -> None:
    pytest.importorskip("olmo_eval")
    run_dir = get(eval_runs, data_dir, tmp_path_factory, "downstream", "eval=downstream",
                  "eval.tasks=[arc_easy,piqa]", "eval.max_examples=8")
    record = evals(run_dir)[0]
    for task in ("arc_easy", "piqa"):
        keys = [k for k in record if k.startswith(f"eval/downstream/{task} (")]
        assert keys, sorted(record)
        assert all(math.isfinite(record[k]) for k in keys), {k: record[k] for k in keys}
    assert 0.0 <= record["eval/downstream/arc_easy (accuracy)"] <= 1.0
    assert "downstream 'arc_easy'" in (run_dir / "train.log").read_text()
    # ... and in the sweep report's row for this run (report.csv columns, the arms' other table)
    from olmo_exp.sweep.report import read_job

    extra = read_job(run_dir, 0, []).extra
    last = [r for r in evals(run_dir) if "eval/downstream/arc_easy (accuracy)" in r][-1]
    assert extra["eval/downstream/arc_easy (accuracy)"] == last["eval/downstream/arc_easy (accuracy)"]
    assert any(k.startswith("eval/downstream/piqa (") for k in extra)
