"""Joining a Ray cluster: something must answer at its address, and the driver must present the
cluster's token, set before Ray is imported (Ray reads `RAY_AUTH_MODE` then); a cluster that
still refuses the driver is one message naming the fix.

No Ray import here: the CLI calls `use_cluster_token` before anything imports Ray.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from search.space.config import ConfigError

RAY_CONNECT_SECONDS = 5.0


def check_ray_address(address: str) -> None:
    """Raise ConfigError unless something listens at a Ray cluster's "host:port".

    `ray.init` retries an address nobody answers at for minutes; a TCP connect says so in
    seconds. "auto" (find the cluster this machine belongs to) and "ray://" client addresses
    are left to Ray.
    """
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError([f"--address {address!r}: expected host:port of a Ray cluster's head"])
    try:
        socket.create_connection((host, int(port)), timeout=RAY_CONNECT_SECONDS).close()
    except OSError as err:
        raise ConfigError(
            [
                f"no Ray cluster answers at {address} ({err.strerror or err}); start one there "
                "with `ray start --head`, or leave out --address for a local Ray"
            ]
        ) from None


def use_cluster_token() -> bool:
    """Present a token when joining a Ray cluster, if one is at hand and RAY_AUTH_MODE is unset;
    to take effect, called before Ray is imported.

    Clusters started by `ray start` require token authentication since Ray 2.59, and a driver
    presents its token only with RAY_AUTH_MODE=token, which clusters without authentication
    accept too. The token is Ray's own: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, or the file
    `ray start` wrote (~/.ray/auth_token). Returns whether token mode is on.
    """
    if os.environ.get("RAY_AUTH_MODE"):
        return os.environ["RAY_AUTH_MODE"] == "token"
    sources = (os.environ.get("RAY_AUTH_TOKEN"), os.environ.get("RAY_AUTH_TOKEN_PATH"))
    if any(sources) or (Path.home() / ".ray" / "auth_token").is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        return True
    return False


def cluster_refused(address: str, err: Exception) -> ConfigError:
    """The one message for a Ray cluster that answers but does not let this driver join."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    fix = (
        "Clusters started by `ray start` (Ray 2.59 and later) require token authentication: "
        "give this driver the cluster's token in RAY_AUTH_TOKEN or in ~/.ray/auth_token "
        "(`ray get-auth-token` on the head node prints it)"
    )
    return ConfigError(
        [f"the Ray cluster at {address} did not let this driver join ({first}). {fix}"],
        source="--address",
    )
