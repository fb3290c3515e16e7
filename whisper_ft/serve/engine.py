"""The server's decoding: served models, and one batching worker per model.

Requests that arrive while a model's worker is busy (or within ``batch_window_ms`` of the first
one) are decoded together: clips of at most 30 s in one CTranslate2 batch (the backend's
``transcribe_clips``), longer files and word-timestamp requests one by one through the backend's
``transcribe``, exactly as ``infer-ct2`` decodes a file (the same segments). Decoding runs in one worker thread per model, never on the event
loop; a failing request gets its own error and never fails the others of its batch.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from whisper_ft.core.audio import CHUNK_SECONDS, SAMPLE_RATE
from whisper_ft.core.console import log
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.memory import return_freed_memory
from whisper_ft.core.results import Transcription

WHISPER_1 = "whisper-1"  # OpenAI's model name: served as the first model


@dataclass(frozen=True)
class EngineSettings:
    beam_size: int = 5
    batch_window_ms: float = 30.0  # wait this long after a request for others to batch with it
    max_batch_size: int = 16  # short clips per CTranslate2 batch
    long_batch_size: int = 8  # faster-whisper's batched pipeline for files over 30 s (1 = sequential)
    default_language: str | None = None  # when a request gives none (None: detected)
    # short clips (<= decoding.batched.PACK_MAX_CLIP_SECONDS) of one language share 30 s windows: the CPU
    # fast path, on by default at no measured accuracy cost (docs/benchmarks.md, benchmarks/pack_accuracy.py)
    pack: bool = True
    temperature_fallback: bool = True  # temperature 0: re-decode a looping clip at higher temperatures (as OpenAI)
    default_prompt: str | None = None  # serve --prompt: the previous text of a request that sends no prompt
    hotwords: str | None = None  # serve --hotwords: favoured on every request, after its prompt

    def __post_init__(self):
        if self.beam_size < 1 or self.max_batch_size < 1 or self.long_batch_size < 1 or self.batch_window_ms < 0:
            raise WhisperFtError("beam_size, max_batch_size and long_batch_size must be >= 1, batch_window_ms >= 0")

    def options_prompts(self, prompt: str | None) -> dict[str, str | None]:
        """A request's ``initial_prompt`` and ``hotwords`` (DecodingOptions fields): its own prompt, else
        --prompt; --hotwords always. One rule for short clips and long files (``text_prompt`` joins them)."""
        return {"initial_prompt": prompt or self.default_prompt, "hotwords": self.hotwords}


@dataclass
class ServedModel:
    id: str  # the name clients use (the folder's name, or the name as given for bundled models)
    names: frozenset[str]  # every name that selects it
    backend: object  # whisper_ft.decoding.backend.CTranslate2Backend: transcribe_clips (batches), transcribe
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class DecodeJob:
    """One request's audio and decoding choices (language and task already validated).

    ``audio`` is the decoded clip, or None with ``load`` set: a long (or unknown-length) file is
    decoded to samples in the model's worker thread, one at a time, so the server's memory holds
    at most one long file per model however many are queued. ``cancel`` is set when the client
    leaves or the server stops: the job is skipped, or its long-form decode stops at the next segment.
    """

    audio: np.ndarray | None
    task: str = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None  # None or 0: greedy/beam with OpenAI's temperature fallback
    word_timestamps: bool = False
    load: Callable[[], np.ndarray] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    on_segment: Callable | None = None  # called in the worker thread as each long-form segment is decoded
    beam_size: int | None = None  # None: the server's --beam_size (live captions decode partial text greedily)
    fallback: bool = True  # the temperature fallback may run (when the server has it on)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE if self.audio is not None else float("inf")

    def loaded(self) -> DecodeJob:
        if self.audio is None and self.load is not None:
            self.audio = self.load()
        return self


class _DaemonThread:
    """A one-thread executor whose thread never holds the process at exit: on SIGTERM the server
    must be gone in seconds, not after a CTranslate2 call that cannot be interrupted."""

    def __init__(self, name: str):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        self._queue.put((future, fn, args))
        return future

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                future.set_exception(exc)

    def shutdown(self) -> None:
        self._queue.put(None)

    def join(self, timeout: float) -> bool:
        """Wait for the thread to finish its last call; False when it is still inside one."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def model_names(name: str) -> tuple[str, frozenset[str]]:
    """The id and all names of a model given as ``name`` on the command line."""
    path = Path(name)
    ident = path.name if path.name else name
    return ident, frozenset({name, ident, str(path)})


