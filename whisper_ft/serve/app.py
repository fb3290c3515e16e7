"""The FastAPI app: OpenAI's audio endpoints, ``/v1/models``, ``/health`` and the web page at ``/``.

Every error is OpenAI's error JSON with a clear message; nothing the client sends can take the
server down or see a traceback (unexpected errors are logged here and answered 500). Uploads are
streamed into a private temp folder (removed on shutdown) and each upload is removed as soon as
its request ends, however it ends.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import shutil
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from whisper_ft.core.audio import CHUNK_SECONDS
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.serve.engine import WHISPER_1, Engine, EngineSettings
from whisper_ft.serve.errors import ApiError, ClientGone, error_body
from whisper_ft.serve.responses import GRANULARITIES, RESPONSE_FORMATS, render
from whisper_ft.serve.uploads import private_upload_dir, read_multipart

logger = logging.getLogger("whisper_ft.serve")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_upload_mb: float = 25.0  # OpenAI's limit
    max_concurrency: int = 64  # requests queued or decoding (uploads complete); more get 429
    max_audio_seconds: float = 7200.0  # decoded length a request may cause (header, then while decoding)
    upload_timeout: float = 120.0  # seconds for a whole upload; a body that stalls STALL_SECONDS is dropped too
    allowed_hosts: tuple[str, ...] = ()  # Host headers answered besides the bound address (loopback names when local)
    cors_origins: tuple[str, ...] = ()  # web origins allowed to call the API from a browser (none: same-origin only)
    shutdown_seconds: float = 3.0  # on SIGTERM: in-flight requests get this long, then are cancelled
    log_level: str = "info"  # info: one access line per request; warning: problems only
    max_live_sessions: int = 4  # live caption WebSockets open at once (/v1/realtime); more are closed with 4429
    live_idle_timeout: float = 30.0  # seconds a live session may send nothing (with nothing left to decode)

    def __post_init__(self):
        if self.api_key is not None and not self.api_key.isascii():
            raise WhisperFtError("--api_key must be ASCII (an HTTP header cannot carry other characters): choose "
                                 "a key of letters, digits and punctuation")
        if self.log_level not in LOG_LEVELS:
            raise WhisperFtError(f"unknown --log_level {self.log_level!r}; choose one of: {', '.join(LOG_LEVELS)}")
        if self.max_concurrency < 1 or self.max_upload_mb <= 0 or self.max_audio_seconds <= 0 or self.upload_timeout <= 0:
            raise WhisperFtError("--max_concurrency must be at least 1, and --max_upload_mb, --max_audio_seconds "
                                 "and --upload_timeout above 0")
        if self.max_live_sessions < 0 or self.live_idle_timeout <= 0:
            raise WhisperFtError("--max_live_sessions must be 0 (no live captions) or more, and --live_idle_timeout "
                                 "above 0")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    @property
    def max_uploads(self) -> int:
        """Uploads in progress at once (they hold no decoding slot, but a connection and a temp file)."""
        return 2 * self.max_concurrency

    def host_names(self) -> frozenset[str] | None:
        """The ``Host`` names answered (None: any). A loopback server answers only loopback names,
        so a web page's DNS-rebound name cannot reach it."""
        names = {h.lower() for h in self.allowed_hosts}
        if "*" in names:
            return None
        if is_loopback(self.host):
            return frozenset(names | {"localhost", "127.0.0.1", "[::1]", self.host.lower()})
        if names:
            return frozenset(names | {self.host.lower()})
        return None


LOG_LEVELS = ("debug", "info", "warning", "error")
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" '
           'fill="#2563eb"/><path d="M6 16h3l3-8 4 16 4-12 3 4h3" stroke="#fff" stroke-width="2.5" fill="none" '
           'stroke-linejoin="round"/></svg>')
