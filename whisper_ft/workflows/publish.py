"""Publish a model folder: refresh its model card (``whisper-ft card``) and upload it to the Hugging
Face hub (``whisper-ft push``, ``--push_to_hub`` on finetune and merge).

:func:`update_card` (re)writes a folder's ``README.md`` with the results of an ``eval`` or
``compare`` report added to what the folder already records (never over a README the user wrote:
:func:`whisper_ft.models.card.place_card`). :func:`push_folder` creates the repository
(``exist_ok``) and uploads the folder through ``huggingface_hub`` (``create_repo`` +
``upload_folder``) to ``HF_ENDPOINT`` (default https://huggingface.co). Every problem a user can fix
is one line: no token, offline mode, a hub that cannot be reached, a token it refuses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from whisper_ft.core.console import log
from whisper_ft.core.errors import WhisperFtError

KINDS = {"adapter": "adapter", "hf": "model", "ct2": "ctranslate2"}
IGNORED = [".*", "**/.*", "*.tmp", "__pycache__/*"]  # staging leftovers and hidden files stay home


@dataclass
class PushResult:
    repo_id: str
    url: str
    commit: str | None
    files: int

    def to_dict(self) -> dict:
        return {"repo_id": self.repo_id, "url": self.url, "commit": self.commit, "files": self.files}


def model_folder(path: str | Path) -> tuple[Path, str]:
    """``path`` as a model folder and its card kind (adapter, model, ctranslate2); one line otherwise."""
    from whisper_ft.models.registry import local_kind

    folder = Path(path)
    if not folder.is_dir():
        raise WhisperFtError(f"--model {folder}: no such folder; give a model folder (best/, merged or converted)")
    kind = local_kind(folder)
    if kind is None and local_kind(folder / "best") is not None:  # a run folder: its best/
        folder, kind = folder / "best", local_kind(folder / "best")
    if kind is None:
        raise WhisperFtError(f"--model {folder} is not a model folder: give a run's best/, a merged model or a "
                             "converted (CTranslate2) folder")
    return folder, KINDS[kind]


def update_card(model: str | Path, *, eval_reports=(), compare_report: str | Path | None = None,
                compare_model: str | None = None) -> Path | None:
    """Rewrite ``model``'s generated card with these reports' results added; returns the card (None:
    the folder holds the user's own README.md, which is left alone)."""
    from whisper_ft.models.card import (
        CARD_FILE,
        base_facts,
        place_card,
        read_facts,
        with_compare_report,
        with_eval_report,
    )

    folder, kind = model_folder(model)
    facts = read_facts(folder)
    if facts is None:
        facts = base_facts(folder.resolve().name, kind=kind, base_model=None, source=str(folder))
    for report in eval_reports:
        facts = with_eval_report(facts, _read_report(report, "--eval_report", "metric"))
    if compare_report is not None:
        facts = with_compare_report(facts, _read_report(compare_report, "--compare_report", "results"),
                                    this_model=compare_model)
    written = place_card(folder, facts)
    if written is not None:
        log(f"model card written: {folder / CARD_FILE}")
    return written


def _read_report(path: str | Path, option: str, key: str) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WhisperFtError(f"{option} {path}: cannot read it ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise WhisperFtError(f"{option} {path} is not JSON: give the report.json the command wrote") from exc
    if not isinstance(data, dict) or key not in data:
        raise WhisperFtError(f"{option} {path} is not a whisper-ft {option[2:].split('_')[0]} report.json "
                             f"(no {key!r})")
    return data


def resolve_token(token: str | None) -> str:
    """``--token``, else ``HF_TOKEN``, else the token ``hf auth login`` stored; one line when none."""
    if token:
        return token
    from huggingface_hub import get_token

    found = os.environ.get("HF_TOKEN") or get_token()
    if not found:
        raise WhisperFtError("no Hugging Face token: pass --token, set HF_TOKEN, or log in once with `hf auth login` "
                             "(a token with write access: https://huggingface.co/settings/tokens)")
    return found


def check_repo_id(repo_id: str) -> str:
    repo_id = (repo_id or "").strip()
    parts = repo_id.split("/")
    if not repo_id or len(parts) > 2 or not all(parts) or any(c.isspace() for c in repo_id):
        raise WhisperFtError(f"--repo_id {repo_id!r} is not a repository name: use NAME or OWNER/NAME "
                             "(e.g. my-org/whisper-base-zh)")
    return repo_id


def check_push_target(repo_id: str) -> str:
    """What ``--push_to_hub REPO_ID`` checks before a command does its work (a bad name or a missing
    token fails in a second, not after a training run or a conversion); returns the name."""
    repo_id = check_repo_id(repo_id)
    resolve_token(None)
    return repo_id


def push_folder(model: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str | None = None, eval_reports=(), compare_report: str | Path | None = None,
                compare_model: str | None = None) -> PushResult:
    """Upload ``model`` (a best/, merged or converted folder) to the hub repository ``repo_id``; the
    reports (see :func:`update_card`) go into its card first, once every check passed."""
    from whisper_ft.models.card import CARD_FILE
    from whisper_ft.models.registry import hub_endpoint, is_offline

    folder, kind = model_folder(model)
    repo_id = check_repo_id(repo_id)
    if is_offline():
        raise WhisperFtError("push needs the hub, and offline mode is on (--offline, HF_HUB_OFFLINE=1 or "
                             "WHISPER_FT_OFFLINE=1): unset it to upload")
    token = resolve_token(token)
    if eval_reports or compare_report is not None or not (folder / CARD_FILE).is_file():
        # the results asked for, or the card of a folder from an older version
        update_card(folder, eval_reports=eval_reports, compare_report=compare_report, compare_model=compare_model)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    files = sum(1 for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts))
    log(f"uploading {folder} ({kind}, {files} files) to {endpoint}/{repo_id}" + (" (private)" if private else ""))
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=str(getattr(url, "repo_id", None) or repo_id),
                                 repo_type="model", ignore_patterns=IGNORED,
                                 commit_message=commit_message or f"Upload {folder.name} with whisper-ft")
    except HfHubHTTPError as exc:
        raise WhisperFtError(_http_message(exc, endpoint, repo_id)) from exc
    except ValueError as exc:  # the hub's check of README.md's metadata
        raise WhisperFtError(f"the hub refused {folder / CARD_FILE}: {' '.join(str(exc).split())}; fix its YAML "
                             "metadata (or `whisper-ft card` to write a fresh one)") from exc
    except (OSError, ConnectionError) as exc:
        raise WhisperFtError(f"cannot reach the Hugging Face hub at {endpoint} ({_first_line(exc)}): check the "
                             "network, or HF_ENDPOINT for a mirror") from exc
    except Exception as exc:
        if _is_connection_error(exc):
            raise WhisperFtError(f"cannot reach the Hugging Face hub at {endpoint} ({_first_line(exc)}): check the "
                                 "network, or HF_ENDPOINT for a mirror") from exc
        raise
    return PushResult(repo_id=str(getattr(url, "repo_id", None) or repo_id), url=str(url),
                      commit=getattr(info, "oid", None), files=files)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_connection_error(exc: BaseException) -> bool:
    """httpx/requests transport errors (huggingface_hub's HTTP client), without importing either."""
    for cls in type(exc).__mro__:
        if cls.__name__ in {"ConnectError", "ConnectTimeout", "ConnectionError", "TransportError", "ReadTimeout",
                            "RemoteProtocolError", "NetworkError", "TimeoutException"}:
            return True
    return False


def _http_message(exc, endpoint: str, repo_id: str) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 401:
        return f"the hub at {endpoint} refused the token (401): check --token / HF_TOKEN (it needs write access)"
    if status == 403:
        return f"the token may not write to {repo_id} (403): use a token with write access to that owner"
    return f"the hub at {endpoint} answered {status or 'an error'} for {repo_id}: {_first_line(exc)}"
