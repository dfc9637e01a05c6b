"""Which endpoints a portability package may be sent to (Art. 20(2), ``transmit_to``).

The run conf is written by whoever triggers the DAG; a free URL there would let it make the
worker POST personal data to any address it can reach (the metadata DB's host, a cloud
metadata service, an internal API). So ``transmit_to`` must be one of the receiving
controllers declared in configuration (``settings.RECEIVING_CONTROLLERS``) or a path below one,
over HTTPS. Plain HTTP is accepted only for a declared loopback endpoint (tests, local demos).
The comparison is on the parsed URL (scheme, host, port, path segments), never on the text,
so ``https://receiver.example@internal/`` or ``https://receiver.example.evil/`` do not pass.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
DEFAULT_PORTS = {"https": 443, "http": 80}
URL_MAX = 2000


def _parts(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    return parts if parts.hostname else None


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    return parts.scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(parts.scheme)


def _under(path: str, base: str) -> bool:
    base = base.rstrip("/")
    return path == base or path.startswith(base + "/") or (not base and path.startswith("/"))


def receiver_problem(url: object, declared: tuple[str, ...]) -> str | None:
    """Why ``url`` may not receive a package, or None when it is a declared receiver's endpoint."""
    if not isinstance(url, str) or len(url) > URL_MAX:
        return f"transmit_to: the receiving controller's endpoint as an https URL (at most {URL_MAX} characters)"
    parts = _parts(url)
    if parts is None or any(ch.isspace() or ord(ch) < 32 for ch in url):
        return "transmit_to: not a URL with a host; give the receiving controller's https endpoint"
    if parts.username is not None or parts.password is not None:
        return "transmit_to: credentials in the URL are not accepted; the receiver's token goes in the query string"
    if parts.scheme != "https" and not (parts.scheme == "http" and (parts.hostname or "") in LOOPBACK):
        return "transmit_to: must use https; personal data is not sent unencrypted"
    for endpoint in declared:
        allowed = _parts(endpoint)
        if allowed is not None and _origin(allowed) == _origin(parts) and _under(parts.path or "/", allowed.path):
            return None
    if not declared:
        return "transmit_to: no receiving controller is declared (DSR_RECEIVING_CONTROLLERS); ask ops to declare it"
    return (
        f"transmit_to: {parts.hostname} is not a declared receiving controller (DSR_RECEIVING_CONTROLLERS); "
        "only declared controllers receive packages"
    )
