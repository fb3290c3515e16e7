"""AISHELL-1 (OpenSLR 33) -> train/dev/test manifests.

The release archive ``data_aishell.tgz`` holds::

    data_aishell/transcript/aishell_transcript_v0.8.txt   # "UTTID w1 w2 ..." (word-segmented)
    data_aishell/wav/S0002.tar.gz ...                      # one per speaker, each holding
                                                           #   {train,dev,test}/S0002/UTTID.wav

We extract the outer archive once into ``target_dir/data_aishell`` and each speaker archive in place
(as the Kaldi/wenet recipes do), each step atomically and marked done, so a re-run only re-probes
the audio and rewrites the manifests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.core.errors import DataError
from whisper_ft.data.archive import download, safe_extract
from whisper_ft.data.common import (
    Candidate,
    PrepareOptions,
    PrepareReport,
    SkipReason,
    parallel_map,
    read_text,
    select,
    write_splits,
)

SPLITS = ("train", "dev", "test")
ARCHIVE_NAME = "data_aishell.tgz"
ARCHIVE_MD5 = "2f494334227864a8a8fec932999db9d8"
# The official location first, then OpenSLR's mirrors (same files, same checksums).
ARCHIVE_URLS = (
    "https://www.openslr.org/resources/33/data_aishell.tgz",
    "https://us.openslr.org/resources/33/data_aishell.tgz",
    "https://openslr.elda.org/resources/33/data_aishell.tgz",
    "https://openslr.magicdatatech.com/resources/33/data_aishell.tgz",
)
TRANSCRIPT = Path("transcript") / "aishell_transcript_v0.8.txt"
DONE = ".whisper_ft_done"  # marker of a finished extraction


@dataclass
class AishellLayout:
    """An extracted ``data_aishell`` folder."""

    root: Path

    @property
    def transcript(self) -> Path:
        return self.root / TRANSCRIPT

    @property
    def wav_dir(self) -> Path:
        return self.root / "wav"

    def speaker_archives(self) -> list[Path]:
        return sorted(self.wav_dir.glob("*.tar.gz"))


def _marker(archive: Path) -> Path:
    return archive.with_name(f".{archive.name}{DONE}")


def find_layout(folder: Path) -> AishellLayout | None:
    """``folder`` itself or its ``data_aishell`` child, when it holds the transcript and wav folder."""
    for root in (folder, folder / "data_aishell"):
        if (root / TRANSCRIPT).is_file() and (root / "wav").is_dir():
            return AishellLayout(root)
    return None


def download_aishell(target_dir: str | Path, urls: tuple[str, ...] | None = None,
                     md5: str = ARCHIVE_MD5) -> Path:
    """Download ``data_aishell.tgz`` (15 GB) into ``target_dir``, resumable and md5-checked."""
    if os.environ.get("WHISPER_FT_OFFLINE") == "1":
        raise DataError(f"offline mode: cannot download {ARCHIVE_NAME}; pass --filepath /path/to/{ARCHIVE_NAME}")
    return download(urls or ARCHIVE_URLS, Path(target_dir) / ARCHIVE_NAME, md5=md5)


def extract_release(archive: Path, target_dir: Path, report: PrepareReport) -> AishellLayout:
    """Extract the outer release archive into ``target_dir/data_aishell`` unless already done."""
    from whisper_ft.core.console import log

    root = target_dir / "data_aishell"
    marker = root / DONE
    if marker.is_file() and find_layout(root):
        report.work["release_archive_reused"] += 1
        return AishellLayout(root)
    log(f"extracting {archive} into {root} (AISHELL-1 is 15 GB: this takes a while)")
    # The top folder must be data_aishell/; stripping it lets us extract straight into `root`.
    moved = safe_extract(archive, root, strip="data_aishell")
    layout = find_layout(root)
    if not moved or layout is None:
        raise DataError(f"{archive} is not the AISHELL-1 release: it lacks data_aishell/{TRANSCRIPT.as_posix()} "
                        "and data_aishell/wav/ (pass data_aishell.tgz from OpenSLR 33)")
    marker.write_text(f"{archive.name}\n")
    report.work["release_archive_extracted"] += 1
    return layout


def extract_speakers(layout: AishellLayout, report: PrepareReport, num_workers: int) -> None:
    """Extract every ``wav/SXXXX.tar.gz`` not yet extracted; a bad one is skipped and counted."""
    todo = [a for a in layout.speaker_archives() if not _marker(a).is_file()]
    if reused := len(layout.speaker_archives()) - len(todo):
        report.work["speaker_archives_reused"] += reused
    if not todo:
        return

    def one(archive: Path) -> str | None:
        try:
            safe_extract(archive, layout.wav_dir)
        except DataError as exc:
            return str(exc)
        _marker(archive).write_text("")
        return None

    for archive, error in zip(todo, parallel_map(one, todo, num_workers, desc="extracting speakers",
                                                  unit="archive")):
        if error is None:
            report.work["speaker_archives_extracted"] += 1
        else:
            report.skip(SkipReason.BAD_ARCHIVE, str(archive), error)


def read_transcript(path: Path) -> dict[str, str]:
    """``UTTID w1 w2 ...`` -> {UTTID: "w1w2..."}: AISHELL words are separated by spaces, Chinese
    text is written without them."""
    texts: dict[str, str] = {}
    for line in read_text(path).splitlines():
        parts = line.split()
        if parts:
            texts[parts[0]] = "".join(parts[1:])
    return texts


def collect(layout: AishellLayout, report: PrepareReport, language: str | None) -> list[Candidate]:
    """Pair each ``wav/{split}/SPK/UTTID.wav`` with its transcript; count the unpaired ones."""
    texts = read_transcript(layout.transcript)
    candidates: list[Candidate] = []
    found: set[str] = set()
    for split in SPLITS:
        for wav in sorted((layout.wav_dir / split).glob("*/*.wav")):
            utt = wav.stem
            found.add(utt)
            if utt not in texts:
                report.skip(SkipReason.NO_TRANSCRIPT, str(wav))
                continue
            candidates.append(Candidate(audio=wav, text=texts[utt], split=split, id=utt, language=language))
    for utt in sorted(set(texts) - found):
        report.skip(SkipReason.MISSING_AUDIO, utt, "listed in the transcript, no wav in any split")
    return candidates


def prepare_aishell(filepath: str | Path | None, target_dir: str | Path = "dataset",
                    options: PrepareOptions | None = None) -> PrepareReport:
    """Prepare AISHELL-1 from the release archive, an extracted folder, or (``None``) a download.

    Writes ``train.jsonl``, ``dev.jsonl`` and ``test.jsonl`` into ``target_dir`` (audio paths
    relative to it) and returns the report.
    """
    options = options or PrepareOptions(language="zh")
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    report = PrepareReport(source="aishell", output=target_dir)
    if filepath is None:
        filepath = download_aishell(target_dir)
    filepath = Path(filepath).expanduser()
    if filepath.is_dir():
        layout = find_layout(filepath)
        if layout is None:
            raise DataError(f"{filepath} is not an extracted AISHELL-1 folder: expected {TRANSCRIPT.as_posix()} and "
                            "wav/ inside it or inside its data_aishell/ (or pass --filepath data_aishell.tgz)")
    elif filepath.is_file():
        layout = extract_release(filepath, target_dir, report)
    else:
        raise DataError(f"AISHELL-1 not found at {filepath}: pass --filepath data_aishell.tgz or the extracted "
                        "data_aishell/ folder (or omit --filepath to download it)")
    extract_speakers(layout, report, options.num_workers)
    candidates = collect(layout, report, options.language)
    if not candidates and not any(s.reason is SkipReason.NO_TRANSCRIPT for s in report.skipped):
        raise DataError(f"no wav found under {layout.wav_dir}/{{train,dev,test}}/: is the AISHELL-1 folder complete?")
    by_split = select(candidates, options, report)
    for split in SPLITS:
        by_split.setdefault(split, [])
    return write_splits(by_split, {s: target_dir / f"{s}.jsonl" for s in SPLITS}, report)
