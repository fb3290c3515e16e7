"""Scoring and transcribing with a saved speech-LLM run, through ``whisper_ft.workflows.evaluate``.

:func:`evaluate_speech_llm` is ``whisper-ft eval`` for a run folder: the same
:func:`whisper_ft.workflows.evaluate.evaluate` loop (duration-sorted batches, skipped clips, one normaliser)
with :class:`~whisper_ft.speech_llm.decoding.SpeechLLMBackend` as the backend, and the same
``report.json`` / ``predictions.jsonl``.
"""

from __future__ import annotations

from pathlib import Path


def default_report_dir(run: Path, test_data: str | Path) -> Path:
    from whisper_ft.workflows.evaluate import EvalSettings, default_output_dir

    hf_dir = default_output_dir(EvalSettings(model=str(run), test_data=test_data))
    return hf_dir.with_name(hf_dir.name.removesuffix("_hf") + "_speech-llm")


def evaluate_speech_llm(run: str | Path, test_data: str | Path, *, metric: str | None = None,
                        language: str | None = None, num_beams: int | None = None, batch_size: int = 8,
                        max_new_tokens: int | None = None, device: str = "auto", cpu_threads: int | None = None,
                        output_dir: str | Path | None = None, show_progress: bool = True):
    """Decode and score ``test_data`` with run ``run``; returns (EvalReport, (report.json, predictions.jsonl))."""
    from whisper_ft.speech_llm.io import load_speech_llm_backend, resolve_run
    from whisper_ft.workflows.evaluate import (
        EvalSettings,
        check_output_dir,
        check_positive,
        evaluate,
        load_test_data,
        write_report,
    )

    folder = resolve_run(run)
    for option, value in (("--batch_size", batch_size), ("--num_beams", num_beams), ("--cpu_threads", cpu_threads),
                          ("--max_new_tokens", max_new_tokens)):
        check_positive(option, value)
    load_test_data(test_data)  # a bad manifest fails before the model loads
    out = check_output_dir(output_dir or default_report_dir(folder, test_data))
    backend = load_speech_llm_backend(folder, num_beams=num_beams, device=device, cpu_threads=cpu_threads,
                                      max_new_tokens=max_new_tokens)
    settings = EvalSettings(model=str(folder), test_data=test_data, metric=metric, language=language,
                            batch_size=batch_size, num_beams=backend.decode.num_beams, device=device,
                            cpu_threads=cpu_threads, max_new_tokens=max_new_tokens, show_progress=show_progress)
    report = evaluate(settings, backend=backend)
    return report, write_report(report, out)


def transcribe_files(run: str | Path, inputs: list[str | Path], *, num_beams: int | None = None,
                     device: str = "auto", cpu_threads: int | None = None, on_result=None):
    """Transcribe audio files and folders (their audio files, recursively) with run ``run``, any
    length (30 s pieces); ``on_result(path, text)`` is called as each file is done.

    As ``whisper-ft infer`` does, a missing, unreadable or failing file does not stop the others:
    the returned :class:`~whisper_ft.workflows.inference.InferRun` lists the failures, and its
    ``raise_for_failures()`` reports them at the end."""
    import time

    from whisper_ft.core.audio import SAMPLE_RATE, load_audio
    from whisper_ft.core.errors import WhisperFtError
    from whisper_ft.speech_llm.io import load_speech_llm_backend
    from whisper_ft.workflows.inference import Failure, InferRun, collect_audio_files

    files, failures = collect_audio_files(inputs)
    done = InferRun(failures=failures, n_inputs=len(files) + len(failures))
    if not files and not failures:
        raise WhisperFtError("no audio given: pass audio files or folders")
    backend = load_speech_llm_backend(run, num_beams=num_beams, device=device, cpu_threads=cpu_threads)
    for path in files:
        try:
            audio = load_audio(path)
            t0 = time.perf_counter()
            text = backend.transcribe(audio).text
        except WhisperFtError as exc:
            done.failures.append(Failure(str(path), str(exc)))
            continue
        except Exception as exc:  # a decoding failure on one file must not stop the others
            done.failures.append(Failure(str(path), f"{type(exc).__name__}: {exc}"))
            continue
        done.decode_seconds += time.perf_counter() - t0
        done.audio_seconds += len(audio) / SAMPLE_RATE
        if on_result is not None:
            on_result(path, text)
    return done
