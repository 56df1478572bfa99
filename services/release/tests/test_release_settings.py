"""Where the release service finds dataset files: the variables the Helm chart sets work."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiban_common.settings import load_settings
from kiban_release.settings import ReleaseSettings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("KIBAN_FILES_DIR", "KIBAN_RELEASE__FILES_DIR", "KIBAN_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KIBAN_DATABASE_URL", f"sqlite:///{tmp_path}/release.db")
    monkeypatch.setenv("KIBAN_BUS", "memory")
    monkeypatch.setenv("KIBAN_STATE_DIR", str(tmp_path / "state"))
    return monkeypatch


def test_files_dir_defaults_to_the_state_directory(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = load_settings(ReleaseSettings)
    assert settings.files_dir == (tmp_path / "state" / "files").resolve()


def test_kiban_files_dir_as_the_helm_chart_and_the_anonymizer_use_it_is_accepted(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("KIBAN_FILES_DIR", str(tmp_path / "shared"))
    settings = load_settings(ReleaseSettings)
    assert settings.files_dir == (tmp_path / "shared").resolve()


def test_the_release_specific_variable_wins_over_the_shared_one(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("KIBAN_FILES_DIR", str(tmp_path / "shared"))
    env.setenv("KIBAN_RELEASE__FILES_DIR", str(tmp_path / "own"))
    settings = load_settings(ReleaseSettings)
    assert settings.files_dir == (tmp_path / "own").resolve()