def load_models(names: list[str], *, device: str = "auto", compute_type: str = "auto",
                cpu_threads: int | None = None, calibrate: bool = False) -> list[ServedModel]:
    """Open every model (any name whisper-ft can resolve; non-CTranslate2 models are converted once
    into the cache); raises when two share a name. ``compute_type="auto"``: the calibrated choice,
    measured on synthesized speech when a model was never calibrated here (``calibrate``: again)."""
    from whisper_ft.decoding.backend import load_backend

    def synthesized_clips():  # imported only when a model is calibrated (not on the fast path)
        from whisper_ft.data.calibration_speech import synthesized_clips as speech

        return speech()

    served: list[ServedModel] = []
    for name in names:
        ident, aliases = model_names(name)
        for other in served:
            if other.names & aliases:
                raise WhisperFtError(f"two --model_path values are both called {ident!r}: give each model its own folder name")
        backend = load_backend(name, kind="ctranslate2", device=device, compute_type=compute_type,
                               threads=cpu_threads, calibration_clips=synthesized_clips, calibrate=calibrate)
        if not hasattr(backend, "transcribe_clips"):
            raise WhisperFtError(f"{name} is a speech-LLM run: the server decodes Whisper models with CTranslate2 "
                                 "only; transcribe it with `whisper-ft infer --model_path RUN`")
        log(f"serving {ident!r}: {backend.describe()}")
        served.append(ServedModel(ident, aliases, backend))
    if not served:
        raise WhisperFtError("no model to serve: pass --model_path")
    return served


@dataclass
class _Pending:
    job: DecodeJob
    future: asyncio.Future


@dataclass
class EngineStats:
    requests: int = 0
    failed: int = 0
    short_batches: Counter = field(default_factory=Counter)  # batch size -> how many batches
    long_requests: int = 0
    fallbacks: int = 0
    cancelled: int = 0  # stopped mid-decode: the client left or the server stopped
    audio_seconds: float = 0.0
    busy_seconds: float = 0.0  # time the decoding threads spent in batches (busy / audio: the real-time factor)

    def to_dict(self) -> dict:
        return {"requests": self.requests, "failed": self.failed,
                "batches": {str(k): v for k, v in sorted(self.short_batches.items())},
                "max_batch": max(self.short_batches, default=0), "long_requests": self.long_requests,
                "fallbacks": self.fallbacks, "cancelled": self.cancelled, "audio_seconds": round(self.audio_seconds, 3),
                "busy_seconds": round(self.busy_seconds, 3)}


class _ModelWorker:
    """Collects one model's jobs into batches and decodes them in its own thread."""

    def __init__(self, model: ServedModel, settings: EngineSettings, stats: EngineStats):
        self.model, self.settings, self.stats = model, settings, stats
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.executor = _DaemonThread(f"decode-{model.id}")
        self.task: asyncio.Task | None = None
        self.running: list[DecodeJob] = []  # the batch in the worker thread now

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.settings.batch_window_ms / 1000
            while len(batch) < self.settings.max_batch_size:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            batch = [p for p in batch if not p.future.done() and not p.job.cancel.is_set()]  # clients that went away
            if not batch:
                continue
            self.running = [p.job for p in batch]
            try:
                outcomes = await asyncio.wrap_future(self.executor.submit(self.decode, self.running))
            except Exception as exc:  # noqa: BLE001 - a bug here must fail these requests, not stop the worker
                outcomes = [exc] * len(batch)
            finally:
                self.running = []
            for p, outcome in zip(batch, outcomes):
                if p.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    p.future.set_exception(outcome)
                else:
                    p.future.set_result(outcome)

    # --- in the worker thread ---------------------------------------------------------------

    def decode(self, jobs: list[DecodeJob]) -> list[Transcription | BaseException]:
        started = time.perf_counter()
        outcomes: list[Transcription | BaseException | None] = [None] * len(jobs)
        short = [i for i, j in enumerate(jobs)
                 if j.audio is not None and j.duration <= CHUNK_SECONDS and not j.word_timestamps]
        if short:
            self.stats.short_batches[len(short)] += 1
            try:
                for i, out in zip(short, self._short([jobs[i] for i in short])):
                    outcomes[i] = out
            except Exception:  # noqa: BLE001 - find out whose clip failed: each alone
                for i in short:
                    outcomes[i] = self._guarded(lambda job=jobs[i]: self._short([job])[0])
        for i, job in enumerate(jobs):
            if outcomes[i] is None:
                self.stats.long_requests += 1
                outcomes[i] = self._guarded(lambda job=job: self._single(job.loaded()))
                if job.load is not None:
                    job.audio = None  # decoded in this thread: freed before the next long file
        from whisper_ft.decoding.batched import DecodeCancelled

        for out in outcomes:
            self.stats.requests += 1
            if isinstance(out, DecodeCancelled):
                self.stats.cancelled += 1
            elif isinstance(out, BaseException):
                self.stats.failed += 1
            elif isinstance(out, Transcription):
                self.stats.audio_seconds += out.duration
        # glibc keeps freed heap per thread arena: a soak of hostile clients grew the server from
        # 0.37 to 0.60 GB that was free but never returned
        return_freed_memory()
        self.stats.busy_seconds += time.perf_counter() - started
        return outcomes  # type: ignore[return-value]

    @staticmethod
    def _guarded(fn):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - handed to that request only
            return exc

    def _short(self, jobs: list[DecodeJob]) -> list[Transcription]:
        from whisper_ft.decoding.batched import Clip
        from whisper_ft.decoding.options import DecodingOptions

        out: list = [None] * len(jobs)
        by_beam: dict[int, list[int]] = {}
        for i, j in enumerate(jobs):
            by_beam.setdefault(j.beam_size or self.settings.beam_size, []).append(i)
        for beam, idx in by_beam.items():  # one CTranslate2 batch per beam size
            clips = [Clip(jobs[i].audio, jobs[i].language or self.settings.default_language, jobs[i].task,
                          DecodingOptions(**self.settings.options_prompts(jobs[i].prompt)).text_prompt,
                          jobs[i].temperature or 0.0) for i in idx]
            results = self.model.backend.transcribe_clips(clips, beam_size=beam, pack=self.settings.pack)
            for i, r in zip(idx, results):
                if r.needs_fallback and self.settings.temperature_fallback and jobs[i].fallback:  # OpenAI's temperature 0: raise the temperature until it stops looping
                    self.stats.fallbacks += 1
                    out[i] = self._single(jobs[i], fallback=True)
                else:
                    out[i] = r.transcription
        return out

    def _single(self, job: DecodeJob, fallback: bool = False) -> Transcription:
        """One request through the model's ``transcribe``, as ``infer-ct2`` decodes a file: the same
        segments for the same audio and options (sequential with timestamps below
        ``AUTO_BATCH_FROM_SECONDS``, the VAD + batched pipeline with timestamps from there on)."""
        from whisper_ft.decoding.batched import DecodeCancelled
        from whisper_ft.decoding.ct2 import AUTO_BATCH_FROM_SECONDS
        from whisper_ft.decoding.options import DecodingOptions

        def stop_if_cancelled(segment) -> None:
            if job.cancel.is_set():
                raise DecodeCancelled()
            if job.on_segment is not None:  # a streaming client gets it now
                job.on_segment(segment)

        from whisper_ft.decoding.batched import clip_token_budget

        options = DecodingOptions(
            language=job.language or self.settings.default_language, task=job.task,
            beam_size=job.beam_size or self.settings.beam_size,
            temperature=job.temperature or 0.0, **self.settings.options_prompts(job.prompt),
            word_timestamps=job.word_timestamps,
            timestamps=True, batch_size=self.settings.long_batch_size if job.duration >= AUTO_BATCH_FROM_SECONDS else 1,
            # a short clip that loops on noise (or on a hostile prompt) ends at its budget
            max_new_tokens=clip_token_budget(job.duration) if job.duration <= CHUNK_SECONDS else None)
        if not job.temperature and job.fallback and (fallback or self.settings.temperature_fallback):
            options = options.with_fallback()  # OpenAI's temperature 0: raise it while the output loops
        return self.model.backend.transcribe(job.audio, options, on_segment=stop_if_cancelled)


