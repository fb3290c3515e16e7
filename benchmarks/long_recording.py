"""Long-recording benchmark (``benchmarks/inference.py --long``): one recording of real speech with
natural pauses, transcribed by each tool the way its users run it, every row in its own process.

The recording: the utterances of ``--long_data`` (default: the AISHELL sample's test speaker) in
manifest order (round again when the manifest is shorter), joined with seeded silences of 0.3-1.5 s
until ``--long_minutes``; the reference is
their texts joined. Written as 16 kHz wav to a temporary folder (never into the repository).

Rows (beam sizes are each tool's default; the language is given to all):

  hf-pipeline      transformers ``pipeline("automatic-speech-recognition", chunk_length_s=30,
                   batch_size=16)`` (Whisper-Finetune's infer.py), fp32, greedy
  fw-sequential    faster-whisper ``WhisperModel.transcribe`` (int8, beam 5, its defaults)
  fw-batched-8/16  faster-whisper ``BatchedInferencePipeline`` (int8, beam 5, batch 8 / 16)
  wf-infer         ``whisper-ft infer`` (transformers long-form, greedy)
  wf-infer-ct2     ``whisper-ft infer-ct2`` with its defaults
  wf-infer-ct2-b1  ``whisper-ft infer-ct2 --batch_size 1`` (sequential: the default below 5 min)
  wf-infer-ct2-b16 ``whisper-ft infer-ct2 --batch_size 16``

Each row runs as a child process (model load and audio decoding included in its wall time: they
are part of what a user waits for and are small next to 10 minutes of audio); its peak RSS comes
from ``os.wait4``. RTF = wall seconds / audio seconds; speedup = hf-pipeline's wall time / the row's (fw-sequential's
when hf-pipeline is not among the rows).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LONG_DATA = ROOT.parent / "shared" / "aishell_sample" / "test.jsonl"
LONG_ROWS = ("hf-pipeline", "fw-sequential", "fw-batched-8", "fw-batched-16", "wf-infer", "wf-infer-ct2",
             "wf-infer-ct2-b1", "wf-infer-ct2-b16")


def build_recording(manifest: Path, minutes: float, out_dir: Path, seed: int = 0) -> tuple[Path, str, str, float]:
    """(wav path, reference text, language, seconds) of the joined recording."""
    import numpy as np
    import soundfile as sf

    from whisper_ft.core.audio import SAMPLE_RATE
    from whisper_ft.core.manifest import read_manifest

    rng = np.random.default_rng(seed)
    pieces, texts, total, language = [], [], 0.0, None
    utterances = read_manifest(manifest)
    # a recording longer than the manifest (e.g. --long_minutes 60) goes round it again
    for k in range(10**6):
        u = utterances[k % len(utterances)]
        if total >= minutes * 60:
            break
        language = language or u.language
        audio = u.load_audio()
        gap = np.zeros(int(rng.uniform(0.3, 1.5) * SAMPLE_RATE), dtype=np.float32)
        pieces += [gap, audio] if pieces else [audio]
        texts.append(u.sentence)
        total += (len(gap) if len(pieces) > 1 else 0) / SAMPLE_RATE + len(audio) / SAMPLE_RATE
    audio = np.concatenate(pieces)
    path = out_dir / f"long_{minutes:g}min.wav"
    sf.write(str(path), audio, SAMPLE_RATE)
    joiner = "" if language in ("zh", "ja", "ko", "yue") else " "
    return path, joiner.join(texts), language or "en", len(audio) / SAMPLE_RATE


_SNIPPETS = {
    "hf-pipeline": """
import torch
from transformers import pipeline
from whisper_ft.core.audio import load_audio
from whisper_ft.models.loading import load_whisper
torch.set_num_threads({threads})
m = load_whisper({model!r}, dtype=torch.float32, device="cpu")
asr = pipeline("automatic-speech-recognition", model=m.model, tokenizer=m.processor.tokenizer,
               feature_extractor=m.processor.feature_extractor, chunk_length_s=30, batch_size=16, device="cpu")
out = asr(load_audio({audio!r}), generate_kwargs={{"language": {language!r}, "task": "transcribe"}})
print(RESULT + out["text"])
""",
    "fw": """
from faster_whisper import BatchedInferencePipeline, WhisperModel
from whisper_ft.decoding.ct2_loading import ensure_ct2_folder
model = WhisperModel(str(ensure_ct2_folder({model!r})), device="cpu", compute_type="int8", cpu_threads={threads},
                     local_files_only=True)
if {batch}:
    segments, _ = BatchedInferencePipeline(model=model).transcribe({audio!r}, language={language!r}, batch_size={batch})
else:
    segments, _ = model.transcribe({audio!r}, language={language!r})
