"""`whisper-ft` inference commands: eval, convert, infer, infer-ct2.

Only option parsing here; the work is in whisper_ft.workflows.evaluate, whisper_ft.workflows.convert,
whisper_ft.workflows.inference and whisper_ft.decoding (imported inside the commands so --help is instant).
Models open through whisper_ft.decoding.backend.load_backend (device, compute type and threads are
chosen there); decoding choices travel as one whisper_ft.decoding.options.DecodingOptions.
"""

from __future__ import annotations

from pathlib import Path

import typer

from whisper_ft.cli import app

_COMPUTE_TYPE_HELP = ("auto (the fastest on this CPU/GPU that keeps float32's accuracy: measured once per model and "
                      "machine, cached; `whisper-ft doctor` shows it), int8, int8_float32, float32, float16, ...")
_CALIBRATE_HELP = "Measure the choice of --compute_type auto again now (after a driver or hardware change, say)."


_MODEL_HELP = ("Model name or folder: transformers folder, LoRA adapter, CTranslate2 folder, 'base' "
               "(bundled), a hub id, or a speech-LLM run folder. Default: the newest model under models/.")


def _quiet_libraries() -> None:
    """Library chatter off (transformers' info logs and progress bars) without importing
    transformers: the CTranslate2 commands never load it (seconds of start-up). The environment
    is read when a library is first imported; one already imported is told directly."""
    import os
    import sys
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars follow the hub's
    warnings.filterwarnings("ignore", category=UserWarning)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    elif "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


