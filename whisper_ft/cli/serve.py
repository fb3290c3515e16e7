"""`whisper-ft serve`: an OpenAI-compatible transcription server and web page (parsing only; the
work is in whisper_ft.serve, imported inside the command so --help stays instant)."""

from __future__ import annotations

import typer

from whisper_ft.cli import app


@app.command("serve")
def serve_command(
    model_path: list[str] = typer.Option(None, "--model_path", help="Model to serve (repeatable): CTranslate2 folder, merged transformers folder, LoRA adapter or 'base'. Requests pick one by its folder name (whisper-1: the first). Default: the newest models/*-ct2, else the bundled base."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback: set --api_key."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: str = typer.Option(None, "--api_key", envvar="WHISPER_FT_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1 (or WHISPER_FT_API_KEY)."),
    max_upload_mb: float = typer.Option(25.0, "--max_upload_mb", help="Largest upload accepted (MB, OpenAI's 25 by default); bigger ones get 413."),
    max_concurrency: int = typer.Option(64, "--max_concurrency", help="Requests queued or decoding (a slot is taken once the upload is complete); more get 429 with Retry-After. Uploads in progress: up to twice this."),
    max_audio_seconds: float = typer.Option(7200.0, "--max_audio_seconds", help="Longest audio a request may send (seconds, from the header or while decoding); longer gets 413."),
    upload_timeout: float = typer.Option(120.0, "--upload_timeout", help="Seconds an upload may take in all (a body that sends nothing for 15 s is dropped sooner); then 408."),
    allowed_hosts: list[str] = typer.Option(None, "--allowed_hosts", help="Host names this server answers besides its address (repeatable or comma-separated; '*': any). A loopback server answers only localhost/127.0.0.1/[::1] by default, which stops DNS rebinding."),
    cors_origins: list[str] = typer.Option(None, "--cors_origins", help="Web origins (e.g. https://app.example.com) whose pages may call the API from a browser (repeatable or comma-separated). Default: none; the built-in page is same-origin."),
    max_live_sessions: int = typer.Option(4, "--max_live_sessions", help="Live caption sessions (WebSockets on /v1/realtime) open at once; more are refused (error event, close code 4429). 0: no live captions."),
    live_idle_timeout: float = typer.Option(30.0, "--live_idle_timeout", help="Close a live session that sends nothing for this many seconds (close code 4408)."),
    log_level: str = typer.Option("info", "--log_level", help="info: one access line per request on stderr (client, method, path, status, audio and decode seconds); warning: problems only; debug; error."),
    language: str = typer.Option(None, "--language", help="Language when a request gives none (default: detected)."),
    beam_size: int = typer.Option(5, "--beam_size", help="Beam size (temperature 0)."),
    prompt: str = typer.Option(None, "--prompt", help="Previous text for requests (and live sessions) that send no prompt of their own: names, spelling, style (Whisper's initial prompt)."),
    hotwords: str = typer.Option(None, "--hotwords", help="Words to favour on every request and live session (names, jargon; faster-whisper's hotwords), after the request's prompt."),
    batch_window_ms: float = typer.Option(30.0, "--batch_window_ms", help="Wait this long for more requests to batch with the first (0 with --max_batch_size 1: one request at a time)."),
    max_batch_size: int = typer.Option(16, "--max_batch_size", help="Clips of <= 30 s decoded together in one CTranslate2 batch."),
    long_batch_size: int = typer.Option(8, "--long_batch_size", help="Files over 30 s: faster-whisper's VAD + batched pipeline with this batch size (1: sequential)."),
    pack: bool = typer.Option(True, "--pack/--no_pack", help="Short clips (up to 10 s) of one language from concurrent requests share 30 s windows, split back by timestamps (a clip that does not split cleanly is decoded alone; longer clips always are): the CPU fast path (more requests/s under load), at no measured accuracy cost (docs/benchmarks.md). --no_pack: one window per clip."),
    temperature_fallback: bool = typer.Option(True, "--temperature_fallback/--no_temperature_fallback", help="At temperature 0, decode a clip again at rising temperatures when its output loops (OpenAI's and faster-whisper's behaviour)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda if present), cpu or cuda."),
    compute_type: str = typer.Option("auto", "--compute_type", help="auto (the fastest on this CPU/GPU that keeps float32's accuracy: measured once per model and machine on synthesized speech unless `whisper-ft calibrate` measured it on yours; cached), int8, int8_float32, float32, float16, ..."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Measure the choice of --compute_type auto again before serving."),
    cpu_threads: int = typer.Option(None, "--cpu_threads", help="CPU threads per model (default: up to 4)."),
) -> None:
    """Serve models over OpenAI's audio API (/v1/audio/transcriptions, /v1/audio/translations) with a web page at /."""
    from whisper_ft.core.console import log
    from whisper_ft.core.errors import WhisperFtError
    from whisper_ft.core.languages import normalize_language

    try:
        from whisper_ft.serve.app import ServerSettings, run_server
        from whisper_ft.serve.engine import EngineSettings
    except ImportError as exc:
        raise WhisperFtError(f"`whisper-ft serve` needs the serve extra ({exc.name} is missing): "
                             "pip install -e \".[serve]\"") from exc
    def split(values):
        return tuple(v.strip() for value in values or () for v in value.split(",") if v.strip())

    settings = ServerSettings(host=host, port=port, api_key=api_key or None, max_upload_mb=max_upload_mb,
                              max_concurrency=max_concurrency, max_audio_seconds=max_audio_seconds,
                              upload_timeout=upload_timeout, allowed_hosts=split(allowed_hosts),
                              cors_origins=split(cors_origins), max_live_sessions=max_live_sessions,
                              live_idle_timeout=live_idle_timeout,
                              log_level=(log_level or "").lower())  # checked before any model is loaded
    if not model_path:
        from whisper_ft.models.defaults import pick_ct2_model

        picked = pick_ct2_model()
        log(picked.message())
        model_path = [picked.name]
    engine_settings = EngineSettings(beam_size=beam_size, batch_window_ms=batch_window_ms, max_batch_size=max_batch_size,
                                     long_batch_size=long_batch_size, temperature_fallback=temperature_fallback,
                                     pack=pack, default_language=normalize_language(language),
                                     default_prompt=(prompt or "").strip() or None, hotwords=(hotwords or "").strip() or None)
    run_server(model_path, settings, engine_settings, device=device, compute_type=compute_type, cpu_threads=cpu_threads,
               calibrate=calibrate)
