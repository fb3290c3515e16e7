"""``whisper-ft calibrate``: measure which CTranslate2 compute type ``--compute_type auto`` picks for a
model on this machine, now, on the user's speech (or synthesized English), and cache it
(:mod:`whisper_ft.decoding.calibration` has the rules)."""

from __future__ import annotations

from pathlib import Path

from whisper_ft.core.errors import WhisperFtError


def calibrate_model(model: str, audio: list[str] | None = None, *, language: str | None = None,
                    device: str = "auto", cpu_threads: int | None = None):
    """The :class:`~whisper_ft.decoding.calibration.Calibration` measured now (and cached)."""
    from whisper_ft.core.languages import normalize_language
    from whisper_ft.decoding.calibration import calibrate, clips_from_files
    from whisper_ft.decoding.ct2_loading import default_cpu_threads, ensure_ct2_folder, resolve_device

    folder = ensure_ct2_folder(model)
    device, _ = resolve_device(device, "auto")
    if audio:
        missing = [a for a in audio if not Path(a).is_file()]
        if missing:
            raise WhisperFtError(f"audio file {missing[0]} does not exist: give files with speech in your language")
        lang = normalize_language(language)
        clips = clips_from_files(audio, [lang] * len(audio))
        if not clips:
            raise WhisperFtError(f"none of the {len(audio)} audio file(s) could be read: give wav/flac/mp3 files")
    else:
        from whisper_ft.data.calibration_speech import synthesized_clips

        clips = synthesized_clips()
    return calibrate(folder, device, cpu_threads or default_cpu_threads(), clips)


def render_calibration(cal) -> str:
    """The measured table: one row per candidate, the choice marked."""
    rows = ["| compute type | fastest run | drift vs float32 | |", "|---|---|---|---|"]
    for m in cal.measured:
        seconds = "did not run" if m.seconds is None else f"{m.seconds:.2f} s"
        drift = "reference" if m.compute_type == "float32" else ("-" if m.drift_points is None else f"{m.drift_points:+.2f} pts")
        mark = "chosen" if m.compute_type == cal.chosen else (f"refused: {m.refused}" if m.refused else "")
        rows.append(f"| {m.compute_type} | {seconds} | {drift} | {mark} |")
    machine = cal.key["machine"]
    rows.append("")
    rows.append(f"{cal.key['model']['path']} on {machine['device']} ({machine['cpu']}: "
                f"{', '.join(machine['instruction_sets']) or 'no AVX2/AVX-512/VNNI/AMX'}; {machine['threads']} threads), "
                f"{cal.describe_clips()}; beam 5, packed windows. auto = {cal.chosen}.")
    return "\n".join(rows)
