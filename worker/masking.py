"""Secrets masked out of everything a task's output reaches: log store, pages, GitHub, Slack.

One `Masker` per process holds every secret value the process knows: the settings' secrets (and
the key files they name) and secrets learned at run time (GitHub App installation tokens, added
by `worker.github.auth` as it mints them). It masks text, JSON-like data and dataclasses, and a
binary stream (`MaskingWriter`) in which a secret may arrive split across writes.

Masking is the second line of defence behind the local sandbox and the env stripping that keep
secrets away from tasks: it catches a value printed as is, not one a task encodes or splits
with other characters.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import threading
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast
from urllib.parse import quote, unquote, urlsplit

from pydantic import SecretStr

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from worker.settings import Settings

log = logging.getLogger(__name__)

MASK = "***"
MIN_SECRET_CHARS = 8
"""Shorter values are not masked: a 3-character "secret" would mask ordinary words in every log.
The consequence: a PEM's last body line, often a few characters, stays visible (harmless alone)."""
MAX_KEY_FILE_BYTES = 1 << 20
KEY_FILE_SETTINGS = ("github_app_private_key_path", "temporal_tls_key_path")
"""Settings naming files whose contents are secret (private keys)."""
URL_SETTINGS = (
    "github_api_url",
    "slack_api_url",
    "temporal_address",
    "skypilot_api_server_endpoint",
    "skypilot_bucket_url",
)
"""Settings that may carry credentials in their URL (`https://user:token@host`)."""

T = TypeVar("T")


def _fragments(secret: str) -> list[str]:
    """The forms of `secret` to mask: as is, unescaped, URL-quoted, and line by line when it
    spans lines.

    A PEM is masked whole and per base64 body line (its BEGIN/END and header lines are not
    secret), so a key printed with other line breaks, or one line of it, is still masked.
    """
    forms = {secret, secret.strip()}
    if "\\n" in secret:
        # One-line env values carry a PEM's newlines escaped.
        unescaped = secret.replace("\\n", "\n")
        forms |= {unescaped, unescaped.strip()}
    # As it appears in a URL someone printed (`quote` leaves plain tokens as they are).
    forms |= {quote(form, safe="") for form in list(forms) if "\n" not in form}
    for form in list(forms):
        if "\n" in form or "\r" in form:
            for line in form.splitlines():
                line = line.strip()
                if line.startswith("-----") or re.match(r"^[A-Za-z-]+: ", line):
                    continue
                forms.add(line)
    return [f for f in forms if len(f) >= MIN_SECRET_CHARS]


def _url_credentials(url: str) -> list[str]:
    try:
        parts = urlsplit(url if "//" in url else f"//{url}")
        # As written in the URL (percent-encoded) and as a client would send it.
        return [f for v in (parts.username, parts.password) if v for f in (v, unquote(v))]
    except ValueError:
        return []


