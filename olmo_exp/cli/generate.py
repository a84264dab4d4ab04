"""``python -m olmo_exp.generate RUN_DIR "prompt" [--max-new-tokens N] [--temperature T]
[--seed S] [--step N]``: text from a checkpoint, sampled as the run samples ``generations.jsonl``
(the same decoding loop; the run seeds each sample with its step, which is the default here, so
the run's last sample comes back for its prompt and temperature).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from olmo_exp.base.errors import ConfigError


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m olmo_exp.generate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("prompt", nargs="?", default=None,
                        help="default: the run's generate.prompt")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="default: the run's generate.max_new_tokens")
    parser.add_argument("--temperature", type=float, default=None,
                        help="0 = greedy; default: the run's generate.temperature")
    parser.add_argument("--seed", type=int, default=None, help="default: the checkpoint's step")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    return parser.parse_args(argv)


def generate_text(run_dir: str | Path, prompt: str | None = None, *, max_new_tokens: int | None = None,
                  temperature: float | None = None, seed: int | None = None,
                  step: int | None = None, device: str | None = None) -> str:
    """The text after ``prompt`` (EOS dropped), as the run's generation callback decodes it."""
    import torch

    from olmo_exp.data.tokenizer import TextTokenizer
    from olmo_exp.runtime.generation import generate_ids
    from olmo_exp.runtime.saved_run import load_model, open_run

    run = open_run(run_dir, step)
    gen = run.config.generate
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ConfigError("--max-new-tokens", max_new_tokens, "must be >= 1")
    if temperature is not None and temperature < 0:
        raise ConfigError("--temperature", temperature, "must be >= 0 (0 = greedy)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    manifest = run.manifest
    tokenizer = TextTokenizer(manifest.tokenizer_path)
    model = load_model(run, device)
    new = generate_ids(model, tokenizer.encode(gen.prompt if prompt is None else prompt),
                       max_new_tokens=gen.max_new_tokens if max_new_tokens is None else max_new_tokens,
                       temperature=gen.temperature if temperature is None else temperature,
                       eos_token_id=manifest.eos_token_id,
                       seed=run.step if seed is None else seed, device=torch.device(device))
    if new and new[-1] == manifest.eos_token_id:
        new = new[:-1]
    return tokenizer.decode(new)


def entry(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        text = generate_text(args.run_dir, args.prompt, max_new_tokens=args.max_new_tokens,
                             temperature=args.temperature, seed=args.seed, step=args.step,
                             device=args.device)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(text)
