"""Multipart uploads, streamed to a private temp folder with a size cap enforced while reading.

The file part goes to ``<upload_dir>/upload-<random>`` (the client's file name is kept only as a
label, never as a path); the form fields are kept in memory (small, capped). On any error,
including a client that disconnects mid-upload, the partial file is removed before the error
propagates; on success the caller removes it (:meth:`Upload.remove`).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from whisper_ft.serve.errors import ApiError, ClientGone

MAX_FIELD_BYTES = 64 * 1024  # a prompt is at most a few hundred tokens
MAX_FIELDS = 64


def private_upload_dir() -> Path:
    """A fresh temp folder only this user can read (mkdtemp creates it 0700)."""
    path = Path(tempfile.mkdtemp(prefix="whisper-ft-serve-"))
    os.chmod(path, 0o700)
    return path


@dataclass
class Upload:
    fields: dict[str, list[str]] = field(default_factory=dict)
    file_path: Path | None = None
    file_name: str | None = None  # as the client sent it: a label only
    file_bytes: int = 0

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None

    def get_list(self, *names: str) -> list[str]:
        return [v for n in names for v in self.fields.get(n, [])]

    def remove(self) -> None:
        if self.file_path is not None:
            self.file_path.unlink(missing_ok=True)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"the upload is larger than this server's limit of {max_bytes / 1e6:g} MB "
                         "(send a shorter or compressed file, or start the server with a higher --max_upload_mb)",
                    param="file", code="file_too_large")


def _disposition(value: str) -> tuple[str | None, str | None]:
    from python_multipart.multipart import parse_options_header

    _, params = parse_options_header(value)
    name, filename = params.get(b"name"), params.get(b"filename")
    return (name.decode("utf-8", "replace") if name is not None else None,
            filename.decode("utf-8", "replace") if filename is not None else None)


async def _chunks(request, stall_seconds: float | None):
    """The body's chunks; a client that sends nothing for ``stall_seconds`` gets 408."""
    import asyncio

    stream = request.stream().__aiter__()
    while True:
        try:
            yield await asyncio.wait_for(stream.__anext__(), stall_seconds)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError as exc:
            raise ApiError(408, f"the upload stalled: nothing arrived for {stall_seconds:g} s (send the file again)",
                           param="file", code="upload_timeout") from exc


async def read_multipart(request, upload_dir: Path, max_bytes: int, file_field: str = "file", *,
                         stall_seconds: float | None = None) -> Upload:
    """Parse a ``multipart/form-data`` request body as it streams in (see the module docstring)."""
    from python_multipart.multipart import MultipartParser, parse_options_header
    from starlette.requests import ClientDisconnect

    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise ApiError(400, "send the audio as multipart/form-data with a 'file' field "
                            "(as the OpenAI clients do)", param="file", code="invalid_content_type")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MAX_FIELD_BYTES * 4:
        raise _too_large(max_bytes)
    upload = Upload()
    state: dict = {"header_field": b"", "header_value": b"", "headers": {}, "name": None, "filename": None,
                   "value": bytearray(), "handle": None}

    def on_part_begin():
        state.update(headers={}, name=None, filename=None, value=bytearray(), handle=None)

    def on_header_field(data, start, end):
        state["header_field"] += data[start:end]

    def on_header_value(data, start, end):
        state["header_value"] += data[start:end]

    def on_header_end():
        state["headers"][state["header_field"].decode("latin-1").lower()] = state["header_value"].decode("latin-1")
        state["header_field"], state["header_value"] = b"", b""

    def on_headers_finished():
        name, filename = _disposition(state["headers"].get("content-disposition", ""))
        state["name"], state["filename"] = name, filename
        if name == file_field and filename is not None:
            if upload.file_path is not None:
                raise ApiError(400, "send exactly one 'file'", param="file", code="invalid_value")
            upload.file_name = filename
            upload.file_path = upload_dir / f"upload-{uuid.uuid4().hex}"
            state["handle"] = open(upload.file_path, "wb")  # noqa: SIM115 - closed in on_part_end / finally

    def on_part_data(data, start, end):
        if state["handle"] is not None:
            upload.file_bytes += end - start
            if upload.file_bytes > max_bytes:
                raise _too_large(max_bytes)
            state["handle"].write(data[start:end])
        else:
            state["value"] += data[start:end]
            if len(state["value"]) > MAX_FIELD_BYTES:
                raise ApiError(400, f"form field {state['name']!r} is longer than {MAX_FIELD_BYTES} bytes",
                               param=state["name"], code="invalid_value")

    def on_part_end():
        if state["handle"] is not None:
            state["handle"].close()
            state["handle"] = None
        elif state["name"] is not None:
            if sum(len(v) for v in upload.fields.values()) >= MAX_FIELDS:
                raise ApiError(400, f"more than {MAX_FIELDS} form fields", code="invalid_value")
            upload.fields.setdefault(state["name"], []).append(state["value"].decode("utf-8", "replace"))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    })
    received = 0
    try:
        async for chunk in _chunks(request, stall_seconds):
            received += len(chunk)
            if received > max_bytes + MAX_FIELD_BYTES * 4:
                raise _too_large(max_bytes)
            parser.write(chunk)
        parser.finalize()
    except ClientDisconnect as exc:
        upload.remove()
        raise ClientGone() from exc
    except (ApiError, BaseException) as exc:  # our own errors, and a cancelled read (--upload_timeout)
        upload.remove()
        if isinstance(exc, (ApiError, asyncio.CancelledError)) or not isinstance(exc, Exception):
            raise
        raise ApiError(400, f"malformed multipart/form-data body ({type(exc).__name__})", param="file",
                       code="invalid_multipart") from exc
    finally:
        if state["handle"] is not None:
            state["handle"].close()
    return upload
