"""Every command in README.md and docs/*.md works as shown.

Commands are found, not registered: every ``python``/``python3``/``torchrun`` command in a code
block (```bash blocks whole; ``$ `` lines of other blocks) or in inline code, on every page, so a
page added later is checked without touching this file. A command of a form this file cannot check
fails with the page, the line and what to do.

- ``python run.py ARGS``, ``python -m olmo_exp ARGS``, ``torchrun OPTS run.py ARGS``: the command
  line's override checks, then composed and validated as the run would be; with ``-m``, every point
  of the sweep (and the sweep's own checks: baseline, budget match, launcher layout), nothing run.
  A path under ``/path/to/`` stands for a file of the reader's: the check stops at its absence.
  A command followed by ``error: ...`` lines in its block must fail with that line (``...``/``…``
  in the shown line stand for any text).
- ``python -m olmo_exp.X ARGS``: ``--help`` answers (exit 0, a usage line).
- ``python -m pytest ARGS``: the paths and markers it names exist. ``python -c CODE``: compiles.
  ``python3 -m venv DIR``: the install line.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PROGRAMS = ("python", "python3", "torchrun")
SHELL_BLOCKS = ("bash", "sh", "shell")


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str
    expected_error: str | None = None

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def _words(text: str) -> list[str]:
    """The command's words as the shell splits them, from its program on (no env assignments, no
    ``timeout``); one command of a ``&&``/``;``/``|`` chain per call of :func:`commands_in`."""
    words = shlex.split(text, comments=True)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]
    if words[:1] == ["timeout"]:
        words = words[1:]
        while words and words[0].startswith("-"):
            words = words[2:] if words[0] in ("-s", "-k", "--signal", "--kill-after") else words[1:]
        words = words[1:]  # the duration
    return words


def _split_chain(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    parts, current = [], []
    for token in lexer:
        if token in OPERATORS:
            parts.append(current)
            current = []
        else:
            current.append(token)
    parts.append(current)
    return [shlex.join(p) for p in parts if p]


def _is_command(text: str) -> bool:
    try:
        return any(_words(part)[:1] and _words(part)[0] in PROGRAMS for part in _split_chain(text))
    except ValueError:  # unbalanced quotes: not a command (or a broken one, see below)
        return text.split()[0] in PROGRAMS if text.split() else False


OPERATORS = ("&&", "||", ";", "|", "&")


def _strip_comment(line: str) -> str:
    """The command without a trailing ``# comment`` (outside quotes), operators kept."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return " ".join(t if t in OPERATORS else shlex.quote(t) for t in lexer)
    except ValueError:
        return line


def commands_in(path: Path) -> list[Command]:
    page = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
    text = path.read_text()
    found: list[Command] = []
    lines = text.splitlines()
    i = 0
    prose: list[tuple[int, str]] = []
    while i < len(lines):
        fence = re.match(r"^\s*```(\w*)", lines[i])
        if not fence:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        lang, start = fence[1], i + 1
        i += 1
        block: list[tuple[int, str]] = []
        while i < len(lines) and not re.match(r"^\s*```", lines[i]):
            block.append((i + 1, lines[i]))
            i += 1
        i += 1
        found += _block_commands(page, lang, block, start)
    # Inline code in prose (a span may wrap onto the next line).
    joined = "\n".join(line for _, line in prose)
    numbers = [n for n, _ in prose]
    for m in re.finditer(r"`([^`\n]+(?:\n[^`\n]+)?)`", joined):
        span = m[1].replace("\n", " ").strip()
        if span.split() and (span.split()[0] in PROGRAMS
                             or re.match(r"^[A-Z_]+=\S+ (python|torchrun)", span)):
            found.append(Command(page, numbers[joined.count("\n", 0, m.start())], span))
    return found