STALL_SECONDS = 15.0  # an upload that sends nothing for this long is dropped (408)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _page() -> str:
    return resources.files("whisper_ft.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(engine: Engine, settings: ServerSettings | None = None):
    """The app serving ``engine``'s models (its workers start and stop with the app)."""
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app):
        app.state.upload_dir = private_upload_dir()
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()
            shutil.rmtree(app.state.upload_dir, ignore_errors=True)

    app = FastAPI(title="whisper-ft", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.state.settings = settings
    app.state.in_flight = 0  # requests holding a decoding slot
    app.state.uploading = 0  # uploads in progress
    from whisper_ft.serve.guard import AccessLog, BrowserGuard

    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type"])
    app.add_middleware(BrowserGuard, hosts=settings.host_names(), cors_origins=settings.cors_origins)
    app.add_middleware(AccessLog)  # outermost: refused requests are logged too

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        code = "not_found" if exc.status_code == 404 else None
        message = (f"no route {request.method} {request.url.path} (see GET /v1/models, "
                   "POST /v1/audio/transcriptions, POST /v1/audio/translations)") if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(error_body(message, code=code), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        return JSONResponse(error_body(f"invalid request: {exc.errors()[:1]}"), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request, exc):
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body("internal server error (the server log has the details)", type="server_error"),
                            status_code=500)

    def check_key(request: Request) -> None:
        if not settings.api_key:
            return
        header = request.headers.get("authorization", "")
        if not _has_key(request, settings.api_key):
            what = "no API key given" if not header else "wrong API key"
            raise ApiError(401, f"{what}: send the server's --api_key as 'Authorization: Bearer KEY'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(_page())

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @app.get("/health")
    async def health(request: Request):
        if settings.api_key and not _has_key(request, settings.api_key):
            return {"status": "ok"}  # no model names or counts without the key
        return {"status": "ok", "models": engine.names(), "in_flight": app.state.in_flight,
                "uploading": app.state.uploading, "max_concurrency": settings.max_concurrency,
                "live_sessions": app.state.live_sessions, "max_live_sessions": settings.max_live_sessions,
                **engine.stats.to_dict()}

    @app.get("/v1/models")
    async def list_models(request: Request):
        check_key(request)
        alias = _model_card(engine.models[0], WHISPER_1)  # OpenAI's name, for clients that hard-code it
        return {"object": "list", "data": [alias] + [_model_card(m) for m in engine.models]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request):
        check_key(request)
        model = engine.find(model_id)
        if model is None:
            raise _unknown_model(model_id, engine)
        return _model_card(model, WHISPER_1 if model_id == WHISPER_1 else None)

    async def audio_endpoint(request: Request, task: str):
        check_key(request)
        if app.state.uploading >= settings.max_uploads:
            raise _busy(f"{settings.max_uploads} uploads in progress")
        app.state.uploading += 1
        upload, slot = None, False
        try:
            try:
                upload = await _read_upload(request, app.state.upload_dir, settings)
            except ClientGone:
                logger.info("client disconnected during its upload; nothing kept")
                return Response(status_code=400)
            finally:
                app.state.uploading -= 1
            options = _parse_options(upload, engine, task)
            loop = asyncio.get_running_loop()
            info = await loop.run_in_executor(None, _probe_upload, upload, settings)
            # a slot is taken only now: a client that uploads slowly (or not at all) holds none
            if app.state.in_flight >= settings.max_concurrency:
                raise _busy(f"{settings.max_concurrency} requests decoding or queued (--max_concurrency)")
            app.state.in_flight += 1
            slot = True
            if info is not None and info.duration <= CHUNK_SECONDS + 1:
                job = options["job"](await loop.run_in_executor(None, _load_upload, upload, settings))
                upload.remove()
            else:  # long or unknown length: decoded to samples in the model's worker, one at a time
                job = options["job"](None)
                job.load = lambda upload=upload: _load_upload(upload, settings)  # this request's, bound now
            if options["stream"]:  # each segment is sent as soon as it is decoded; the stream owns the slot now
                stream = _stream_events(engine, options["model"], job, upload, lambda: _release(app))
                upload, slot = None, False
                return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            decode_started = time.perf_counter()
            transcription = await _until_disconnected(request, engine.transcribe(options["model"], job), job)
            request.state.decode_seconds = time.perf_counter() - decode_started
            if transcription is not None:
                request.state.audio_seconds = transcription.duration
            if transcription is None:
                logger.info("client disconnected while its audio was decoded; decoding stopped")
                return Response(status_code=499)
            body, media_type = render(transcription, options["format"], task=task,
                                      granularities=options["granularities"])
            return Response(body, media_type=media_type)
        except ApiError:
            raise
        except WhisperFtError as exc:  # from decoding (or loading a long file in the worker)
            raise _decode_error(exc, upload) from exc
        except asyncio.CancelledError as exc:  # SIGTERM: uvicorn cancels what is left after --shutdown grace
            raise ApiError(503, "the server is shutting down: retry on another instance or after its restart",
                           type="server_error", code="shutting_down") from exc
        finally:
            if upload is not None:
                upload.remove()
            if slot:
                app.state.in_flight -= 1

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        return await audio_endpoint(request, "transcribe")

    @app.post("/v1/audio/translations")
    async def translations(request: Request):
        return await audio_endpoint(request, "translate")

    from whisper_ft.serve.live import add_live_route

    add_live_route(app, engine, settings)  # /v1/realtime: live captions over a WebSocket
    return app


def _release(app) -> None:
    app.state.in_flight -= 1


async def _stream_events(engine: Engine, model, job, upload, release):
    """``stream=true``: a ``transcript.text.delta`` event per segment as the model's worker decodes
    it (long files), then ``transcript.text.done`` with the text and usage. Holds the request's slot
    and upload until the end; a client that leaves cancels the decode (the generator is closed)."""
    from whisper_ft.serve.responses import sse_delta, sse_done

    loop = asyncio.get_running_loop()
    segments: asyncio.Queue = asyncio.Queue()
    job.on_segment = lambda seg: loop.call_soon_threadsafe(segments.put_nowait, seg)
    task = asyncio.ensure_future(engine.transcribe(model, job))
    sent, streamed = "", 0
    try:
        while True:
            getter = asyncio.ensure_future(segments.get())
            done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            sent, event = sse_delta(sent, getter.result().text)
            streamed += 1
            if event:
                yield event
        try:
            transcription = task.result()
        except WhisperFtError as exc:  # the status line is sent already: the error goes in the stream
            yield f"data: {json.dumps(_decode_error(exc, upload).body(), ensure_ascii=False)}\n\n"
            return
        for seg in transcription.segments[streamed:]:  # short clips decode in one batch: all at once
            sent, event = sse_delta(sent, seg.text)
            if event:
                yield event
        yield sse_done(transcription)
    finally:
        if not task.done():
            job.cancel.set()
            task.cancel()
        if upload is not None:
            upload.remove()
        release()


def _has_key(request: Request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode("utf-8", "replace"),
                                                              api_key.encode())


def _busy(what: str) -> ApiError:
    return ApiError(429, f"the server is busy: {what}; retry shortly", type="rate_limit_exceeded",
                    code="rate_limit_exceeded", headers={"Retry-After": "1"})


async def _read_upload(request: Request, upload_dir, settings: ServerSettings):
    """The multipart body, within ``--upload_timeout`` in all and with no pause over STALL_SECONDS."""
    try:
        return await asyncio.wait_for(
            read_multipart(request, upload_dir, settings.max_upload_bytes, stall_seconds=STALL_SECONDS),
            settings.upload_timeout)
    except asyncio.TimeoutError as exc:
        raise ApiError(408, f"the upload took longer than {settings.upload_timeout:g} s (--upload_timeout): "
                            "send the file again on a faster connection, or compress it", param="file",
                       code="upload_timeout") from exc


async def _until_disconnected(request: Request, work, job, poll_seconds: float = 0.25):
    """Await ``work``; None (and ``job`` cancelled) when the client disconnects first."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_seconds)
            if done:
                return task.result()
            if await request.is_disconnected():
                job.cancel.set()
                task.cancel()
                return None
    finally:
        if not task.done():
            job.cancel.set()
            task.cancel()


def _decode_error(exc: Exception, upload) -> ApiError:
    from whisper_ft.core.audio import AudioTooLongError
    from whisper_ft.core.errors import DataError

    if isinstance(exc, AudioTooLongError):
        return _too_long(exc)
    if isinstance(exc, DataError):
        return _audio_error(exc, upload)
    param = "language" if "language" in str(exc) else None
    return ApiError(400, str(exc), param=param, code="decoding_error")


def _too_long(exc) -> ApiError:
    return ApiError(413, f"the audio is {exc.seconds:.0f} s long, over this server's limit of {exc.limit:.0f} s "
                         "(send a shorter file, or start the server with a higher --max_audio_seconds)",
                    param="file", code="audio_too_long")


def _model_card(model, alias: str | None = None) -> dict:
    return {"id": alias or model.id, "object": "model", "created": model.created, "owned_by": "whisper-ft"}


def _unknown_model(name: str, engine: Engine) -> ApiError:
    return ApiError(404, f"model {name!r} is not served here; choose one of: {', '.join(engine.names())} "
                         "(or whisper-1 for the first)", param="model", code="model_not_found")


def _parse_options(upload, engine: Engine, task: str) -> dict:
    """Validate the form fields (before any decoding): model, language, prompt, response_format,
    temperature, timestamp_granularities[], stream."""
    from whisper_ft.core.languages import normalize_language
    from whisper_ft.serve.engine import DecodeJob

    if upload.file_path is None:
        raise ApiError(400, "no 'file' in the form: send the audio as the multipart file field 'file'",
                       param="file", code="missing_file")
    if upload.file_bytes == 0:
        raise ApiError(400, "the uploaded file is empty (0 bytes)", param="file", code="empty_file")
    model = engine.find(upload.get("model"))
    if model is None:
        raise _unknown_model(upload.get("model") or "", engine)
    fmt = (upload.get("response_format") or "json").strip().lower()
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(400, f"unknown response_format {fmt!r}; choose one of: {', '.join(RESPONSE_FORMATS)}",
                       param="response_format", code="invalid_value")
    try:
        language = normalize_language(upload.get("language"))  # translations: the spoken language, a hint
    except WhisperFtError as exc:
        raise ApiError(400, str(exc), param="language", code="invalid_value") from exc
    temperature = None
    raw = upload.get("temperature")
    if raw not in (None, ""):
        try:
            temperature = float(raw)
        except ValueError:
            temperature = -1.0
        if not 0.0 <= temperature <= 1.0:
            raise ApiError(400, f"temperature must be a number from 0 to 1 (got {raw!r})", param="temperature",
                           code="invalid_value")
    granularities = [g.strip().lower() for g in upload.get_list("timestamp_granularities[]", "timestamp_granularities")
                     for g in g.split(",") if g.strip()]
    bad = [g for g in granularities if g not in GRANULARITIES]
    if bad:
        raise ApiError(400, f"unknown timestamp_granularities {bad[0]!r}; choose from: {', '.join(GRANULARITIES)}",
                       param="timestamp_granularities", code="invalid_value")
    if granularities and fmt != "verbose_json":  # OpenAI refuses this too, rather than ignoring it
        raise ApiError(400, "timestamp_granularities is only supported with response_format=verbose_json "
                            f"(got response_format={fmt})", param="timestamp_granularities", code="invalid_value")
    include = [v.strip().lower() for v in upload.get_list("include[]", "include") for v in v.split(",") if v.strip()]
    if include:  # OpenAI: logprobs only from its gpt-4o transcription models, not whisper-1
        raise ApiError(400, f"include[]={include[0]} is not supported for Whisper models (OpenAI's whisper-1 does not "
                            "return it either); leave include out", param="include", code="unsupported_value")
    chunking = (upload.get("chunking_strategy") or "").strip()
    if chunking and chunking.lower() != "auto":  # files over 30 s are always chunked (VAD), which is "auto"
        raise ApiError(400, f"chunking_strategy {chunking!r} is not supported: send \"auto\" or leave it out "
                            "(long files are cut at pauses by voice activity detection)", param="chunking_strategy",
                       code="unsupported_value")
    stream = (upload.get("stream") or "false").strip().lower() in ("true", "1", "yes")
    prompt = upload.get("prompt") or None
    words = fmt == "verbose_json" and "word" in granularities

    def job(audio):
        return DecodeJob(audio, task=task, language=language, prompt=prompt, temperature=temperature,
                         word_timestamps=words)

    return {"model": model, "format": fmt, "granularities": granularities, "stream": stream, "job": job}


def _audio_error(exc: Exception, upload) -> ApiError:
    from whisper_ft.core.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioHeaderError, AudioInvalidError

    label = f"'{upload.file_name}'" if upload is not None and upload.file_name else "the upload"
    if isinstance(exc, AudioInvalidError):
        reason = "its samples are not finite numbers (NaN or infinity)"
    elif isinstance(exc, AudioHeaderError):
        reason = (f"its header declares a sample rate of {exc.rate} Hz, outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz, "
                  "so it is corrupt")
    elif "empty" in str(exc):
        reason = "it has no audio samples"
    else:
        reason = "it is not audio this server can decode"
    return ApiError(400, f"cannot read {label} as audio: {reason} (send wav, flac, mp3, ogg, opus, webm, m4a, ...)",
                    param="file", code="invalid_audio")


def _probe_upload(upload, settings: ServerSettings):
    """The upload's header (None when it tells no length); refuses impossible rates and audio over
    ``--max_audio_seconds`` before a sample is decoded."""
    from whisper_ft.core.audio import check_duration, probe_audio
    from whisper_ft.core.errors import DataError

    try:
        info = probe_audio(upload.file_path)
        if info is not None:
            check_duration(info.duration, settings.max_audio_seconds)
    except DataError as exc:
        raise _decode_error(exc, upload) from exc
    return info


def _load_upload(upload, settings: ServerSettings):
    from whisper_ft.core.audio import load_audio
    from whisper_ft.core.errors import DataError

    try:
        return load_audio(upload.file_path, max_seconds=settings.max_audio_seconds)
    except DataError as exc:
        raise _decode_error(exc, upload) from exc


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (not the stream of the moment the
    server started, which a test harness may have closed since)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def uvicorn_config(app, settings: ServerSettings, **overrides):
    """How uvicorn runs the app: keep-alive 5 s; at most ``max_uploads + max_concurrency +
    max_live_sessions + 32`` connections and tasks (uvicorn answers 503 beyond); SIGTERM closes live
    sessions (1012) and gives in-flight requests
    ``shutdown_seconds`` before cancelling them."""
    import uvicorn

    kwargs = dict(host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False,
                  timeout_keep_alive=5,
                  limit_concurrency=settings.max_uploads + settings.max_concurrency + settings.max_live_sessions + 32,
                  timeout_graceful_shutdown=max(1, round(settings.shutdown_seconds)))
    return uvicorn.Config(app, **(kwargs | overrides))


def check_port_free(host: str, port: int) -> None:
    """Fail in one line before any model is loaded when the address is taken."""
    import socket


    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise WhisperFtError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server running "
                                 "there? choose another --port)") from exc


def run_server(model_paths: list[str], settings: ServerSettings, engine_settings: EngineSettings, *,
               device: str = "auto", compute_type: str = "auto", cpu_threads: int | None = None,
               calibrate: bool = False) -> None:
    """Load the models and serve until interrupted (what ``whisper-ft serve`` runs)."""
    import uvicorn

    from whisper_ft.core.console import log
    from whisper_ft.serve.engine import load_models

    if not is_loopback(settings.host) and not settings.api_key:
        log(f"warning: serving on {settings.host} without --api_key: anyone who can reach this port can use it")
    check_port_free(settings.host, settings.port)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))  # uvicorn's look
        logger.addHandler(handler)
    logger.setLevel(settings.log_level.upper())
    logger.propagate = False
    models = load_models(model_paths, device=device, compute_type=compute_type, cpu_threads=cpu_threads,
                         calibrate=calibrate)
    engine = Engine(models, engine_settings)
    app = create_app(engine, settings)
    log(f"whisper-ft serve: http://{settings.host}:{settings.port}/ (OpenAI API under /v1)")
    try:
        uvicorn.Server(uvicorn_config(app, settings)).run()  # SIGTERM/Ctrl-C: re-raised here after shutdown
    finally:
        if not engine.join(settings.shutdown_seconds):
            # a decode still inside CTranslate2 (which cannot be interrupted): do not let it hold the exit
            log("interrupted: a decode was still running; exiting without waiting for it")
            sys.stderr.flush()
            os._exit(130)

