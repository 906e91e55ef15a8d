"""Model store: find, verify and (for users with internet) download weight files.

Resolution order for the folder: explicit argument > ``SMILE2PAY_MODELS`` >
``~/.smile2pay/models`` (see :meth:`Settings.model_dir_candidates`). A missing
or mismatching file raises :class:`ModelError` naming the file, the expected
sha256 and the folders searched.

Files without a digest in the manifest (InsightFace packs fetched from the
internet) are pinned on first download in ``pins.json`` beside them; later
loads compare against that pin, and a user may give the digest up front.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from .manifest import ModelSpec, get_pack, get_spec

log = logging.getLogger(__name__)

PINS_FILE = "pins.json"
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    cached = _HASH_CACHE.get(key)
    if cached:
        return cached
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    digest = h.hexdigest()
    _HASH_CACHE[key] = digest
    return digest


def _read_pins(folder: Path) -> dict[str, str]:
    try:
        return json.loads((folder / PINS_FILE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {folder / PINS_FILE}: {e}", code="MODEL_LOAD_FAILED") from e


def _write_pins(folder: Path, pins: dict[str, str]) -> None:
    tmp = folder / (PINS_FILE + ".tmp")
    tmp.write_text(json.dumps(pins, indent=2, sort_keys=True))
    os.replace(tmp, folder / PINS_FILE)


def expected_digest(spec: ModelSpec, folder: Path) -> str | None:
    return spec.sha256 or _read_pins(folder).get(spec.file)


@dataclass(frozen=True)
class CheckResult:
    name: str
    file: str
    path: str | None
    present: bool
    sha256_ok: bool | None
    expected_sha256: str | None
    actual_sha256: str | None
    licence: str

    @property
    def ok(self) -> bool:
        return self.present and self.sha256_ok is not False

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["ok"] = self.ok
        return d


class ModelStore:
    """Resolves model names to verified file paths."""

    def __init__(self, folders: list[Path], verify: bool = True) -> None:
        self.folders = [Path(f).expanduser() for f in folders]
        self.verify = verify

    def _locate(self, spec: ModelSpec) -> Path | None:
        for folder in self.folders:
            candidate = folder / spec.file
            if candidate.is_file():
                return candidate
        return None

    def check(self, name: str) -> CheckResult:
        spec = get_spec(name)
        path = self._locate(spec)
        if path is None:
            return CheckResult(name, spec.file, None, False, None, spec.sha256, None, spec.licence)
        expected = expected_digest(spec, path.parent)
        actual = sha256_file(path)
        ok = None if expected is None else (actual == expected)
        return CheckResult(name, spec.file, str(path), True, ok, expected, actual, spec.licence)

    def _require(self, name: str):
        spec = get_spec(name)
        path = self._locate(spec)
        searched = [str(f) for f in self.folders]
        if path is None:
            raise ModelError(
                f"model file {spec.file!r} ({name}) not found; searched {searched}. "
                f"Set SMILE2PAY_MODELS to the folder holding it, or run 'smile2pay models download'.",
                code="MODEL_MISSING", model=name, file=spec.file, expected_sha256=spec.sha256,
                searched=searched)
        return spec, path, searched

    def _verify(self, name: str, spec, path: Path, searched: list[str], actual) -> None:
        """Raise MODEL_CHECKSUM_MISMATCH unless the digest ``actual()`` returns is the expected one."""
        if not self.verify:
            return
        expected = expected_digest(spec, path.parent)
        if expected is None:
            return
        got = actual()
        if got != expected:
            raise ModelError(
                f"model file {path} has sha256 {got}, expected {expected}; the file is corrupt "
                f"or a different model. Replace it with the file described in the model manifest.",
                code="MODEL_CHECKSUM_MISMATCH", model=name, file=str(path),
                expected_sha256=expected, actual_sha256=got, searched=searched)

    def path(self, name: str) -> Path:
        """Verified path of a model file, or a ModelError that says what is wrong and where we looked.
        To load a model, prefer :meth:`read`: the file could change between this check and a later read."""
        spec, path, searched = self._require(name)
        self._verify(name, spec, path, searched, lambda: sha256_file(path))
        return path

    def read(self, name: str) -> tuple[Path, bytes]:
        """(path, bytes) of a model file, read once: the sha256 is checked on the bytes returned, so the bytes
        a session is built from are the bytes that were checked (no second read of a file that could have
        been replaced in between)."""
        spec, path, searched = self._require(name)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelError(f"cannot read model file {path}: {e}", code="MODEL_LOAD_FAILED", model=name,
                             file=str(path)) from e
        self._verify(name, spec, path, searched, lambda: hashlib.sha256(data).hexdigest())
        return path, data

    def check_pack(self, pack: str) -> list[CheckResult]:
        return [self.check(n) for n in get_pack(pack).model_names()]


# ----------------------------------------------------------------------------- download

def download(names: list[str], dest: str | os.PathLike, *, digests: dict[str, str] | None = None,
             url: str | None = None, archive_sha256: str | None = None, timeout: float = 60.0, progress: bool = True) -> list[Path]:
    """Download model files into ``dest`` (for users with internet).

    Files are fetched from each spec's ``url`` (a zip archive is unpacked for its
    member). Every file is checked against the manifest digest, else a digest
    given in ``digests``, else the one pinned in ``dest/pins.json``; a file with
    none of these is pinned now (trust on first use) and logged. Nothing is
    written under its final name before it has been verified. ``url`` replaces the manifest's
    address (a mirror, or a ``file://`` archive prepared offline).
    """
    dest_dir = Path(dest).expanduser()
    dest_dir.mkdir(parents=True, exist_ok=True)
    digests = dict(digests or {})
    pins = _read_pins(dest_dir)
    by_url: dict[str, list[ModelSpec]] = {}
    for n in names:
        spec = get_spec(n)
        src = url or spec.url
        if not src:
            raise ModelError(f"model {n!r} has no download URL", code="MODEL_DOWNLOAD_FAILED", model=n)
        by_url.setdefault(src, []).append(spec)
    out: list[Path] = []
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".dl-") as tmp:
        for src, specs in by_url.items():
            fetched = Path(tmp) / Path(src.split("?")[0]).name
            _fetch(src, fetched, timeout=timeout, progress=progress)
            if fetched.suffix == ".zip" or (specs[0].archive and src == specs[0].url):
                if archive_sha256 and sha256_file(fetched) != archive_sha256:
                    raise ModelError(f"archive {src} failed its sha256 check", code="MODEL_CHECKSUM_MISMATCH",
                                     url=src, expected_sha256=archive_sha256, actual_sha256=sha256_file(fetched))
                members = _extract(fetched, [s.file for s in specs], Path(tmp))
            else:
                members = {specs[0].file: fetched}
            for spec in specs:
                src = members[spec.file]
                actual = sha256_file(src)
                expected = spec.sha256 or digests.get(spec.name) or digests.get(spec.file) or pins.get(spec.file)
                if expected is None:
                    log.warning("pinning %s at sha256 %s on first download (no digest known)", spec.file, actual)
                    pins[spec.file] = actual
                elif actual != expected:
                    raise ModelError(
                        f"downloaded {spec.file} from {src} has sha256 {actual}, expected {expected}",
                        code="MODEL_CHECKSUM_MISMATCH", file=spec.file, url=src,
                        expected_sha256=expected, actual_sha256=actual)
                elif not spec.sha256:
                    pins[spec.file] = expected
                final = dest_dir / spec.file
                shutil.move(str(src), final)
                out.append(final)
    _write_pins(dest_dir, pins)
    return out


def _fetch(url: str, path: Path, timeout: float, progress: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(path, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=path.name, leave=False)
            while True:
                block = r.read(1 << 20)
                if not block:
                    break
                f.write(block)
                if bar:
                    bar.update(len(block))
            if bar:
                bar.close()
    except (OSError, ValueError) as e:
        raise ModelError(f"download of {url} failed: {e}", code="MODEL_DOWNLOAD_FAILED", url=url) from e


def _extract(archive: Path, files: list[str], into: Path) -> dict[str, Path]:
    try:
        with zipfile.ZipFile(archive) as z:
            by_base = {Path(m).name: m for m in z.namelist() if not m.endswith("/")}
            out = {}
            for f in files:
                if f not in by_base:
                    raise ModelError(f"{f} is not in archive {archive.name}", code="MODEL_DOWNLOAD_FAILED",
                                     file=f, members=sorted(by_base))
                target = into / f
                with z.open(by_base[f]) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                out[f] = target
            return out
    except zipfile.BadZipFile as e:
        raise ModelError(f"{archive.name} is not a valid zip archive", code="MODEL_DOWNLOAD_FAILED") from e