class Engine:
    """The served models and their batching workers (start them inside the event loop)."""

    def __init__(self, models: list[ServedModel], settings: EngineSettings | None = None):
        self.models = models
        self.settings = settings or EngineSettings()
        self.stats = EngineStats()
        self._workers: dict[str, _ModelWorker] = {}
        self._stopped: list[_ModelWorker] = []

    def names(self) -> list[str]:
        return [m.id for m in self.models]

    def find(self, name: str | None) -> ServedModel | None:
        """The model a request names (none, or ``whisper-1``: the first); None when unknown."""
        if not name or name == WHISPER_1:
            return self.models[0]
        return next((m for m in self.models if name in m.names), None)

    async def start(self) -> None:
        for m in self.models:
            worker = _ModelWorker(m, self.settings, self.stats)
            worker.task = asyncio.create_task(worker.run(), name=f"batcher-{m.id}")
            self._workers[m.id] = worker

    def join(self, timeout: float) -> bool:
        """After :meth:`stop`: wait up to ``timeout`` s for the decoding threads to leave their last
        call (a thread still inside CTranslate2 when the interpreter exits aborts the process)."""
        deadline = time.monotonic() + timeout
        return all(w.executor.join(max(0.0, deadline - time.monotonic())) for w in self._stopped)

    async def stop(self) -> None:
        """Cancel what is queued or decoding (a long-form decode stops at its next segment)."""
        self._stopped = list(self._workers.values())
        for w in self._workers.values():
            for job in w.running:
                job.cancel.set()
            while not w.queue.empty():
                w.queue.get_nowait().job.cancel.set()
            if w.task is not None:
                w.task.cancel()
            w.executor.shutdown()
        self._workers.clear()

    def queued(self, model: ServedModel) -> int:
        """Jobs of ``model`` waiting or being decoded (live captions decode partial text only at 0)."""
        worker = self._workers.get(model.id)
        return 0 if worker is None else worker.queue.qsize() + len(worker.running)

    async def transcribe(self, model: ServedModel, job: DecodeJob) -> Transcription:
        """Decode ``job``; when the caller is cancelled (client gone, shutdown) the job is too."""
        future = asyncio.get_running_loop().create_future()
        await self._workers[model.id].queue.put(_Pending(job, future))
        try:
            return await future
        finally:
            if not future.done() or future.cancelled():
                job.cancel.set()
