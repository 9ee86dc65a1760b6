"""The documentation cannot rot: the site builds with no warning, the README stays a tour, and every
shell command the docs show is run or checked, so a renamed verb, flag or config key breaks the suite
instead of the reader.

Each ```bash block of README.md and docs/*.md is split into commands. A command is

- **run** as written when the block is preceded by ``<!-- doc-test: run -->`` (cheap commands);
- **checked** otherwise when it is a raylm command (``raylm <verb>``, ``python jobs/<verb>.py``, also as
  the entrypoint of ``ray job submit ... -- python jobs/...``): raylm's own argument parser takes its
  arguments and ``load_config`` validates its config and overrides, exactly as the verb does before
  Ray starts. A path the docs invent (``/data/my_images``) does not exist here: the only config error
  accepted is "no such file or directory"; ``<...>`` placeholders become a plain word;
- **checked** for ``python benchmarks/<name>.py``: every ``--flag`` it passes is in that script's --help;
- **not run** for the programs listed in ``NOT_RUN`` (cluster tooling, HTTP clients against a
  server the reader started, installers), each with its reason. A program in no list fails the test,
  so a new kind of command in the docs needs a decision here.

Blocks preceded by ``<!-- doc-test: output -->`` hold ``$ command`` lines followed by what the command
prints; the command is run and its output compared line by line.
"""

from __future__ import annotations

import html
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

ROOT = REPO
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

NOT_RUN = {
    "bash": "setup.sh installs system packages; CI runs it before this suite",
    "pip": "installs into the reader's environment (or a scratch virtualenv's)",
    "curl": "talks to a server the reader started (the Serve tests send the same requests)",
    "printf": "part of a request body piped to curl",
    "base64": "part of a request body piped to curl",
    "ray": "Ray's cluster CLI (up, dashboard, job list/logs) against a real cluster; job submit's entrypoint is checked",
    "serve": "Ray Serve's CLI against a running cluster (tests/test_serve.py builds the same app)",
    "kubectl": "needs a Kubernetes cluster (the manifests are schema-checked by tests/test_cluster_configs.py)",
    "helm": "needs a Kubernetes cluster",
    "docker": "builds the cluster image (minutes, a registry)",
    "cd": "changes the reader's directory",
    "export": "sets the reader's environment",
    "tensorboard": "a long-running viewer",
    "mkdocs": "built by test_the_site_builds_with_no_warning",
}
RAY_LOGGER_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING|ERROR) \S+\.py:\d+ -- ")
RAYLM_VERB_SCRIPTS = {"train", "tune", "compress", "serve", "pipeline", "demo"}  # jobs/<verb>.py


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    marker: str  # "", "run" or "output"
    text: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(kind: str = "bash") -> list[Block]:
    """Fenced blocks whose info string is ``kind`` ("" for a bare fence), with the marker comment above."""
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").split("\n")
        i = 0
        while i < len(lines):
            fence = lines[i].strip()
            if fence.startswith("```"):
                j = i + 1
                while lines[j].strip() != "```":
                    j += 1
                if fence[3:].strip() == kind:
                    before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
                    marker = m.group(1) if (m := re.fullmatch(r"<!-- doc-test: (\w+) -->", before)) else ""
                    found.append(Block(page, i + 1, marker, "\n".join(lines[i + 1:j])))
                i = j
            i += 1
    return found


def commands(block_text: str) -> list[list[str]]:
    """Shell words of each simple command: continuations joined, comments dropped, split at && | ;."""
    text = re.sub(r"\\\n\s*", " ", block_text)
    text = re.sub(r"<[^<>\n]*>", "placeholder", text)  # <run>, <best_checkpoint printed by train>
    out = []
    for line in text.split("\n"):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenting = True  # shlex's `#` comments start at a word boundary, as in the shell
        words: list[str] = []
        for token in lexer:
            if token in {"&&", "||", "|", ";", "&"}:
                out.append(words)
                words = []
            elif token not in {"{", "}"}:
                words.append(token)
        out.append(words)
    return [w for w in out if w]