print(RESULT + "".join(s.text for s in segments))
""",
}


def _row_command(row: str, args, audio: Path, language: str) -> list[str]:
    py = sys.executable
    fmt = dict(threads=args.threads, model=args.model, audio=str(audio), language=language)
    if row == "hf-pipeline":
        return [py, "-c", "RESULT = '@@RESULT@@'\n" + _SNIPPETS["hf-pipeline"].format(**fmt)]
    if row.startswith("fw-"):
        batch = int(row.rsplit("-", 1)[1]) if row.startswith("fw-batched") else 0
        return [py, "-c", "RESULT = '@@RESULT@@'\n" + _SNIPPETS["fw"].format(batch=batch, **fmt)]
    cli = [py, "-m", "whisper_ft"]
    if row == "wf-infer":
        return cli + ["infer", str(audio), "--model_path", args.model, "--language", language, "--beam_size", "1",
                      "--format", "txt", "--cpu_threads", str(args.threads)]  # greedy, as the row says
    extra = ["--batch_size", row.rsplit("-b", 1)[1]] if row.startswith("wf-infer-ct2-b") else []
    return cli + ["infer-ct2", str(audio), "--model_path", args.model, "--language", language, "--format", "txt",
                  "--cpu_threads", str(args.threads), *extra]


TIMED_OUT = -9  # exit code recorded for a row stopped at --long_timeout


def run_row(cmd: list[str], env: dict, timeout: float | None = None) -> tuple[str, float, int, int, str]:
    """(stdout, wall seconds, peak RSS bytes, exit code, stderr tail) of one child process; a child
    still running after ``timeout`` seconds is killed (exit code TIMED_OUT)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=str(ROOT))
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if timeout is not None and time.perf_counter() - t0 > timeout:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (out.read().decode("utf-8", "replace"), wall, usage.ru_maxrss * 1024, proc.returncode,
                err.read().decode("utf-8", "replace")[-2000:])


def _hypothesis(row: str, stdout: str) -> str:
    if "@@RESULT@@" in stdout:
        return stdout.split("@@RESULT@@", 1)[1].strip()
    lines = [x for x in stdout.splitlines() if not x.startswith("==> ")]
    return "".join(x.strip() for x in lines)


def run_long(args, log) -> dict:
    from whisper_ft.core.languages import default_metric
    from whisper_ft.core.scoring import score

    rows = args.long_rows or list(LONG_ROWS)
    with tempfile.TemporaryDirectory(prefix="whisper-ft-long-") as tmp:
        audio, reference, language, seconds = build_recording(Path(args.long_data), args.long_minutes, Path(tmp))
        log(f"long recording: {seconds / 60:.1f} min of {language} from {args.long_data}, {len(reference)} characters")
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
        results = []
        for row in rows:
            load = os.getloadavg()[0]
            stdout, wall, rss, code, err = run_row(_row_command(row, args, audio, language), env, args.long_timeout)
            hyp = _hypothesis(row, stdout)
            metric = default_metric(language)
            r = score([reference], [hyp], metric=metric, language=language)
            results.append({"row": row, "wall_seconds": round(wall, 2), "rtf": round(wall / seconds, 4),
                            "peak_rss_mb": round(rss / 2**20), "exit_code": code, "metric": metric,
                            "error_rate": round(100 * r.error_rate, 2), "load_average_before": round(load, 2),
                            "hyp": hyp, "stderr_tail": err if code else ""})
            log(f"{row}: {wall:.0f} s, RTF {wall / seconds:.3f}, {metric.upper()} {100 * r.error_rate:.2f}%, "
                f"peak RSS {rss / 2**20:.0f} MB" + (f", exit {code}: {err[-300:]}" if code else ""))
    # speedup against the first of these rows that ran to the end
    base = next((r for name in ("hf-pipeline", "fw-sequential") for r in results
                 if r["row"] == name and r["exit_code"] == 0), None)
    for r in results:
        r["speedup"] = round(base["wall_seconds"] / r["wall_seconds"], 2) if base else None
        r["speedup_vs"] = base["row"] if base else None
    return {"benchmark": "inference-long", "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "settings": {"model": args.model, "data": str(args.long_data), "minutes": args.long_minutes,
                         "threads": args.threads, "rows": rows},
            "audio_seconds": round(seconds, 2), "language": language, "reference": reference, "rows": results}


LONG_LABELS = {
    "hf-pipeline": "transformers pipeline, chunk 30 s, batch 16 (Whisper-Finetune infer.py)",
    "fw-sequential": "faster-whisper transcribe, int8, beam 5",
    "fw-batched-8": "faster-whisper BatchedInferencePipeline, batch 8",
    "fw-batched-16": "faster-whisper BatchedInferencePipeline, batch 16",
    "wf-infer": "whisper-ft infer (transformers, greedy)",
    "wf-infer-ct2": "whisper-ft infer-ct2 (default)",
    "wf-infer-ct2-b1": "whisper-ft infer-ct2 --batch_size 1 (sequential)",
    "wf-infer-ct2-b16": "whisper-ft infer-ct2 --batch_size 16",
}


def format_long_table(result: dict) -> str:
    metric = result["rows"][0]["metric"].upper() if result["rows"] else "CER"
    lines = [f"| row | RTF | speedup | {metric} % | peak RSS |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        if r["exit_code"] == TIMED_OUT:
            lines.append(f"| {LONG_LABELS.get(r['row'], r['row'])} | > {r['rtf']:.3f} (stopped after "
                         f"{r['wall_seconds']:.0f} s) | - | - | {r['peak_rss_mb'] / 1024:.2f} GB |")
            continue
        lines.append(f"| {LONG_LABELS.get(r['row'], r['row'])} | {r['rtf']:.3f} | "
                     + (f"{r['speedup']:.2f}x" if r["speedup"] else "-")
                     + f" | {r['error_rate']:.2f} | {r['peak_rss_mb'] / 1024:.2f} GB |"
                     + ("" if r["exit_code"] == 0 else f" (exit {r['exit_code']})"))
    lines.append("")
    lines.append(f"{result['audio_seconds'] / 60:.1f} min recording ({result['language']}), model "
                 f"{result['settings']['model']}, {result['settings']['threads']} threads; wall time per row "
                 "includes loading the model and the audio; load average before each row: "
                 + ", ".join(f"{r['row']} {r['load_average_before']}" for r in result["rows"]))
    return "\n".join(lines)
