"""scripts/aishell1_gpu.sh and benchmarks/gpu_check.sh without a GPU: syntax (bash -n, shellcheck where
installed), their DRY_RUN=1 command lists -- every whisper-ft command they would run is parsed by the
real command line, so a wrong option fails here -- and the tables they end with, from reports in the
shapes compare, eval and the Trainer write."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPTS = [REPO / "scripts" / "aishell1_gpu.sh", REPO / "benchmarks" / "gpu_check.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_valid_bash(script):
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (bash -n passed)")
    done = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def dry_run(script: Path, tmp_path: Path, **env) -> list[list[str]]:
    full_env = {**os.environ, "DRY_RUN": "1", "WORK": str(tmp_path / "work"), **env}
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=full_env, cwd=tmp_path,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "work").exists()  # a dry run writes nothing
    return [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")]


def whisper_ft_args(command: list[str]) -> list[str] | None:
    """The arguments after ``whisper-ft`` / ``python -m whisper_ft`` / ``accelerate launch ... -m whisper_ft``."""
    if command[0] == "whisper-ft":
        return command[1:]
    if "-m" in command and command[command.index("-m") + 1] == "whisper_ft":
        return command[command.index("-m") + 2:]
    return None


def parse_with_the_cli(args: list[str]) -> None:
    """Parse (not run) a whisper-ft command line with the real commands: unknown options fail."""
    import typer

    from whisper_ft.cli import app

    def remaining(ctx) -> list[str]:  # a group's subcommand and its arguments (click keeps the name aside)
        return list(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])) + list(ctx.args)

    command = typer.main.get_command(app)
    ctx = command.make_context("whisper-ft", list(args), resilient_parsing=False)
    rest = remaining(ctx)
    while hasattr(command, "get_command"):  # groups, down to the command: `prepare aishell`
        assert rest, f"no subcommand in {args}"
        name, rest = rest[0], rest[1:]
        command = command.get_command(ctx, name)
        assert command is not None, f"no command {name!r} in {args}"
        ctx = command.make_context(name, rest, parent=ctx)  # parses the options: an unknown one raises
        rest = remaining(ctx)
    assert not ctx.args, f"unexpected arguments {ctx.args} in {args}"


def test_aishell1_dry_run_runs_the_whole_recipe(tmp_path):
    commands = dry_run(SCRIPTS[0], tmp_path, MODELS="tiny small", METHODS="lora full", NGPU="1",
                       ARCHIVE="data_aishell.tgz")
    cli = [whisper_ft_args(c) for c in commands]
    for args in filter(None, cli):
        parse_with_the_cli(args)
    names = [a[0] for a in cli if a]
    assert names[0] == "prepare" and cli[0][:4] == ["prepare", "aishell", "--filepath", "data_aishell.tgz"]
    finetunes = [a for a in cli if a and a[0] == "finetune"]
    assert [(a[a.index("--base_model") + 1], a[a.index("--method") + 1]) for a in finetunes] == [
        ("openai/whisper-tiny", "lora"), ("openai/whisper-tiny", "full"), ("openai/whisper-small", "lora"),
        ("openai/whisper-small", "full")]
    assert all(a[a.index("--test_data") + 1].endswith("dev.jsonl") for a in finetunes)  # best/ chosen on dev
    assert all("--bf16" in a for a in finetunes)
    merges = [a for a in cli if a and a[0] == "merge"]
    assert [a[a.index("--lora_model") + 1].split("/")[-2] for a in merges] == ["whisper-tiny", "whisper-small"]
    converts = [(a[a.index("--model") + 1], a[a.index("--quantization") + 1]) for a in cli if a and a[0] == "convert"]
    assert len(converts) == 8 and {q for _, q in converts} == {"float16", "int8_float16"}
    assert ("work/runs/full/whisper-tiny/best" in converts[2][0]) and "merged" in converts[0][0]
    evals = [a for a in cli if a and a[0] == "eval"]
    assert len(evals) == 8 and all(a[a.index("--backend") + 1] == "ct2" and "test.jsonl" in " ".join(a) for a in evals)
    compares = [a[a.index("--models") + 1] for a in cli if a and a[0] == "compare"]
    assert compares[0].startswith("base=openai/whisper-tiny,lora=") and len(compares) == 4
    assert commands[-1][:2] == ["python", "scripts/aishell1_table.py"]


def test_aishell1_dry_run_on_several_gpus_and_bad_settings(tmp_path):
    commands = dry_run(SCRIPTS[0], tmp_path, MODELS="base", METHODS="full", NGPU="4", PRECISION="fp16")
    launches = [c for c in commands if c[0] == "accelerate"]
    assert len(launches) == 1 and launches[0][launches[0].index("--num_processes") + 1] == "4"
    assert "--fp16" in launches[0] and not [c for c in commands if whisper_ft_args(c) and whisper_ft_args(c)[0] == "merge"]
    env = {**os.environ, "DRY_RUN": "1", "WORK": str(tmp_path / "w"), "METHODS": "qlora"}
    done = subprocess.run(["bash", str(SCRIPTS[0])], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2 and "error: METHODS takes lora, full, adalora (got qlora)" in done.stderr
    env = {**os.environ, "WORK": str(tmp_path / "w"), "NGPU": "0"}
    done = subprocess.run(["bash", str(SCRIPTS[0])], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 1 and "error: no GPU found" in done.stderr


def test_gpu_check_dry_run(tmp_path):
    commands = dry_run(SCRIPTS[1], tmp_path, CLIPS=str(tmp_path / "clips"))
    cli = [whisper_ft_args(c) for c in commands]
    for args in filter(None, cli):
        parse_with_the_cli(args)
    trains = [a for a in cli if a and a[0] == "finetune"]
    assert [("--bf16" in a, "--fp16" in a, "full" in a) for a in trains] == [(True, False, False), (False, True, False),
                                                                            (True, False, True)]
    assert all(a[a.index("--base_model") + 1] == "base" for a in trains)  # the bundled model: no download
    evals = [a for a in cli if a and a[0] == "eval"]
    kinds = [(a[a.index("--backend") + 1], a[a.index("--compute_type") + 1] if "--compute_type" in a else None,
              "--pack" in a) for a in evals]
    assert kinds == [("ct2", "float16", True), ("ct2", "float16", False), ("ct2", "int8_float16", True),
                     ("ct2", "int8_float16", False), ("hf", None, False)]
    assert commands[-1][1] == "benchmarks/gpu_check_summary.py"


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def test_aishell1_table_reads_the_reports(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import aishell1_table
    finally:
        sys.path.pop(0)
    work = tmp_path / "work"
    _write(work / "compare" / "whisper-base-lora" / "report.json", {"results": [
        {"set": "aishell_test", "model_index": 0, "metric": "cer", "error_rate": 0.2},
        {"set": "aishell_test", "model_index": 1, "metric": "cer", "error_rate": 0.091,
         "vs_reference": {"delta": -0.109, "low": -0.12, "high": -0.1, "significant": True}}]})
    _write(work / "eval" / "whisper-base-lora-float16" / "report.json", {"error_rate": 0.0925, "rtf": 0.01})
    _write(work / "time" / "whisper-base-lora.json", {"seconds": 5400, "gpus": 2, "precision": "bf16"})
    aishell1_table.main(["--work", str(work), "--models", "base", "--methods", "lora full"])
    out = capsys.readouterr().out
    assert "| whisper-base | lora | 20.00 | 9.10* | 9.25 | - | 1.5 h (2 GPU) | 22.20 | 9.00 |" in out
    assert "| whisper-base | full | - | - | - | - | - | 22.20 | 9.00 |" in out
    assert "db8dad541434839de151f4c5d0808753852d3a0c" in out
    saved = json.loads((work / "results.json").read_text())
    assert saved["rows"][0]["cer_after"] == 0.091 and saved["rows"][0]["interval"] == [-0.12, -0.1]


def test_gpu_check_summary_reads_the_steps(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_check_summary
    finally:
        sys.path.pop(0)
    work = tmp_path
    (work / "phases.tsv").write_text("lora-bf16\t0\t40.5\tpython -m whisper_ft finetune --bf16\n"
                                     "lora-fp16\t0\t42.0\tpython -m whisper_ft finetune --fp16\n"
                                     "ct2-float16-no_pack\t0\t12.0\teval ct2\n"
                                     "ct2-float16-pack\t0\t8.0\teval ct2 pack\n"
                                     "hf-cuda\t1\t30.0\teval hf\n")
    (work / "mem-lora-bf16.log").write_text("1200\n5300\n4100\n")
    for name, sps in (("lora-bf16", 40.0), ("lora-fp16", 32.0)):
        _write(work / name / "whisper-base" / "checkpoint-30" / "trainer_state.json", {
            "global_step": 30, "log_history": [{"loss": 2.5, "step": 1}, {"loss": 1.25, "step": 30},
                                               {"train_runtime": 15.0, "train_samples_per_second": sps}]})
    _write(work / "eval-ct2-float16-no_pack" / "report.json", {
        "error_rate": 0.1, "rtf": 0.02, "data": {"audio_seconds": 1000.0}, "time": {"decode_seconds": 20.0},
        "model": {"compute_type": "float16"}})
    _write(work / "eval-ct2-float16-pack" / "report.json", {
        "error_rate": 0.11, "rtf": 0.01, "data": {"audio_seconds": 1000.0}, "time": {"decode_seconds": 10.0}})
    gpu_check_summary.main(["--work", str(work), "--result", str(work / "out.json")])
    out = capsys.readouterr().out
    summary = json.loads((work / "out.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    assert steps["lora-bf16"]["peak_gpu_mib"] == 5300 and steps["lora-bf16"]["seconds_per_step"] == 0.5
    assert steps["hf-cuda"]["exit_code"] == 1 and steps["hf-cuda"]["peak_gpu_mib"] is None
    assert summary["ratios"]["ct2_float16_packed_vs_unpacked"] == 2.0
    assert summary["ratios"]["lora_bf16_vs_fp16_samples_per_second"] == 1.25
    assert summary["ratios"]["ct2_float16_unpacked_vs_transformers"] is None  # the transformers step failed
    assert "| lora-bf16 | 0 | 40.5 | 5300 | 40.0 | 0.5 | 2.500→1.250 |  |  |" in out