def _block_commands(page: str, lang: str, block: list[tuple[int, str]], start: int) -> list[Command]:
    # Join backslash continuations.
    logical: list[tuple[int, str]] = []
    for n, line in block:
        if logical and logical[-1][1].endswith("\\"):
            logical[-1] = (logical[-1][0], logical[-1][1][:-1].rstrip() + " " + line.strip())
        else:
            logical.append((n, line))
    commands: list[Command] = []
    shell = lang in SHELL_BLOCKS
    for k, (n, line) in enumerate(logical):
        stripped = line.strip()
        prompt = stripped.startswith("$ ")
        if prompt:
            stripped = stripped[2:]
        if not (shell or prompt) or stripped.startswith("#") or not _is_command(stripped):
            continue
        expected = None
        if prompt:  # the output shown after it, up to the next prompt
            output = []
            for _, later in logical[k + 1:]:
                if later.strip().startswith("$ "):
                    break
                output.append(later.strip())
            errors = [o for o in output if o.startswith("error:")]
            expected = errors[0] if errors else None
        commands.append(Command(page, n, _strip_comment(stripped), expected))
    return commands


ALL = [c for page in PAGES for c in commands_in(page)]


# -- checking one command ----------------------------------------------------------------------


class UnknownForm(Exception):
    pass


def _torchrun_host(words: list[str]):
    """The rank layout torchrun's options give the ranks; the words after the script."""
    from olmo_exp.config.topology import Host, LauncherEnv

    options: dict[str, str] = {}
    rest = list(words[1:])
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0).lstrip("-").replace("-", "_")
        if "=" in flag:
            flag, value = flag.split("=", 1)
        else:
            value = rest.pop(0)
        options[flag] = value
    if not rest or rest[0] != "run.py":
        raise UnknownForm("torchrun runs run.py here; a torchrun of anything else is not checked")
    nodes, local = int(options.get("nnodes", 1)), int(options.get("nproc_per_node", 1))
    return Host(launched=LauncherEnv("torchrun", nodes * local, local, nodes), gpus=0), rest[1:]


def run_errors(args: list[str], host=None) -> list[str]:
    """The one-line errors run.py would print for these arguments (none: it would start)."""
    from hydra._internal.utils import get_args_parser

    from olmo_exp.base.errors import ConfigError
    from olmo_exp.cli.overrides import check_argv

    parsed, rest = get_args_parser().parse_known_args(args)
    flags = [a for a in rest if a.startswith("-")]
    if flags:
        raise UnknownForm(f"run.py does not take {flags}")
    overrides = [*parsed.overrides, *rest]
    try:
        check_argv(args)
        if parsed.multirun:
            return _sweep_errors(overrides)
        _check_one(overrides, host)
    except ConfigError as e:
        return [f"error: {e}"]
    return []


def _check_one(overrides: list[str], host) -> None:
    from conftest import CPU_HOST
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from olmo_exp.config.compose import compose, run_config
    from olmo_exp.data.check import check_run
    from olmo_exp.runtime.run import check_launcher_mode

    cfg = compose(overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.RUN
    HydraConfig.instance().set_config(cfg)
    check_launcher_mode()
    check_run(run_config(cfg), host or CPU_HOST)


def _sweep_errors(overrides: list[str]) -> list[str]:
    """What ``run.py -m`` checks before any job starts: the sweep (baseline, budget match), then
    every point as its launcher validates it."""
    from conftest import CPU_HOST
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    from olmo_exp.base.errors import ConfigError
    from olmo_exp.config.compose import compose, run_config
    from olmo_exp.data.check import check_run
    from olmo_exp.sweep.callback import _check_sweep
    from olmo_exp.sweep.launcher import _shown_overrides, validate_for_layout
    from olmo_exp.sweep.report import expand_jobs

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = compose(fixed, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params) if cfg.hydra.sweeper.params else {}
    jobs = expand_jobs(params, overrides)
    with open_dict(cfg):
        cfg.hydra.overrides.task = overrides
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            _check_sweep(cfg)
    except SystemExit:
        return [line for line in stderr.getvalue().splitlines() if line.startswith("error:")]
    errors = []
    for num, job in enumerate(jobs):
        point = compose(job, return_hydra_config=True)
        launcher = point.hydra.runtime.choices["hydra/launcher"]
        try:
            config = run_config(point)
            if launcher in ("slurm", "local"):
                p = OmegaConf.to_container(point.hydra.launcher, resolve=True)
                validate_for_layout(config, nodes=int(p["nodes"]),
                                    tasks_per_node=int(p["tasks_per_node"]), kind=launcher,
                                    gpus_per_node=int(p.get("gpus_per_node") or 0))
            else:
                check_run(config, CPU_HOST)
        except ConfigError as e:
            errors.append(f"error: sweep point #{num} ({_shown_overrides(job, jobs)}): {e}")
    return errors


def _yours(error: str) -> bool:
    """The one-line error about a file that is the reader's (``/path/to/...``), which no check
    here can have."""
    return re.match(r"^error: [\w.]+='/path/to/[^']*' is invalid: an existing", error) is not None


@functools.cache
def module_help(module: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**__import__("os").environ,
                                                       "PYTHONPATH": str(REPO)})


