"""One quick question to the Hugging Face Hub before a long load: does this name exist?"""

from __future__ import annotations


def check_on_hub(name: str, kind: str, error: type[Exception]) -> None:
    """Fail in a second when a Hub model or dataset does not exist or the Hub is out of reach.

    `from_pretrained` and `load_dataset` retry an unreachable Hub for about half a minute and
    then only say they could not connect; one metadata request tells a missing repository from
    a missing network. Offline mode (HF_HUB_OFFLINE=1) skips the check so that a cached copy
    can be used.

    Args:
        name: The Hub id, `name` or `owner/name`.
        kind: "model" or "dataset".
        error: The exception type to raise, so each caller reports in its own terms.

    Raises:
        error: No such repository (or a private or gated one), or the Hub cannot be reached.
    """
    import huggingface_hub
    from huggingface_hub import constants, errors

    if constants.HF_HUB_OFFLINE:
        return
    info = getattr(huggingface_hub, f"{kind}_info")  # model_info or dataset_info
    try:
        info(name, timeout=10)
    except errors.RepositoryNotFoundError:
        raise error(
            f"{kind} {name!r} not found: not a local directory, and the Hub has no such "
            f"{kind} (or it is private or gated: log in with `hf auth login`)"
        ) from None
    except Exception as err:
        raise error(
            f"cannot reach the Hub to load {kind} {name!r} ({type(err).__name__}: {err}); "
            "set HF_HUB_OFFLINE=1 to use a cached copy"
        ) from None
