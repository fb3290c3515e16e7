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
import logging
import shutil
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from whisper_ft.serve.engine import Engine, EngineSettings
from whisper_ft.serve.errors import ApiError, ClientGone, error_body
from whisper_ft.serve.responses import GRANULARITIES, RESPONSE_FORMATS, render, sse_events
from whisper_ft.serve.uploads import private_upload_dir, read_multipart

logger = logging.getLogger("whisper_ft.serve")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_upload_mb: float = 100.0
    max_concurrency: int = 64  # requests in flight (uploading, queued or decoding); more get 429

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


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
    app.state.in_flight = 0

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
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            what = "no API key given" if not header else "wrong API key"
            raise ApiError(401, f"{what}: send the server's --api_key as 'Authorization: Bearer KEY'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(_page())

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": engine.names(), "in_flight": app.state.in_flight,
                "max_concurrency": settings.max_concurrency, **engine.stats.to_dict()}

    @app.get("/v1/models")
    async def list_models(request: Request):
        check_key(request)
        return {"object": "list", "data": [_model_card(m) for m in engine.models]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request):
        check_key(request)
        model = engine.find(model_id)
        if model is None:
            raise _unknown_model(model_id, engine)
        return _model_card(model)

    async def audio_endpoint(request: Request, task: str):
        check_key(request)
        if app.state.in_flight >= settings.max_concurrency:
            raise ApiError(429, f"the server is busy: {settings.max_concurrency} requests in flight "
                                "(--max_concurrency); retry shortly", type="rate_limit_exceeded",
                           code="rate_limit_exceeded", headers={"Retry-After": "1"})
        app.state.in_flight += 1
        upload = None
        try:
            try:
                upload = await read_multipart(request, app.state.upload_dir, settings.max_upload_bytes)
            except ClientGone:
                logger.info("client disconnected during its upload; nothing kept")
                return Response(status_code=400)
            options = _parse_options(upload, engine, task)
            audio = await asyncio.get_running_loop().run_in_executor(None, _load_upload, upload)
            upload.remove()
            from whisper_ft.errors import WhisperFtError

            try:
                transcription = await engine.transcribe(options["model"], options["job"](audio))
            except WhisperFtError as exc:
                param = "language" if "language" in str(exc) else None
                raise ApiError(400, str(exc), param=param, code="decoding_error") from exc
            if options["stream"]:  # decoded already: only the sending is left (no slot held for it)
                return StreamingResponse(sse_events(transcription), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache"})
            body, media_type = render(transcription, options["format"], task=task,
                                      granularities=options["granularities"])
            return Response(body, media_type=media_type)
        finally:
            if upload is not None:
                upload.remove()
            app.state.in_flight -= 1

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        return await audio_endpoint(request, "transcribe")

    @app.post("/v1/audio/translations")
    async def translations(request: Request):
        return await audio_endpoint(request, "translate")

    return app


def _model_card(model) -> dict:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": "whisper-ft"}


def _unknown_model(name: str, engine: Engine) -> ApiError:
    return ApiError(404, f"model {name!r} is not served here; choose one of: {', '.join(engine.names())} "
                         "(or whisper-1 for the first)", param="model", code="model_not_found")


def _parse_options(upload, engine: Engine, task: str) -> dict:
    """Validate the form fields (before any decoding): model, language, prompt, response_format,
    temperature, timestamp_granularities[], stream."""
    from whisper_ft.errors import WhisperFtError
    from whisper_ft.models.languages import normalize_language
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
    stream = (upload.get("stream") or "false").strip().lower() in ("true", "1", "yes")
    prompt = upload.get("prompt") or None
    words = fmt == "verbose_json" and "word" in granularities

    def job(audio):
        return DecodeJob(audio, task=task, language=language, prompt=prompt, temperature=temperature,
                         word_timestamps=words)

    return {"model": model, "format": fmt, "granularities": granularities, "stream": stream, "job": job}


def _load_upload(upload):
    from whisper_ft.audio import load_audio
    from whisper_ft.errors import DataError

    label = f"'{upload.file_name}'" if upload.file_name else "the upload"
    try:
        return load_audio(upload.file_path)
    except DataError as exc:
        reason = "it has no audio samples" if "empty" in str(exc) else "it is not audio this server can decode"
        raise ApiError(400, f"cannot read {label} as audio: {reason} (send wav, flac, mp3, ogg, opus, webm, m4a, ...)",
                       param="file", code="invalid_audio") from exc


def run_server(model_paths: list[str], settings: ServerSettings, engine_settings: EngineSettings, *,
               device: str = "auto", compute_type: str = "auto", cpu_threads: int | None = None) -> None:
    """Load the models and serve until interrupted (what ``whisper-ft serve`` runs)."""
    import uvicorn

    from whisper_ft.console import log
    from whisper_ft.serve.engine import load_models

    if not is_loopback(settings.host) and not settings.api_key:
        log(f"warning: serving on {settings.host} without --api_key: anyone who can reach this port can use it")
    models = load_models(model_paths, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
    app = create_app(Engine(models, engine_settings), settings)
    log(f"whisper-ft serve: http://{settings.host}:{settings.port}/ (OpenAI API under /v1)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)