@app.command("eval")
def eval_command(
    model_path: str = typer.Option(None, "--model_path", help=_MODEL_HELP),
    test_data: Path = typer.Option(None, "--test_data", help="Test manifest (JSONL). Default: dataset/test.jsonl."),
    metric: str = typer.Option(None, "--metric", help="cer, wer or auto. Default: cer for zh/ja/ko/..., wer for others; a manifest mixing both is scored per utterance by its language (auto) and reported per language and pooled (mer)."),
    language: str = typer.Option(None, "--language", help="Force a language (e.g. zh). Default: each utterance's, else detected."),
    task: str = typer.Option("transcribe", "--task", help="transcribe or translate."),
    batch_size: int = typer.Option(16, "--batch_size", min=1, help="Utterances per batch, longest first; when packing, about this many 30 s windows' worth of clips per batch."),
    beam_size: int = typer.Option(1, "--beam_size", min=1, help="Beam size. Default 1 (greedy), unlike infer/infer-ct2/serve (5): a test set decodes several times faster, and scores compare like with like; pass --beam_size 5 to score what those commands output."),
    backend: str = typer.Option("hf", "--backend", help="hf (transformers) or ct2 (CTranslate2)."),
    output_dir: Path = typer.Option(None, "--output_dir", help="Where report.json and predictions.jsonl go. Default: reports/<model>_<data>_<backend>/."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    compute_type: str = typer.Option("auto", "--compute_type", help="ct2 only: " + _COMPUTE_TYPE_HELP + " (auto: measured on the test set's first clips)."),
    calibrate: bool = typer.Option(False, "--calibrate", help="ct2 only: " + _CALIBRATE_HELP),
    cpu_threads: int = typer.Option(None, "--cpu_threads", min=1, help="CPU threads (default: up to 4)."),
    max_new_tokens: int = typer.Option(None, "--max_new_tokens", min=1, help="Cap on generated tokens per utterance."),
    pack: bool = typer.Option(None, "--pack/--no_pack", help="Short same-language clips share 30 s windows, split back by timestamps (a clip that does not split cleanly is decoded alone). Default: on with --backend ct2 (the fast path), off with hf; off for a model without timestamp tokens (said on stderr)."),
    raw: bool = typer.Option(False, "--raw", help="Score the texts as written (whitespace collapsed only) instead of through the normaliser (report.json names it)."),
    temperature_fallback: bool = typer.Option(False, "--temperature_fallback", help="Clips over 30 s: retry a doubtful 30 s window at higher temperatures (sampling: results vary from run to run). Default: temperature 0 only, the same on both backends."),
    prompt: str = typer.Option(None, "--prompt", help="Text every clip is conditioned on as the previous text (Whisper's initial prompt): names, spelling, style."),
    hotwords: str = typer.Option(None, "--hotwords", help="Words to favour (names, jargon; faster-whisper's hotwords): given to the decoder as previous text, after --prompt."),
    num_beams: int = typer.Option(None, "--num_beams", min=1, hidden=True, help="Deprecated: --beam_size."),
) -> None:
    """Score a model on a test manifest (CER/WER with S/D/I, report.json, per-utterance JSONL)."""
    _quiet_libraries()
    from whisper_ft.core.console import log
    from whisper_ft.core.errors import WhisperFtError
    from whisper_ft.core.outputs import removed_if_failed
    from whisper_ft.models.defaults import DEFAULT_TEST_DATA, pick_model
    from whisper_ft.workflows.evaluate import EvalSettings, check_output_dir, default_output_dir, evaluate, write_report

    beam_size = _renamed("--num_beams", num_beams, "--beam_size", beam_size, new_default=1)
    if model_path is None:
        picked = pick_model()
        log(picked.message())
        model_path = picked.name
    if test_data is None:
        test_data = DEFAULT_TEST_DATA
        if not test_data.is_file():
            raise WhisperFtError(f"no --test_data given and {test_data} does not exist: "
                                 "pass --test_data DATA.jsonl or create it with `whisper-ft prepare ...`")
        log(f"no --test_data given: using {test_data}")
    settings = EvalSettings(
        model=model_path, test_data=test_data, metric=metric, language=language, task=task, batch_size=batch_size,
        num_beams=beam_size, backend=backend, device=device, compute_type=compute_type, cpu_threads=cpu_threads,
        max_new_tokens=max_new_tokens, pack=pack, temperature_fallback=temperature_fallback, raw=raw,
        prompt=prompt, hotwords=hotwords, calibrate=calibrate,
    )
    output_dir = output_dir or default_output_dir(settings)
    with removed_if_failed(output_dir):  # a failed run leaves no empty folder behind
        output_dir = check_output_dir(output_dir)  # made and checked before hours of decoding
        report = evaluate(settings)
        report_path, preds_path = write_report(report, output_dir)
    log(f"model: {report.model['path']} ({report.model['backend']}, {report.model['device']})")
    log(f"wrote {report_path} and {preds_path}")
    print(report.summary())


@app.command("convert")
def convert_command(
    model: str = typer.Option(None, "--model", help="Any model name: transformers folder, hub id, CTranslate2 folder or 'base' (converted to the new precision), or (with --merge) a LoRA adapter. Default: the newest model under models/."),
    output_dir: Path = typer.Option(None, "--output_dir", help="New (or empty) output folder. Default: <model>-ct2 beside it for float16, <model>-<quantization>-ct2 otherwise (models/ for 'base' and hub ids)."),
    quantization: str = typer.Option("float16", "--quantization", help="float16, int8, int8_float16, float32 (or int8_float32, bfloat16, int8_bfloat16, int16)."),
    merge: bool = typer.Option(False, "--merge", help="Merge a LoRA adapter into its base on the fly."),
    force: bool = typer.Option(False, "--force", help="Replace --output_dir if it is a model folder whisper-ft wrote (never an adapter, a run, a file or other things); only after the conversion succeeded."),
    verify: Path = typer.Option(None, "--verify", help="Manifest (JSONL): decode it with source and converted model and compare."),
    max_drift: float = typer.Option(0.5, "--max_drift", help="With --verify: fail when CER/WER moves by more than this many points."),
    metric: str = typer.Option(None, "--metric", help="With --verify: cer or wer (default from the language)."),
    language: str = typer.Option(None, "--language", help="With --verify: force a language."),
    batch_size: int = typer.Option(8, "--batch_size", help="With --verify: utterances per batch."),
    max_new_tokens: int = typer.Option(None, "--max_new_tokens", help="With --verify: cap on generated tokens per clip."),
    push_to_hub: str = typer.Option(None, "--push_to_hub", metavar="REPO_ID", help="Then upload the converted model "
                                    "(after --verify passed) to this hub repository (token: HF_TOKEN or `hf auth login`; "
                                    "see `whisper-ft push`)."),
) -> None:
    """Export a model to CTranslate2 for faster-whisper (optionally verify the export)."""
    _quiet_libraries()
    from whisper_ft.core.console import log
    from whisper_ft.core.errors import WhisperFtError
    from whisper_ft.models.ct2_export import convert_model, default_output_dir, validate_quantization
    from whisper_ft.models.defaults import FALLBACK_MODEL, pick_model
    from whisper_ft.workflows.convert import check_verify_options, verify_conversion

    # every option is checked before anything is converted or replaced
    quantization = validate_quantization(quantization)
    check_verify_options(verify, max_drift=max_drift, batch_size=batch_size, max_new_tokens=max_new_tokens,
                         metric=metric, language=language)
    if push_to_hub is not None:
        from whisper_ft.workflows.publish import check_push_target

        check_push_target(push_to_hub)
    if model is None:
        picked = pick_model()
        if picked.name == FALLBACK_MODEL:
            raise WhisperFtError("no --model given and no trained model under models/: pass --model FOLDER "
                                 "(or --model base for the bundled whisper-base)")
        log(picked.message())
        model = picked.name
    if output_dir is None:
        output_dir = default_output_dir(model, quantization)
        log(f"no --output_dir given: writing {output_dir}")
    result = convert_model(model, output_dir, quantization=quantization, merge=merge, force=force)
    log(result.summary())
    print(result.output_dir)
    if verify is not None:
        check = verify_conversion(model, result.output_dir, verify, metric=metric, language=language,
                                  max_drift=max_drift, batch_size=batch_size, max_new_tokens=max_new_tokens)
        print(check.summary())
        if not check.passed:
            raise WhisperFtError(
                f"converted model drifts {check.drift:+.2f} points from the source (limit {max_drift:g}); "
                "try a higher-precision --quantization (float16/float32)"
            )
    if push_to_hub is not None:
        from whisper_ft.workflows.publish import push_folder

        pushed = push_folder(result.output_dir, push_to_hub)
        log(f"pushed {pushed.files} files to {pushed.url}")


def _renamed(old: str, old_value, new: str, new_value, new_default=None):
    """The value of a renamed option given by its old, hidden spelling (one deprecation line on
    stderr); giving both spellings different values is a usage error."""
    if old_value is None or old_value == []:
        return new_value
    from whisper_ft.core.console import warn

    warn(f"{old} is deprecated: use {new}")
    if isinstance(old_value, list):  # inputs: both spellings add up
        return list(new_value or []) + list(old_value)
    if new_value not in (None, new_default) and new_value != old_value:
        raise typer.BadParameter(f"{old} (deprecated) and {new} both given: give {new} only", param_hint=new)
    return old_value


_AUDIO_HELP = "Audio files, folders (searched recursively) and/or glob patterns ('clips/*.wav')."
_FORMAT_HELP = ("json, txt, srt, vtt, tsv, or all (every format; needs --output_dir). Several inputs as txt: "
                "a '==> file <==' line before each.")
_BEAM_HELP = "Beam size (1 = greedy)."
_TEMPERATURE_HELP = ("Sampling temperature of the first decode (0: deterministic greedy/beam search). With "
                     "--temperature_fallback a doubtful window is decoded again at rising temperatures (steps of 0.2).")
_FALLBACK_HELP = "Decode a doubtful window (a loop, a low-confidence output) again at higher temperatures (OpenAI's and faster-whisper's default)."
_PROMPT_HELP = "Initial prompt: text the first window is conditioned on (names, spelling, style)."
_VAD_HELP = "Decode only the speech (Silero VAD); segment times are mapped back to the file and clipped to the speech."


def _expand_globs(items: list[str]) -> list[str]:
    """Glob patterns the shell did not expand (quoted, or on Windows) -> the matching paths, sorted."""
    import glob

    out: list[str] = []
    for item in items:
        matches = sorted(glob.glob(item, recursive=True)) if glob.has_magic(item) else []
        out += matches or [item]  # no match: the path as given (reported as not found)
    return out


def _decoding_options(*, language, task, beam_size, temperature, temperature_fallback, prompt, hotwords, vad,
                      vad_threshold, vad_min_silence_ms, vad_speech_pad_ms, vad_min_speech_ms, word_timestamps,
                      **extra):
    from whisper_ft.decoding.options import DecodingOptions

    vad_parameters = {"threshold": vad_threshold, "min_silence_duration_ms": vad_min_silence_ms,
                      "speech_pad_ms": vad_speech_pad_ms, "min_speech_duration_ms": vad_min_speech_ms}
    if not vad and any(v is not None for v in vad_parameters.values()):
        from whisper_ft.core.console import warn

        warn("--vad_* options have no effect without --vad")
    return DecodingOptions(language=language, task=task, beam_size=beam_size, temperature=temperature,
                           initial_prompt=prompt, hotwords=hotwords, vad=vad, vad_parameters=vad_parameters,
                           word_timestamps=word_timestamps, **extra).with_fallback(temperature_fallback)


def _vad_option(name: str, help: str):
    return typer.Option(None, name, min=0, help=f"With --vad: {help} (default: faster-whisper's).")


@app.command("infer")
def infer_command(
    audio: list[str] = typer.Argument(None, help=_AUDIO_HELP, show_default=False),
    model_path: str = typer.Option(None, "--model_path", help=_MODEL_HELP),
    language: str = typer.Option(None, "--language", help="Language code (default: detected)."),
    task: str = typer.Option("transcribe", "--task", help="transcribe or translate."),
    beam_size: int = typer.Option(None, "--beam_size", min=1, help=_BEAM_HELP + " Default: 5, as infer-ct2 and faster-whisper; a speech-LLM run: its own.", show_default=False),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, max=1.0, help=_TEMPERATURE_HELP),
    temperature_fallback: bool = typer.Option(True, "--temperature_fallback/--no_temperature_fallback", help=_FALLBACK_HELP),
    prompt: str = typer.Option(None, "--prompt", help=_PROMPT_HELP),
    hotwords: str = typer.Option(None, "--hotwords", help="Words to favour (names, jargon). This backend has no hotwords of its own: they are added to the prompt (after --prompt), where faster-whisper puts them."),
    vad: bool = typer.Option(False, "--vad", help=_VAD_HELP),
    vad_threshold: float = _vad_option("--vad_threshold", "speech probability threshold, 0 to 1"),
    vad_min_silence_ms: int = _vad_option("--vad_min_silence_ms", "silence (ms) that ends a speech chunk"),
    vad_speech_pad_ms: int = _vad_option("--vad_speech_pad_ms", "padding (ms) kept around each speech chunk"),
    vad_min_speech_ms: int = _vad_option("--vad_min_speech_ms", "shortest speech chunk (ms) kept"),
    word_timestamps: bool = typer.Option(False, "--word_timestamps", help="Per-word times (JSON output). Needs the CTranslate2 backend: use infer-ct2 (an error here)."),
    fmt: str = typer.Option("json", "--format", help=_FORMAT_HELP),
    output_dir: Path = typer.Option(None, "--output_dir", help="Write <name>.<format> per input here."),
    to_simplified: bool = typer.Option(False, "--to_simplified", help="Convert traditional Chinese to simplified."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    cpu_threads: int = typer.Option(None, "--cpu_threads", min=1, help="CPU threads (default: torch's)."),
    audio_path: list[str] = typer.Option(None, "--audio_path", hidden=True, help="Deprecated: give the audio as arguments."),
    num_beams: int = typer.Option(None, "--num_beams", min=1, hidden=True, help="Deprecated: --beam_size."),
) -> None:
    """Transcribe audio with transformers (any length: 30 s windows, sequential long-form decoding); also a speech-LLM run folder."""
    _quiet_libraries()
    from whisper_ft.core.console import log
    from whisper_ft.core.writers import validate_format
    from whisper_ft.decoding.backend import load_backend
    from whisper_ft.models.defaults import pick_model
    from whisper_ft.workflows.inference import run_inference

    audio = _renamed("--audio_path", audio_path, "AUDIO arguments", audio)
    beam_size = _renamed("--num_beams", num_beams, "--beam_size", beam_size)
    if not audio:
        raise typer.BadParameter("give at least one audio file or folder", param_hint="AUDIO")
    options = _decoding_options(language=language, task=task, beam_size=beam_size or 5, temperature=temperature,
                                temperature_fallback=temperature_fallback, prompt=prompt, hotwords=hotwords, vad=vad,
                                vad_threshold=vad_threshold, vad_min_silence_ms=vad_min_silence_ms,
                                vad_speech_pad_ms=vad_speech_pad_ms, vad_min_speech_ms=vad_min_speech_ms,
                                word_timestamps=word_timestamps)
    validate_format(fmt, allow_all=True)
    if model_path is None:
        picked = pick_model()
        log(picked.message())
        model_path = picked.name
    backend = load_backend(model_path, kind="transformers", device=device, threads=cpu_threads, beam_size=beam_size)
    log(f"model: {backend.describe()}")

    def transcribe(audio, path, on_segment):  # transformers gives no segments before the end: no progress bar
        return backend.transcribe(audio, options, source=path)

    run = run_inference(_expand_globs(audio), transcribe, fmt=fmt, output_dir=output_dir, to_simplified=to_simplified,
                        show_progress=False)
    run.raise_for_failures()


@app.command("infer-ct2")
def infer_ct2_command(
    audio: list[str] = typer.Argument(..., help=_AUDIO_HELP),
    model_path: str = typer.Option(None, "--model_path", help="CTranslate2 folder (or any model name; converted once). Default: the newest models/*-ct2, else the bundled base."),
    language: str = typer.Option(None, "--language", help="Language code (default: detected)."),
    task: str = typer.Option("transcribe", "--task", help="transcribe or translate."),
    beam_size: int = typer.Option(5, "--beam_size", min=1, help=_BEAM_HELP + " Default: faster-whisper's."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, max=1.0, help=_TEMPERATURE_HELP),
    temperature_fallback: bool = typer.Option(True, "--temperature_fallback/--no_temperature_fallback", help=_FALLBACK_HELP),
    prompt: str = typer.Option(None, "--prompt", help=_PROMPT_HELP),
    hotwords: str = typer.Option(None, "--hotwords", help="Words to favour (names, jargon): faster-whisper's hotwords."),
    vad: bool = typer.Option(False, "--vad", help=_VAD_HELP),
    vad_threshold: float = _vad_option("--vad_threshold", "speech probability threshold, 0 to 1"),
    vad_min_silence_ms: int = _vad_option("--vad_min_silence_ms", "silence (ms) that ends a speech chunk"),
    vad_speech_pad_ms: int = _vad_option("--vad_speech_pad_ms", "padding (ms) kept around each speech chunk"),
    vad_min_speech_ms: int = _vad_option("--vad_min_speech_ms", "shortest speech chunk (ms) kept"),
    word_timestamps: bool = typer.Option(False, "--word_timestamps", help="Add per-word times (JSON output)."),
    batch_size: int = typer.Option(None, "--batch_size", min=1, help="> 1: faster-whisper's batched pipeline (uses VAD); 1: sequential. Default: 8 for recordings of 5 min or more (several times faster), else 1."),
    fmt: str = typer.Option("json", "--format", help=_FORMAT_HELP),
    output_dir: Path = typer.Option(None, "--output_dir", help="Write <name>.<format> per input here."),
    to_simplified: bool = typer.Option(False, "--to_simplified", help="Convert traditional Chinese to simplified."),
    device: str = typer.Option("auto", "--device", help="auto (cuda if present), cpu or cuda."),
    compute_type: str = typer.Option("auto", "--compute_type", help=_COMPUTE_TYPE_HELP + " (auto: measured on the first seconds of the first files)."),
    calibrate: bool = typer.Option(False, "--calibrate", help=_CALIBRATE_HELP),
    cpu_threads: int = typer.Option(None, "--cpu_threads", min=1, help="CPU threads (default: up to 4)."),
) -> None:
    """Transcribe audio with faster-whisper (CTranslate2): fast, any length, optional VAD."""
    _quiet_libraries()
    from whisper_ft.core.console import log
    from whisper_ft.core.writers import validate_format
    from whisper_ft.decoding.backend import load_backend
    from whisper_ft.decoding.ct2 import default_batch_size
    from whisper_ft.models.defaults import pick_ct2_model
    from whisper_ft.workflows.inference import run_inference

    # subtitles want timestamped segments of a few seconds, also from the batched pipeline
    options = _decoding_options(language=language, task=task, beam_size=beam_size, temperature=temperature,
                                temperature_fallback=temperature_fallback, prompt=prompt, hotwords=hotwords, vad=vad,
                                vad_threshold=vad_threshold, vad_min_silence_ms=vad_min_silence_ms,
                                vad_speech_pad_ms=vad_speech_pad_ms, vad_min_speech_ms=vad_min_speech_ms,
                                word_timestamps=word_timestamps,
                                timestamps=True if fmt in ("srt", "vtt", "tsv", "all") else None,
                                batch_size=batch_size or 1)
    validate_format(fmt, allow_all=True)
    if model_path is None:
        picked = pick_ct2_model()
        log(picked.message())
        model_path = picked.name
    files = _expand_globs(audio)

    def calibration_clips():  # --compute_type auto, first use: the start of the user's own files
        from whisper_ft.decoding.calibration import clips_from_files
        from whisper_ft.workflows.inference import collect_audio_files

        first = collect_audio_files(files)[0][:8]
        return clips_from_files(first, [options.language] * len(first))

    backend = load_backend(model_path, kind="ctranslate2", device=device, compute_type=compute_type,
                           threads=cpu_threads, calibration_clips=calibration_clips, calibrate=calibrate)
    log(f"model: {backend.describe()}")

    def transcribe(audio_array, path, on_segment):
        batch = batch_size
        if batch is None:
            batch = default_batch_size(len(audio_array) / 16_000)
            if batch > 1:
                log(f"{path}: {len(audio_array) / 16_000 / 60:.0f} min: faster-whisper's batched VAD pipeline, "
                    f"batch {batch} (--batch_size 1: sequential decoding)")
        return backend.transcribe(audio_array, options.replace(batch_size=batch), source=path, on_segment=on_segment)

    run = run_inference(files, transcribe, fmt=fmt, output_dir=output_dir, to_simplified=to_simplified,
                        vad_hint=not vad and batch_size == 1)
    run.raise_for_failures()
