"""Stage `sources`: copy the public datasets the DAG needs from the mirror (or their public origin) into
data/external/<dataset>/, verifying every file's sha256 against tasks/sources.yaml.

Pure core: `plan()` and `stage_file()`; I/O shell: `run()`. The Prefect flow lives in flows/sources.py.
"""

from __future__ import annotations

import logging
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from tasks.common import paths
from tasks.common.hashing import sha256_file
from tasks.common.io import atomic_copy, atomic_open, write_json

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).with_name("sources.yaml")


class SourceError(RuntimeError):
    """A dataset file is missing or corrupt; the message says how to fix it."""


@dataclass(frozen=True)
class SourceFile:
    dataset: str
    name: str
    sha256: str
    mirror_rel: str  # path under the mirror root
    origin_url: str
    licence: str


@cache
def load_manifest() -> dict[str, dict]:
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    for name, entry in data.items():
        missing = {"mirror", "licence", "origin", "files"} - set(entry)
        if missing:
            raise SourceError(f"{MANIFEST}: dataset {name!r} lacks {sorted(missing)}")
    return data


def plan(datasets: list[str]) -> list[SourceFile]:
    """Every file to stage for the named datasets, in manifest order."""
    manifest = load_manifest()
    out = []
    for ds in datasets:
        entry = manifest[ds]
        for fname, digest in entry["files"].items():
            out.append(
                SourceFile(ds, fname, digest, f"{entry['mirror']}/{fname}", entry["origin"] + fname, entry["licence"])
            )
    return out


def mirror_help(mirror: Path) -> str:
    return (
        f"public-data mirror {mirror} not found. Set {paths.MIRROR_ENV} to the folder that holds the datasets "
        f"(on the project machines: ../shared/data), or stage them from their public origins with internet: "
        f"`esvr data fetch --from-origin` (or `sources.allow_download: true` in params.yaml)."
    )


def stage_file(src: SourceFile, mirror: Path, dest_root: Path, allow_download: bool) -> str:
    """Make dest_root/<dataset>/<name> hold the verified bytes; returns how ('present'|'mirror'|'origin')."""
    dest = dest_root / src.dataset / src.name
    if dest.is_file() and sha256_file(dest) == src.sha256:
        return "present"
    local = mirror / src.mirror_rel
    if local.is_file():
        got = sha256_file(local)
        if got != src.sha256:
            raise SourceError(f"{local}: sha256 {got} != expected {src.sha256} (tasks/sources.yaml); the mirror copy is corrupt")
        atomic_copy(local, dest)
        how = "mirror"
    elif allow_download:
        log.info("downloading %s", src.origin_url)
        with atomic_open(dest, "wb") as out, urllib.request.urlopen(src.origin_url, timeout=60) as resp:  # noqa: S310
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        how = "origin"
    else:
        if not mirror.is_dir():
            raise SourceError(mirror_help(mirror))
        raise SourceError(f"{local}: missing from the mirror (needed by dataset {src.dataset!r}); {mirror_help(mirror)}")
    got = sha256_file(dest)
    if got != src.sha256:
        dest.unlink()
        raise SourceError(f"{src.origin_url}: sha256 {got} != expected {src.sha256}; refusing a changed upstream file")
    return how


def run(datasets: list[str], dest_root: Path | None = None, mirror: Path | None = None, allow_download: bool = False) -> dict:
    """Stage every file; write data/external/MANIFEST.json (what, where from, licence). Returns counts."""
    dest_root = dest_root or paths.EXTERNAL
    mirror = mirror or paths.mirror_dir()
    files = plan(datasets)
    if not mirror.is_dir() and not allow_download:
        raise SourceError(mirror_help(mirror))
    counts = {"present": 0, "mirror": 0, "origin": 0}
    for i, f in enumerate(files, 1):
        how = stage_file(f, mirror, dest_root, allow_download)
        counts[how] += 1
        log.info("[%d/%d] %s/%s: %s", i, len(files), f.dataset, f.name, how)
    write_json(
        dest_root / "MANIFEST.json",
        {f"{f.dataset}/{f.name}": {"sha256": f.sha256, "origin": f.origin_url, "licence": f.licence} for f in files},
    )
    return {"files": len(files), "datasets": len(datasets), **counts}
