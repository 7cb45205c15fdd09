"""``backend = "address"``: connect to a scheduler that is already running (``tcp://`` or ``tls://``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tomosweep.cluster.backends import Started
from tomosweep.cluster.settings import ClusterSettings
from tomosweep.errors import ClusterError


def security(settings: ClusterSettings) -> Any:
    """A ``distributed.Security`` for a ``tls://`` address (None for ``tcp://``), after checking the files."""
    if not (settings.address or "").startswith("tls://"):
        return None
    from distributed.security import Security

    paths = {"tls_ca_file": settings.tls_ca_file, "tls_cert": settings.tls_cert, "tls_key": settings.tls_key}
    for key, path in paths.items():
        if not path or not Path(path).is_file():
            raise ClusterError(f"[cluster] {key} = {path!r}: no such file (a PEM file is needed for tls://)")
    return Security(
        tls_ca_file=settings.tls_ca_file,
        tls_client_cert=settings.tls_cert,
        tls_client_key=settings.tls_key,
        require_encryption=True,
    )


def start(settings: ClusterSettings, *, environ: dict[str, Any]) -> Started:
    """Nothing to start: the client connects to ``settings.address``, whose workers are someone else's."""
    address = settings.address

    def no_worker(timeout: float) -> str:
        return f"at {address}: start workers with `dask worker {address}`"

    return Started(
        None, None, f"scheduler at {address}", address=address, security=security(settings), no_worker=no_worker
    )
