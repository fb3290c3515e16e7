"""Peak memory of the paths a long file takes, each in its own process (peak RSS of the process):

- ``load``: ``whisper_ft.core.audio.load_audio`` of one hour of 48 kHz stereo FLAC (decoded and resampled
  block by block);
- ``sequential``: ``transcribe_ct2`` (faster-whisper's sequential long-form decode, in pieces of
  at most 5 minutes) of 30 minutes of audio with a tiny random model (only memory counts here);
- ``batched``: the same through the VAD + batched pipeline (batch 8).

Prints a table and writes JSON (command, commit, date) to benchmarks/results/memory.json.

    .venv/bin/python benchmarks/memory.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r'''
import resource, sys, numpy as np
sys.path.insert(0, {repo!r})
what, work = sys.argv[1], sys.argv[2]
if what == "load":
    from whisper_ft.core.audio import load_audio
    audio = load_audio(work + "/hour.flac")
    seconds = len(audio) / 16000
else:
    from whisper_ft.decoding.backend import load_backend
    from whisper_ft.decoding.ct2_transcribe import transcribe_ct2
    backend = load_backend(work + "/tiny-ct2", kind="ctranslate2", compute_type="float32", threads=1)
    audio = (0.3 * np.sin(np.arange(16000 * 1800) / 16000 * 2 * np.pi * 440)).astype(np.float32)
    transcribe_ct2(backend.ct2, audio, language="zh", beam_size=1, temperature=0.0,
                       batch_size=1 if what == "sequential" else 8)
    seconds = 1800
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
'''


def main() -> None:
    import numpy as np
    import soundfile as sf

    work = Path(tempfile.mkdtemp(prefix="wft-memory-"))
    sf.write(str(work / "hour.flac"), np.zeros((48_000 * 3600, 2), np.float32), 48_000, subtype="PCM_16")
    sys.path.insert(0, str(REPO))
    from tests.tiny_whisper import build_tiny_whisper
    from whisper_ft.models.ct2_export import convert_model

    convert_model(build_tiny_whisper(work / "tiny"), work / "tiny-ct2", quantization="float32")
    rows = []
    for what in ("load", "sequential", "batched"):
        out = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO)), what, str(work)],
                             capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        seconds, peak = map(float, out.stdout.split())
        rows.append({"path": what, "audio_seconds": seconds, "peak_rss_mb": round(peak)})
        print(f"| {what} | {seconds / 60:.0f} min | {peak:.0f} MB |", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    result = {"command": "python benchmarks/memory.py", "commit": commit, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    path = REPO / "benchmarks" / "results" / "memory.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"(commit {commit}; JSON: {path})")


if __name__ == "__main__":
    main()
