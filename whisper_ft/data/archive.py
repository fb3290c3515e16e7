"""Safe archive extraction and resumable, checksum-verified downloads.

Extraction streams the archive once, refuses any member that would land outside the target folder
(absolute paths, ``..``, links pointing outside, devices), writes into a temporary folder and only
renames it into place when everything succeeded, so a failure leaves no partial files behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from whisper_ft.core.errors import DataError


class UnsafeArchiveError(DataError):
    """An archive member would escape the extraction folder."""


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"refusing {archive}: member {name!r} has an absolute path")
    if ".." in path.parts:
        raise UnsafeArchiveError(f"refusing {archive}: member {name!r} escapes the target folder ('..')")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        # Symlink targets are relative to the link's folder; hard links to the archive root.
        resolved = (path.parent / target) if member.issym() else target
        if target.is_absolute() or _escapes(resolved):
            raise UnsafeArchiveError(
                f"refusing {archive}: link {name!r} points outside the target folder ({member.linkname!r})"
            )
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"refusing {archive}: member {name!r} is a device or fifo")


def _escapes(path: PurePosixPath) -> bool:
    depth = 0
    for part in path.parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in (".", ""):
            depth += 1
    return False


def safe_extract(archive: str | Path, dest: str | Path, strip: str | None = None) -> list[str]:
    """Extract a tar(.gz/.bz2/.xz) archive into ``dest`` (created), atomically.

    The archive is streamed into a temporary sibling folder; every member is checked before it is
    written. Only when all members are extracted is the content moved into ``dest``; on any error
    the temporary folder is removed and ``dest`` is untouched. Returns the top-level names moved.
    ``strip``: when given, only members under this top folder are kept, and that folder is removed
    from their paths.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"archive not found: {archive}")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".partial", dir=dest))
    ok = False
    try:
        try:
            with tarfile.open(archive, mode="r|*") as tar:
                for member in tar:
                    _check_member(member, archive)
                    if strip is not None:
                        parts = PurePosixPath(member.name).parts
                        if not parts or parts[0] != strip or len(parts) == 1:
                            continue
                        member.name = str(PurePosixPath(*parts[1:]))
                    # filter="data" is a second line of defence (Python >= 3.11.4 / 3.12).
                    if hasattr(tarfile, "data_filter"):
                        tar.extract(member, tmp, filter="data")
                    else:  # pragma: no cover - old Python
                        tar.extract(member, tmp)
        except UnsafeArchiveError:
            raise
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise DataError(f"cannot extract {archive}: {type(exc).__name__}: {exc} "
                            "(the file is corrupt or truncated: download it again)") from exc
        moved = []
        # Archives extracted in parallel into one dest share top folders (AISHELL: train/, dev/):
        # merging them must not interleave.
        with _MERGE_LOCK:
            for child in sorted(tmp.iterdir()):
                _replace(child, dest / child.name)
                moved.append(child.name)
        ok = True
        return moved
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok and created:
            shutil.rmtree(dest, ignore_errors=True)  # we made it and nothing valid went in


_MERGE_LOCK = threading.Lock()


def _replace(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``, merging into an existing folder (files in src win)."""
    if src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _replace(child, dst / child.name)
        return
    if dst.is_dir():
        shutil.rmtree(dst)
    os.replace(src, dst)


# --- downloads ---------------------------------------------------------------------------------

def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _verified_marker(path: Path) -> Path:
    return path.with_name(f".{path.name}.md5ok")


def is_verified(path: Path, md5: str) -> bool:
    """True when ``path`` has ``md5``; the result is cached in a marker (size + mtime + md5) so a
    re-run does not hash a 15 GB archive again."""
    if not path.is_file():
        return False
    st = path.stat()
    stamp = f"{st.st_size} {st.st_mtime_ns} {md5}"
    marker = _verified_marker(path)
    if marker.is_file() and marker.read_text().strip() == stamp:
        return True
    if md5sum(path) != md5:
        return False
    marker.write_text(stamp + "\n")
    return True


def download(urls: Sequence[str], dest: str | Path, md5: str | None = None, timeout: float = 30.0,
             retries: int = 2) -> Path:
    """Download the first URL that works to ``dest``, resuming a ``.part`` file with HTTP Range.

    Mirrors are tried in order (a later mirror resumes what an earlier one left). The result is
    checked against ``md5``; a mismatch deletes the download and raises :class:`DataError`.
    """
    from whisper_ft.core.console import log

    dest = Path(dest)
    if md5 and is_verified(dest, md5):
        log(f"{dest} already downloaded and verified")
        return dest
    if dest.is_file() and not md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.is_file():  # present but wrong checksum: start over
        dest.unlink()
    errors: list[str] = []
    for url in urls:
        for attempt in range(retries + 1):
            try:
                _fetch(url, part, timeout)
                errors.clear()
                break
            except (OSError, ValueError) as exc:  # URLError and socket errors are OSErrors
                errors.append(f"{url}: {exc}")
                if attempt < retries and _worth_retrying(exc):
                    time.sleep(1.0 + attempt)
                    continue
                break
        if not errors:
            break
    else:
        raise DataError(f"cannot download {dest.name} ({errors[0]}); offline? download it yourself and pass "
                        f"--filepath /path/to/{dest.name}")
    if md5:
        got = md5sum(part)
        if got != md5:
            part.unlink(missing_ok=True)
            raise DataError(f"checksum mismatch for {dest.name}: md5 {got}, expected {md5}; the download was "
                            "deleted, run again to download it afresh")
    os.replace(part, dest)
    if md5:
        is_verified(dest, md5)  # write the marker
    return dest


def _worth_retrying(exc: BaseException) -> bool:
    from urllib.error import HTTPError, URLError

    if isinstance(exc, HTTPError):
        return exc.code >= 500
    if isinstance(exc, URLError) and isinstance(exc.reason, ConnectionRefusedError):
        return False
    return isinstance(exc, (URLError, TimeoutError, ConnectionError))


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (Range request), or restart when the server ignores Range."""
    from urllib.error import HTTPError
    from urllib.request import Request, urlopen

    from whisper_ft.core.console import log, progress

    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "whisper-ft"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part is complete
            return
        raise
    with response:
        status = getattr(response, "status", 200)
        if have and status != 206:  # server ignored Range: restart from zero
            log(f"{url}: server does not resume; downloading from the start")
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        log(f"downloading {url}" + (f" (resuming at {have} bytes)" if have else ""))
        bar = progress(None, total=total, desc=part.name.removesuffix(".part"), unit="B")
        bar.update(have)
        with part.open("ab" if have else "wb") as f:
            while block := response.read(1 << 20):
                f.write(block)
                bar.update(len(block))
        bar.close()
        if total is not None and part.stat().st_size < total:
            raise ConnectionError(f"connection closed after {part.stat().st_size} of {total} bytes")
