"""Checks of an uploaded artifact, done without loading it. One code path for the API upload and
the S3-event upload: both call :func:`inspect_model` / :func:`inspect_requirements` and then
:func:`modelport.services.versions.register_version`.
"""

from __future__ import annotations

import zlib
from typing import IO

from modelport.artifacts.pickle_scan import ScanError, scan_model_file
from modelport.artifacts.storage import sha256_of
from modelport.domain.errors import BadRequest, TooLarge
from modelport.domain.pickle_policy import PicklePolicy
from modelport.domain.requirements import parse_requirements
from modelport.domain.skops_schema import is_skops
from modelport.settings import Settings

#: how a file that joblib or pickle can load begins
_PICKLE_PROTOCOL_MARK = 0x80  # protocol 2+ pickles start with PROTO
_PROTOCOL_0_STARTS = {b"(", b"c", b"]", b"}", b")"}  # MARK, GLOBAL, empty list/dict/tuple: protocols 0-1
_JOBLIB_COMPRESSED = (
    b"ZF", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"]\x00\x00", b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18"
)


class Inspected:
    """What a check found: the file's digest and size (the file itself is left at offset 0)."""

    def __init__(self, sha256: str, size: int) -> None:
        self.sha256 = sha256
        self.size = size


def _measure(stream: IO[bytes], limit: int, what: str) -> Inspected:
    stream.seek(0)
    sha, size = sha256_of(stream)
    stream.seek(0)
    if size == 0:
        raise BadRequest(f"{what} is empty", code="empty_file")
    if size > limit:
        raise TooLarge(f"{what} is {size} bytes; the limit is {limit} bytes", code="file_too_large")
    return Inspected(sha, size)


def looks_like_model_file(head: bytes) -> bool:
    """A pickle (protocols 0-1 by their first opcode, 2+ by PROTO), one of joblib's compressed
    containers, or a skops archive."""
    if not head:
        return False
    if head[0] == _PICKLE_PROTOCOL_MARK or head[:1] in _PROTOCOL_0_STARTS:
        return True
    if head.startswith(_JOBLIB_COMPRESSED) or is_skops(head):
        return True
    # joblib's zlib container: a bare zlib stream
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        try:
            zlib.decompressobj().decompress(head, 16)
            return True
        except zlib.error:
            return False
    return False


def inspect_model(stream: IO[bytes], settings: Settings, policy: PicklePolicy | None = None) -> Inspected:
    """Size, format and the allow-list check (``policy``: the version's; the plain list when None)."""
    found = _measure(stream, settings.max_upload_bytes, "the model file")
    head = stream.read(16)
    stream.seek(0)
    if not looks_like_model_file(head):
        raise BadRequest(
            "the model file is not a pickle or joblib file (save it with joblib.dump or pickle.dump)",
            code="not_a_model_file",
        )
    check_pickle_safety(stream, settings, policy)
    return found


def check_pickle_safety(stream: IO[bytes], settings: Settings, policy: PicklePolicy | None = None) -> None:
    """Refuse a model the model server would refuse to load; the file is never loaded.

    ``unsafe_model``: a global that is not on modelport's allow-list (named in the message, as the
    server would name it); ``unverifiable_model``: the file cannot be followed statically to its
    end, so nothing can be said about it (fail closed).
    """
    try:
        verdict = scan_model_file(stream, settings.max_upload_bytes, policy)
    except ScanError as exc:
        raise BadRequest(f"the model file cannot be checked for safety: {exc}", code="unverifiable_model") from exc
    finally:
        stream.seek(0)
    if not verdict.safe:
        names = ", ".join(verdict.dangerous)
        raise BadRequest(
            f"unsafe model: loading it would call {names}, which is not on modelport's allow-list (classes and "
            "helpers of scikit-learn, NumPy, SciPy and joblib); it was not loaded. If the class is your own, "
            "list it in the version's trusted_globals.",
            code="unsafe_model",
        )


def inspect_requirements(stream: IO[bytes], settings: Settings) -> Inspected:
    found = _measure(stream, settings.max_requirements_bytes, "requirements.txt")
    try:
        text = stream.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("requirements.txt is not UTF-8 text", code="bad_requirements") from exc
    finally:
        stream.seek(0)
    parse_requirements(text)
    return found