def strip_env(words: list[str]) -> list[str]:
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        words = words[1:]
    return words


def raylm_argv(words: list[str]) -> list[str] | None:
    """``raylm <verb> ...`` / ``python jobs/<verb>.py ...`` as raylm.cli's argv, else None."""
    if words[0] == "raylm":
        return words[1:]
    if words[0] in {"python", "python3"} and len(words) > 1:
        script = Path(words[1])
        if script.parent == Path("jobs") and script.stem in RAYLM_VERB_SCRIPTS:
            return [script.stem, *words[2:]]
    return None


def check_raylm(argv: list[str]) -> str | None:
    """None if raylm's parser and config validation accept ``argv``, else the reason."""
    from raylm.cli import build_parser
    from raylm.config import ConfigError, load_config

    argv = [w for w in argv if not re.fullmatch(r"\[[\w-]+\]", w)]  # `raylm runs [storage_path]`
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        return f"raylm's argument parser refused {argv}"
    if not hasattr(args, "overrides"):
        return None
    config = args.config and str(ROOT / args.config)
    if config and not Path(config).is_file():
        config = None  # a file the page has the reader write (e.g. serve.yaml from a yaml block): overrides only
    try:
        if args.verb == "serve":  # serve reads only the serve section (of --config or the defaults)
            from raylm.serve import load_serve_config

            load_serve_config(config, list(args.overrides))
        elif args.verb == "compress" and not config:  # the checkpoint's own config: a training config
            load_config(str(ROOT / "jobs/configs/image.yaml"), list(args.overrides))
        else:
            load_config(config, list(args.overrides))
    except ConfigError as err:
        problems = [line for line in str(err).splitlines()[1:] if line.strip()]
        if not problems or any("no such file or directory" not in line for line in problems):
            return str(err)
    return None


def check_benchmark(words: list[str]) -> str | None:
    script = ROOT / words[1]
    if not script.is_file():
        return f"no such benchmark: {words[1]}"
    help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                               cwd=ROOT, timeout=120, env=_env()).stdout
    missing = [w.split("=")[0] for w in words[2:] if w.startswith("--") and w.split("=")[0] not in help_text]
    return f"{words[1]} has no option {missing}" if missing else None


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def checked_commands() -> list[tuple[Block, list[str]]]:
    return [(b, c) for b in blocks() if b.marker != "run" for c in commands(b.text)]


def test_the_docs_show_commands_to_check():
    """The extraction itself works: the README's verbs and a ray job submit entrypoint are found."""
    found = [raylm_argv(strip_env(c)) for _, c in checked_commands()]
    verbs = {argv[0] for argv in found if argv}
    assert {"train", "tune", "compress", "serve", "pipeline", "data", "runs", "report"} <= verbs
    submit = [c for _, c in checked_commands() if c[:3] == ["ray", "job", "submit"] or c[1:4] == ["ray", "job", "submit"]]
    assert submit and all("--" in c for c in submit)


def test_every_docs_command_is_run_checked_or_declared_not_runnable():
    failures = []
    for block, words in checked_commands():
        if re.match(r"[A-Z_]+=\$\(", words[0]):
            continue  # KEY=$(kubectl get secret ...): a shell variable from a cluster's secret
        words = strip_env(words)
        if words[:3] == ["ray", "job", "submit"]:
            words = words[words.index("--") + 1:] if "--" in words else words
        if (argv := raylm_argv(words)) is not None:
            reason = check_raylm(argv)
        elif words[0] in {"python", "python3"} and len(words) > 1 and words[1].startswith("benchmarks/"):
            reason = check_benchmark(words)
        elif words[1:3] == ["-m", "pytest"] or words[1:3] == ["-m", "venv"] or Path(words[0]).name in NOT_RUN:
            reason = None  # the suite itself (any interpreter, e.g. a scratch virtualenv's), or not run
        else:
            reason = f"no rule for `{words[0]}`: run it, check it, or add it to NOT_RUN with a reason"
        if reason:
            failures.append(f"{block}: {' '.join(words)}\n    {reason}")
    assert not failures, "docs commands that would fail:\n" + "\n".join(failures)