def check(command: Command) -> None:
    parts = [p for p in _split_chain(command.text) if _words(p)[:1] and _words(p)[0] in PROGRAMS]
    for part in parts:
        words = _words(part)
        _check_words(command, words)


def _check_words(command: Command, words: list[str]) -> None:
    program, args = words[0], words[1:]
    host = None
    if program == "torchrun":
        host, args = _torchrun_host(words)
        program, args = "python", ["run.py", *args]
    if program == "python3" and args[:2] == ["-m", "venv"]:
        return  # the install line's virtual environment
    if program not in ("python", "python3"):
        raise UnknownForm(program)
    if args[:1] == ["run.py"] or args[:2] == ["-m", "olmo_exp"]:
        run_args = args[1:] if args[0] == "run.py" else args[2:]
        errors = [e for e in run_errors(run_args, host) if not _yours(e)]
        if command.expected_error is None:
            assert errors == [], f"{command}\n  fails: {errors}"
        else:
            pattern = ".*".join(re.escape(p) for p in re.split(r"\.\.\.|…", command.expected_error))
            assert any(re.fullmatch(pattern, e) for e in errors), (
                f"{command}\n  shown: {command.expected_error}\n  got: {errors}")
        return
    if args[:1] == ["-m"] and args[1].startswith("olmo_exp."):
        proc = module_help(args[1])
        assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (
            f"{command}\n  python -m {args[1]} --help exited {proc.returncode}: "
            f"{proc.stdout[-500:]}{proc.stderr[-1500:]}")
        return
    if args[:2] == ["-m", "pytest"]:
        _check_pytest(command, args[2:])
        return
    if args[:1] == ["-c"]:
        compile(args[1], str(command), "exec")
        return
    raise UnknownForm(" ".join(words))


def _check_pytest(command: Command, args: list[str]) -> None:
    import tomllib

    markers = {m.split(":")[0].strip() for m in tomllib.loads((REPO / "pyproject.toml").read_text())
               ["tool"]["pytest"]["ini_options"].get("markers", [])}
    it = iter(args)
    for arg in it:
        if arg == "-m":
            words = set(re.findall(r"\w+", next(it))) - {"not", "and", "or"}
            assert words <= markers, f"{command}: unknown marker(s) {words - markers}"
        elif arg in ("-k", "-p"):
            next(it)
        elif not arg.startswith("-"):
            assert (REPO / arg.split("::")[0]).exists(), f"{command}: no {arg}"


# -- the tests ---------------------------------------------------------------------------------


def _is_cheap(command: Command) -> bool:
    """The README's single runs (one config composed each): the fast lane. The pages' commands,
    sweeps (every point) and modules (a subprocess each): slow, as they add up."""
    if command.page != "README.md":
        return False
    for part in _split_chain(command.text):
        words = _words(part)
        if words[:2] == ["python", "-m"] and words[2:3] and words[2].startswith("olmo_exp."):
            return False
        if words[:1] == ["torchrun"] or "run.py" in words[:2] or words[1:3] == ["-m", "olmo_exp"]:
            args = words[words.index("run.py") + 1:] if "run.py" in words else words[3:]
            if "-m" in args or "--multirun" in args:
                return False
    return True


@pytest.mark.parametrize("command", [pytest.param(c, id=str(c)[:120], marks=() if _is_cheap(c)
                                                   else pytest.mark.slow) for c in ALL])
