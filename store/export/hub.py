"""Pushing an export to the Hugging Face Hub: checked before writing, then uploaded."""

from __future__ import annotations

import os

from evoinstruct.store.errors import EvoError, InputError
from evoinstruct.store.export.card import CARD_NAME, render_card
from evoinstruct.store.export.dataset import ExportResult

HUB_PROBE_TIMEOUT_S = 10.0


def check_hub_push(repo: str) -> None:
    """Refuse a push that cannot work before anything is written: a bad repo id, offline mode,
    no token."""
    from huggingface_hub import constants, get_token
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except Exception as exc:  # HFValidationError: the id's rules in one sentence
        raise InputError(" ".join(str(exc).split()), field="--push-to-hub") from None
    # The constant is read once at import; the environment is asked again for a late change.
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    if constants.HF_HUB_OFFLINE or offline:
        raise InputError(
            "HF_HUB_OFFLINE is set, so nothing can be pushed; unset it or leave out --push-to-hub",
            field="--push-to-hub",
        )
    if not get_token():
        raise InputError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login`", field="--push-to-hub"
        )


def _probe_hub(endpoint: str, timeout: float) -> str | None:
    """Why the Hub cannot be reached, or None. In a thread with a deadline: a name lookup
    that hangs (no network, a dead resolver) is bounded by no socket timeout."""
    import threading

    from huggingface_hub import get_session

    outcome: dict[str, BaseException] = {}

    def probe() -> None:
        try:
            get_session().head(endpoint, timeout=timeout)
        except BaseException as exc:  # reported, never raised, from this thread
            outcome["error"] = exc

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 2)
    if worker.is_alive():
        return f"no answer within {timeout:g} s"
    error = outcome.get("error")
    return None if error is None else " ".join(str(error).split()) or type(error).__name__


def push_to_hub(
    result: ExportResult,
    repo: str,
    *,
    private: bool = False,
    probe_timeout: float = HUB_PROBE_TIMEOUT_S,
) -> str:
    """Upload the export as a Hub dataset (Parquet shards via `datasets`) and its card;
    returns the repo's URL. Any failure is one EvoError (exit 1): the local files stay."""
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    kept = f"the export is written to {result.out}"
    problem = _probe_hub(endpoint, probe_timeout)
    if problem is not None:
        raise EvoError(f"cannot reach the Hub at {endpoint} ({problem}); {kept}")
    import datasets
    from huggingface_hub import utils as hub_utils

    # Progress bars on stderr would bury the one line a failure prints.
    bars = datasets.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    hub_utils.disable_progress_bars()
    try:
        from huggingface_hub import HfApi

        load = datasets.Dataset.from_parquet if result.out.suffix == ".parquet" else None
        data = (load or datasets.Dataset.from_json)(str(result.out), keep_in_memory=True)
        data.push_to_hub(repo, split=result.split, private=private or None)
        if result.card_data is not None:
            hub_files = [{"split": result.split, "path": f"data/{result.split}-*"}]
            text = render_card(result.card_data, hub_files, repo)
            HfApi(endpoint=endpoint).upload_file(
                path_or_fileobj=text.encode("utf-8"),
                path_in_repo=CARD_NAME,
                repo_id=repo,
                repo_type="dataset",
                commit_message="Dataset card from evoinstruct export",
            )
    except Exception as exc:  # network, auth, quota: one line, whatever the library
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise EvoError(f"pushing to {repo} failed ({reason}); {kept}") from None
    finally:
        if bars[0]:
            datasets.enable_progress_bars()
        if bars[1]:
            hub_utils.enable_progress_bars()
    return f"{endpoint}/datasets/{repo}"
