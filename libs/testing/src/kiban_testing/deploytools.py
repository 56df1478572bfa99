"""Offline checks of the Helm chart need two things a fresh machine lacks: the `helm` binary and
skaffold's config schema. Both come from the Go module proxy (a registry CI reaches) and are
cached between runs in `$KIBAN_CACHE_DIR` (default `~/.cache/kiban`).

- helm v3.21.4 is built with `go install` (its go.mod has no replace directives): ~2-3 min once.
- skaffold's JSON schemas ship in its module zip (`docs-v2/content/en/schemas/`): `go mod
  download` of skaffold v2.13.2, the version that still parses `skaffold/v4beta11`.

`KIBAN_HELM` points at a helm binary to use instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from kiban_testing._errors import HarnessError

HELM_VERSION = "v3.21.4"
SKAFFOLD_MODULE = "github.com/GoogleContainerTools/skaffold/v2"
SKAFFOLD_VERSION = "v2.13.2"
SKAFFOLD_SCHEMA = "v4beta11"
_BUILD_TIMEOUT_S = 1200.0
_lock = threading.Lock()


def cache_dir() -> Path:
    root = os.environ.get("KIBAN_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "kiban"


def helm_binary() -> Path:
    """A helm 3 binary: `$KIBAN_HELM`, else the cached build, else built now from the proxy."""
    override = os.environ.get("KIBAN_HELM")
    if override:
        return Path(override)
    target = cache_dir() / "bin" / f"helm-{HELM_VERSION}"
    with _lock:
        if target.exists():
            return target
        go = _require_go("helm")
        with tempfile.TemporaryDirectory() as gobin:
            _run(
                [
                    go,
                    "install",
                    "-ldflags",
                    f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
                    f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}",
                ],
                env={"GOBIN": gobin, "CGO_ENABLED": "0", "GOFLAGS": "-trimpath"},
                what=f"building helm {HELM_VERSION}",
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            shutil.copy2(Path(gobin) / "helm", partial)
            partial.replace(target)
    return target


def skaffold_schema(version: str = SKAFFOLD_SCHEMA) -> dict[str, object]:
    """skaffold's JSON schema for `apiVersion: skaffold/<version>`."""
    target = cache_dir() / f"skaffold-schema-{version}.json"
    with _lock:
        if not target.exists():
            go = _require_go("the skaffold schema")
            out = _run(
                [go, "mod", "download", "-json", f"{SKAFFOLD_MODULE}@{SKAFFOLD_VERSION}"],
                env={"GOFLAGS": "-mod=mod"},
                what=f"downloading skaffold {SKAFFOLD_VERSION}",
            )
            module_dir = Path(json.loads(out)["Dir"])
            source = module_dir / "docs-v2" / "content" / "en" / "schemas" / f"{version}.json"
            if not source.exists():
                raise HarnessError(f"skaffold {SKAFFOLD_VERSION} has no schema {version}")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    schema: dict[str, object] = json.loads(target.read_text())
    return schema


def _require_go(purpose: str) -> str:
    go = shutil.which("go")
    if go is None:
        raise HarnessError(
            f"`go` is needed to fetch {purpose} from the Go module proxy; install Go >= 1.26 "
            "(https://go.dev/dl/) or set KIBAN_HELM to a helm 3 binary"
        )
    return go


def _run(command: list[str], *, env: dict[str, str], what: str) -> str:
    with tempfile.TemporaryDirectory() as work:
        result = subprocess.run(  # noqa: S603 - fixed commands built in this module
            command,
            cwd=work,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_BUILD_TIMEOUT_S,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-20:])
        raise HarnessError(f"{what} failed ({result.returncode}):\n{tail}")
    return result.stdout
