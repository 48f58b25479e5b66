"""The publish stage's check before the loop runs (pipeline/stages.py ``preflight``): an upload needs a token and
a Hub that answers, found out before any stage trains rather than after."""

from __future__ import annotations

HUB_TIMEOUT_S = 10.0  # one whoami request; a Hub that has not answered by then is not one to train for


def check_hub(config) -> None:
    """A publish stage that uploads (``publish.dry_run: false``; ``config`` is its PublishConfig) needs a token
    and a Hub that answers; both are checked with one whoami request (``HUB_TIMEOUT_S``) before the loop runs, so
    neither fails only after the training. The token goes only into that request's Authorization header."""
    from huggingface_hub import constants, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    from pipeline.errors import PipelineError
    from publish.upload import _first_line, _unreachable  # the upload's own reading of a Hub error

    if config.dry_run is not None:
        return
    where, fallback = f"the Hub at {constants.ENDPOINT}", "or set publish.dry_run: true to write the files only"
    token = get_token()
    if not token:
        raise PipelineError(f"stage publish: no Hugging Face token: set HF_TOKEN or run `hf auth login`, {fallback}")
    try:
        reply = get_session().get(f"{constants.ENDPOINT}/api/whoami-v2", headers=build_hf_headers(token=token),
                                  timeout=HUB_TIMEOUT_S)
        hf_raise_for_status(reply)
    except OfflineModeIsEnabled:
        raise PipelineError(f"stage publish: {where} is unreachable in offline mode (HF_HUB_OFFLINE=1); unset it, "
                            f"{fallback}") from None
    except HfHubHTTPError as e:  # the Hub answered (an OSError too, so caught before the network errors)
        status = e.response.status_code if e.response is not None else None
        if status == 429:  # whoami's strict rate limit: the Hub is there, and the upload will check the token
            return
        why = "refused the token (401): set a valid HF_TOKEN or run `hf auth login --force`" if status == 401 \
            else f"answered {status}: {_first_line(e)}"
        raise PipelineError(f"stage publish: {where} {why}") from None
    except _unreachable() as e:
        raise PipelineError(f"stage publish: could not reach {where} ({_first_line(e)}); check the network, or "
                            f"HF_ENDPOINT if it is set, {fallback}") from None
    try:
        role = ((reply.json().get("auth") or {}).get("accessToken") or {}).get("role")
    except (ValueError, AttributeError):  # not the Hub's JSON: nothing more to learn from it
        role = None
    if role == "read":
        raise PipelineError("stage publish: the Hugging Face token is read-only; publishing needs a token with "
                            "write access (or a fine-grained one that may write the repository)")