def test_every_command_in_the_docs_works_as_shown(command: Command) -> None:
    try:
        check(command)
    except UnknownForm as e:
        pytest.fail(f"{command}\n  a command of a form tests/test_docs.py cannot check ({e}): "
                    "write it as one of the forms in the module docstring, or teach check() it")


def test_commands_are_found_on_every_page() -> None:
    """The extraction finds the commands each kind of page shows (a broken extractor checks
    nothing): the README's install line and examples, inline ones, ``$`` lines with errors."""
    pages = {c.page for c in ALL}
    assert "README.md" in pages and len(pages) >= 6, pages
    texts = [c.text for c in ALL]
    assert any(t.startswith("python3 -m venv") and t.endswith("python run.py") for t in texts)
    assert sum(c.page == "README.md" for c in ALL) >= 10
    assert any(c.expected_error for c in ALL)
    assert any(t.startswith("torchrun") for t in texts)


def test_the_checker_fails_what_is_wrong(tmp_path: Path) -> None:
    """A misspelt key, an invalid value, an unknown form and a wrong expected error all fail."""
    page = tmp_path / "page.md"
    page.write_text(
        "Run `python run.py model.n_kv_heads=5` or\n"
        "```bash\npython run.py trian.max_steps=3   # a typo\nnode run.py\n"
        "python -m olmo_exp.nope\n```\n"
        "```\n$ python run.py model.n_kv_heads=2\nerror: model.n_kv_heads=2 is invalid: ...\n```\n")
    found = commands_in(page)
    assert [c.text for c in found][:3] == ["python run.py trian.max_steps=3",
                                         "python -m olmo_exp.nope",
                                         "python run.py model.n_kv_heads=2"]
    assert found[2].expected_error == "error: model.n_kv_heads=2 is invalid: ..."
    assert found[3].text == "python run.py model.n_kv_heads=5" and found[3].line == 1
    for command in found:
        with pytest.raises((AssertionError, UnknownForm)):
            check(command)
    with pytest.raises(UnknownForm):
        check(Command("p", 1, "python tools/other.py"))
    with pytest.raises(UnknownForm):
        check(Command("p", 1, "torchrun --nproc_per_node 2 other.py"))


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}


def test_every_docs_page_is_linked_from_the_readme_and_every_link_resolves() -> None:
    readme = (REPO / "README.md").read_text()
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"](docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s]*\.md)?(?:#([^)\s]*))?\)", page.read_text()):
            linked = (page.parent / target) if target else page
            assert linked.exists(), f"{page.name} links {target}: missing"
            if anchor:
                assert anchor in _anchors(linked), f"{page.name} links {target}#{anchor}: no such heading"


def test_the_readme_is_a_landing_page() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    first = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)[0].splitlines()
    assert first[0].endswith("&& python run.py") and first[1] == "OMP_NUM_THREADS=2 python -m pytest -q"


def test_the_config_groups_table_names_every_option_and_key() -> None:
    """docs/configuration.md's table of groups: every option file of each group and every key of
    its dataclass (a key or option added without a word in the docs fails here)."""
    import dataclasses
    import typing

    from olmo_exp.config.run import RunConfig

    text = (REPO / "docs" / "configuration.md").read_text().split("## Config groups", 1)[1]
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| `") and len(cells) == 4:
            rows[cells[0].split()[0].strip("`")] = cells
    hints = typing.get_type_hints(RunConfig)
    nodes = {name: hints[name] for name in hints if dataclasses.is_dataclass(hints[name])}
    nodes["model/lws"] = typing.get_type_hints(nodes["model"])["lws"]
    for name, cls in nodes.items():
        assert name in rows, f"docs/configuration.md: no row for {name}"
        listed = set(re.findall(r"\w+", rows[name][3]))
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields <= listed, f"docs/configuration.md, {name}: keys {sorted(fields - listed)} missing"
        options = {p.stem for p in (REPO / "conf" / name).glob("*.yaml")}
        shown = set(re.findall(r"`(\w+)`", rows[name][1]))
        assert options <= shown, f"docs/configuration.md, {name}: options {sorted(options - shown)} missing"
