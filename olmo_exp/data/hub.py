"""Can this process reach the Hugging Face hub? Asked once, answered in about a second.

Without it, an unreachable hub costs ~30 s of ``huggingface_hub``/``datasets`` retries (each
warning logged twice) before the same error; one short request tells us up front.
"""

from __future__ import annotations

import functools

from huggingface_hub import constants

from olmo_exp.base.errors import DataError

PROBE_TIMEOUT_S = 3.0


@functools.cache
def _probe(endpoint: str) -> str | None:
    """None if ``endpoint`` answers an HTTP request at all (any status), else why not.

    httpx honours HTTP(S)_PROXY like the hub client does, so a proxied machine counts as online.
    """
    import httpx

    try:
        httpx.head(endpoint, timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError as e:  # DNS failure, refused, timeout, TLS, proxy errors
        detail = str(e).splitlines()[0] if str(e) else ""
        return f"{type(e).__name__}: {detail}" if detail else type(e).__name__
    return None


def hub_unreachable() -> str | None:
    """Why the hub can't be used (offline declared, or no route to it), or None if it can."""
    # What the hub client itself obeys: HF_HUB_OFFLINE and HF_ENDPOINT, read at its import.
    if constants.HF_HUB_OFFLINE:
        return "the hub is offline (HF_HUB_OFFLINE)"
    endpoint = constants.ENDPOINT
    reason = _probe(endpoint)
    return None if reason is None else f"the hub ({endpoint}) cannot be reached ({reason})"


def require_hub(what: str, fix: str) -> None:
    """DataError ``<what>: <why the hub can't be used>; <fix>`` unless the hub can be used."""
    reason = hub_unreachable()
    if reason is not None:
        raise DataError(f"{what}: {reason}; {fix}")