def _read_key_file(path: Path) -> str | None:
    try:
        with path.expanduser().open("rb") as handle:
            return handle.read(MAX_KEY_FILE_BYTES).decode("utf-8", errors="replace")
    except OSError as err:
        # The bot may not be able to read the worker's key files; it masks what it can.
        log.debug("cannot read key file %s to mask it: %s", path, err)
        return None


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold: secret fields, key file contents, URL credentials."""
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            values.append(value.get_secret_value())
        elif name in KEY_FILE_SETTINGS and isinstance(value, Path):
            if (text := _read_key_file(value)) is not None:
                values.append(text)
        elif name in URL_SETTINGS and isinstance(value, str):
            values += _url_credentials(value)
    return values


@dataclasses.dataclass(frozen=True)
class _Patterns:
    text: re.Pattern[str] | None
    data: re.Pattern[bytes] | None
    longest_line: int
    """Bytes of the longest single-line secret: what a stream must hold back at most."""


def _alternation(values: Iterable[str]) -> str:
    # Longest first: at any position the longest secret wins (a PEM before one of its lines).
    return "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))


class Masker:
    """Replaces every known secret with `MASK`; thread-safe, and `add` may be called at any time.

    Values shorter than `MIN_SECRET_CHARS` are ignored (they would mask ordinary text).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._patterns = _Patterns(None, None, 0)
        self.add(*secrets)

    @classmethod
    def from_settings(cls, settings: Settings) -> Masker:
        return cls(settings_secrets(settings))

    @property
    def secrets(self) -> list[str]:
        """The values masked (every form of every secret), longest first."""
        with self._lock:
            return sorted(self._secrets, key=len, reverse=True)

    def add(self, *secrets: str | None) -> None:
        """Mask these values too from now on (tokens minted at run time, say)."""
        new = {f for s in secrets if s for f in _fragments(s)}
        with self._lock:
            if new <= self._secrets:
                return
            self._secrets |= new
            lines = [s.encode() for s in self._secrets if "\n" not in s and "\r" not in s]
            self._patterns = _Patterns(
                re.compile(_alternation(self._secrets)),
                re.compile(_alternation(s.decode() for s in lines).encode()) if lines else None,
                max((len(s) for s in lines), default=0),
            )

    def mask(self, text: str) -> str:
        pattern = self._patterns.text
        return text if pattern is None or not text else pattern.sub(MASK, text)

    def mask_bytes(self, data: bytes) -> bytes:
        """Mask a piece of a log; multi-line secrets are masked line by line."""
        pattern = self._patterns.data
        return data if pattern is None or not data else pattern.sub(MASK.encode(), data)

    def mask_data(self, value: T) -> T:
        """A copy of `value` with every string in it masked: in dataclasses (fields that `init`
        takes), lists, tuples, and dicts (keys too). Other values are returned as they are."""
        if self._patterns.text is None:
            return value
        return cast(T, self._masked(value))

    def _masked(self, value: Any) -> Any:
        if isinstance(value, Enum):
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, list):
            return [self._masked(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._masked(v) for v in value)
        if isinstance(value, dict):
            return {self._masked(k): self._masked(v) for k, v in value.items()}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {
                f.name: self._masked(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if f.init
            }
            return dataclasses.replace(value, **changes)
        return value

    def stream(self, raw: BinaryIO) -> MaskingWriter:
        return MaskingWriter(raw, self)

    def _cut(self, buf: bytes, start: int) -> int:
        """Where the masked prefix of `buf` may end: `start`, or past a secret that spans it."""
        pattern = self._patterns.data
        if pattern is None:
            return start
        window = max(0, start - self._patterns.longest_line)
        for match in pattern.finditer(buf, window):
            if match.start() >= start:
                break
            if match.end() > start:
                return match.end()
        return start


class MaskingWriter(io.BufferedIOBase):
    """A binary log writer that masks secrets, even one split across writes.

    Complete lines are masked and written at once (no secret spans lines: multi-line ones are
    masked line by line), so a followed log lags by at most the line being written. Of that
    partial line, all but the last `longest secret - 1` bytes are written too, so a line that
    never ends (a progress bar) neither grows in memory nor hides what it already printed.
    `close` writes the rest and flushes, but leaves the underlying file open.

    It has no `fileno`: handing the file descriptor to a process would bypass the masking.
    """

    def __init__(self, raw: BinaryIO, masker: Masker) -> None:
        super().__init__()
        self._raw = raw
        self._masker = masker
        self._pending = b""
        self._lock = threading.RLock()

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        chunk = bytes(data)
        with self._lock:
            if self.closed:
                raise ValueError("write to a closed log")
            buf = self._pending + chunk
            cut = buf.rfind(b"\n") + 1
            hold = max(0, self._masker._patterns.longest_line - 1)
            if len(buf) - cut > hold:
                cut = self._masker._cut(buf, len(buf) - hold)
            self._pending = buf[cut:]
            if cut:
                self._raw.write(self._masker.mask_bytes(buf[:cut]))
        return len(chunk)

    def flush(self) -> None:
        with self._lock:
            if not self.closed:
                self._raw.flush()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            if self._pending:
                self._raw.write(self._masker.mask_bytes(self._pending))
                self._pending = b""
            self._raw.flush()
            super().close()
