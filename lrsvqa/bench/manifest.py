"""The manifest of a benchmark run: what ran, with what, where, and how far it got.

``RUN_DIR/manifest.json`` (``manifest.shard-i-of-n.json`` per shard) is
rewritten atomically while the run goes. Its ``identity`` (model, revision and
the answerer's options and configs) must match on a resumed run, so one
answer file never mixes configurations.
"""

from __future__ import annotations

import getpass
import importlib.metadata
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lrsvqa.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "lrsvqa-bench-manifest/1"

_PACKAGES = ("lrsvqa", "torch", "transformers", "rasterio", "shapely", "numpy", "nltk")


def now() -> str:
    """The current time, ISO 8601 in UTC."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide a run's numbers, plus GDAL."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        import rasterio

        versions["GDAL"] = str(rasterio.__gdal_version__)
    except ImportError:  # pragma: no cover - rasterio is a dependency
        versions["GDAL"] = None
    versions["python"] = platform.python_version()
    return versions


def git_state(cwd: Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout at ``cwd``, or None (never raises)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit or None, "dirty": bool(status.strip())}


def host_info() -> dict[str, Any]:
    """Host name, platform, CPU count and user."""
    try:
        user: str | None = getpass.getuser()
    except (KeyError, OSError):
        user = None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "user": user,
        "pid": os.getpid(),
    }


def environment_info() -> dict[str, Any]:
    """Everything about where a run happens: versions, git, host, command line."""
    return {
        "versions": package_versions(),
        "git": git_state(),
        "host": host_info(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "cwd": str(Path.cwd()),
    }


def read_manifest(path: Path) -> dict[str, Any]:
    """A manifest's content; DataError if it is not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the run manifest ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: a run manifest must be a JSON object")
    return data


def run_manifests(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every run manifest in ``run_dir`` (unsharded first, then shards by name)."""
    return [(p, read_manifest(p)) for p in sorted(run_dir.glob("manifest*.json"))]


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    # JSON round trip: tuples read back as lists
    if json.loads(json.dumps(old, default=str)) != json.loads(json.dumps(new, default=str)):
        return [f"{prefix.rstrip('.')}: {old!r} → {new!r}"]
    return []


def _wrote_nothing(run_dir: Path, manifest: dict[str, Any]) -> bool:
    """Whether the run a manifest describes left no answer and no error line (it failed
    before its first question, e.g. on a mistyped --model): nothing could be mixed."""
    names = [manifest.get("answers_file"), manifest.get("errors_file")]
    if not names[0]:
        return False  # not a runner's manifest: keep the check
    for name in filter(None, names):
        file = run_dir / str(name)
        if file.exists() and file.stat().st_size > 0:
            return False
    return True


def check_identity(run_dir: Path, key: str, identity: dict[str, Any]) -> None:
    """ConfigError if a manifest in ``run_dir`` records a different ``key`` section.

    ``key`` is ``"identity"`` (the options, checked before loading a model) or
    ``"config"`` (the answerer's full configuration, checked after). A manifest whose
    run wrote no line yet does not bind the folder.
    """
    for path, manifest in run_manifests(run_dir):
        recorded = manifest.get(key)
        if recorded is None or _wrote_nothing(run_dir, manifest):
            continue
        diffs = _differences(recorded, identity)
        if diffs:
            shown = "; ".join(diffs[:5])
            raise ConfigError(
                f"{run_dir} holds a run with other settings ({path.name}: {shown}); "
                "resuming would mix configurations in one answer file: use a new --out"
            )


def merged_question_ids(manifests: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    """The run's question ids in run order, from every manifest that lists them."""
    seen: dict[str, None] = {}
    for _, manifest in manifests:
        for qid in manifest.get("question_ids") or []:
            seen.setdefault(str(qid), None)
    return list(seen)