def test_a_renamed_config_key_in_the_docs_is_caught():
    """The checker is not vacuous: a typo of a real key, a removed flag and an unknown verb are refused."""
    assert check_raylm(["train", "--config", "jobs/configs/image.yaml", "train.epoch=3"])
    assert check_raylm(["serve", "--artefact", "x"])
    assert check_raylm(["fit", "--config", "jobs/configs/image.yaml"])
    assert check_raylm(["train", "--config", "jobs/configs/image.yaml", "data.path=/no/such/dir"]) is None


REPO_PATH = re.compile(r"(?<![\w/.-])((?:tests|benchmarks|jobs|raylm|cluster)/[\w/.-]*\.(?:py|yaml|json|md))")


def test_every_repository_file_the_docs_name_exists():
    """A reader sent to `tests/test_storage.py` found no such file (16 such paths after the tests moved
    under tests/unit and tests/integration): every path into the repository that the docs name exists."""
    pages = PAGES + sorted((ROOT / "cluster").rglob("*.md")) + sorted((ROOT / "cluster").rglob("*.yaml"))
    missing = [f"{page.relative_to(ROOT)}: {path}" for page in pages for path in REPO_PATH.findall(page.read_text())
               if "<" not in path and "*" not in path and not (ROOT / path).exists()]
    assert not missing, "paths the docs name that are not in the repository:\n" + "\n".join(sorted(set(missing)))


@pytest.mark.integration
@pytest.mark.parametrize("block", [b for b in blocks() if b.marker == "run"], ids=str)
def test_runnable_docs_blocks_run_as_written(block, tmp_path):
    """Blocks marked run execute in a scratch directory with the repository's jobs/ beside them."""
    (tmp_path / "jobs").symlink_to(ROOT / "jobs")
    ray_tmp = tempfile.mkdtemp(prefix="rdoc")  # short: Ray's socket paths must fit in 107 bytes
    env = {**_env(), "RAY_TMPDIR": ray_tmp, "HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, f"{block} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    ray_lines = [line for line in (done.stdout + done.stderr).splitlines() if RAY_LOGGER_LINE.match(line)]
    assert not ray_lines, f"{block}: Ray's own log lines reached the console:\n" + "\n".join(ray_lines[:5])
    written = list(tmp_path.glob("*.png"))  # what the command wrote where it was run
    for png in written:  # a command that promises a picture writes one that decodes
        import cv2

        image = cv2.imread(str(png))
        assert image is not None and image.shape[0] > 32 and image.shape[1] > 32, png


@pytest.mark.parametrize("block", [b for b in blocks("") if b.marker == "output"], ids=str)
def test_shown_output_is_what_the_command_prints(block, tmp_path):
    lines = block.text.split("\n")
    assert lines[0].startswith("$ ")
    done = subprocess.run(lines[0][2:], shell=True, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    printed = (done.stdout + done.stderr).strip().split("\n")
    assert printed == lines[1:], f"{block}: the docs show\n" + "\n".join(lines[1:]) + "\nbut it printed\n" + "\n".join(printed)


def test_the_readme_is_a_tour():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").split("\n")) <= 250


def test_the_site_builds_with_no_warning(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    warnings = [line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert done.returncode == 0 and not warnings, done.stderr[-3000:]
    home = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", home))  # code is highlighted span by span
    assert "bash setup.sh && python3 -m pytest -q" in text  # the home page is the README
    assert 'href="storage/"' in home  # its docs/ links point at the site's pages
