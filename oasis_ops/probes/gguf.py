"""The metadata header of a GGUF weights file (what a runner's `--model` blob is).

Only the key/value header is read, never a tensor: `general.architecture` decides Ollama's
flash-attention default per model, and `<arch>.context_length`, `general.parameter_count`,
`general.file_type` fill `/api/show` in the demo. Layout (GGUF v2/v3, little-endian): magic
`GGUF`, uint32 version, uint64 tensor count, uint64 key/value count, then per pair a string key
(uint64 length + UTF-8 bytes), a uint32 value type and the value; arrays are a uint32 item type,
a uint64 count and the items. v1 used uint32 for the counts and string lengths.

Bounded: at most `max_bytes` of header are read (a tokenizer's vocabulary arrays are skipped by
seeking, not decoded), keys and strings longer than sane limits end the read with a clear
error, and `stop_after` ends it as soon as the wanted keys were seen (the architecture is
the first key in files written by llama.cpp's tools).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from typing import Any, BinaryIO

from oasis_ops.errors import DataError

MAGIC = b"GGUF"
DEFAULT_MAX_BYTES = 64 << 20  # a 256k-token vocabulary is ~5 MB of header; never read weights
MAX_KEY_BYTES = 1 << 16
MAX_STRING_BYTES = 1 << 24
MAX_PAIRS = 1 << 16

# value type -> (struct format, size) for the fixed-size scalars
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}  # fmt: skip
_STRING, _ARRAY = 8, 9


class GgufError(DataError):
    """Not a GGUF file, or a header we refuse to read further."""


class _Reader:
    def __init__(self, handle: BinaryIO, max_bytes: int, version: int) -> None:
        self.handle = handle
        self.max_bytes = max_bytes
        self.version = version

    def need(self, size: int) -> bytes:
        if self.handle.tell() + size > self.max_bytes:
            raise GgufError(f"GGUF header longer than {self.max_bytes:,} bytes: not read further")
        data = self.handle.read(size)
        if len(data) != size:
            raise GgufError("GGUF header is truncated")
        return data

    def skip(self, size: int) -> None:
        if self.handle.tell() + size > self.max_bytes:
            raise GgufError(f"GGUF header longer than {self.max_bytes:,} bytes: not read further")
        self.handle.seek(size, os.SEEK_CUR)

    def count(self) -> int:
        return int(struct.unpack("<I" if self.version == 1 else "<Q", self.need(4 if self.version == 1 else 8))[0])

    def string(self, limit: int = MAX_STRING_BYTES) -> str:
        length = self.count()
        if length > limit:
            raise GgufError(f"GGUF string of {length:,} bytes: not a sane header")
        return self.need(length).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self.count()
        if length > MAX_STRING_BYTES:
            raise GgufError(f"GGUF string of {length:,} bytes: not a sane header")
        self.skip(length)

    def value(self, kind: int, keep: bool) -> Any:
        if kind in _SCALARS:
            fmt, size = _SCALARS[kind]
            if not keep:
                self.skip(size)
                return None
            return struct.unpack(fmt, self.need(size))[0]
        if kind == _STRING:
            if keep:
                return self.string()
            self.skip_string()
            return None
        if kind == _ARRAY:
            item = int(struct.unpack("<I", self.need(4))[0])
            length = self.count()
            if item in _SCALARS:
                self.skip(_SCALARS[item][1] * length)  # arrays are never kept: vocabularies
            elif item == _STRING:
                for _ in range(length):
                    self.skip_string()
            else:
                raise GgufError(f"GGUF array of type {item}: not supported")
            return None
        raise GgufError(f"GGUF value type {kind}: not supported")


def read_gguf_metadata(
    path: str | os.PathLike[str],
    *,
    keys: Iterable[str] | None = None,
    stop_after: Iterable[str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, Any]:
    """Scalar and string metadata of a GGUF file (arrays are skipped). `keys` limits what is
    kept; the read ends once every key of `stop_after` was seen. Raises GgufError."""
    wanted = set(keys) if keys is not None else None
    stop = set(stop_after or ())
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise GgufError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        head = handle.read(8)
        if len(head) < 8 or head[:4] != MAGIC:
            raise GgufError(f"{path} is not a GGUF file")
        version = int(struct.unpack("<I", head[4:8])[0])
        if version not in (1, 2, 3):
            raise GgufError(f"{path}: GGUF version {version} is not supported")
        reader = _Reader(handle, max_bytes, version)
        reader.count()  # tensor count
        pairs = reader.count()
        if pairs > MAX_PAIRS:
            raise GgufError(f"{path}: {pairs:,} metadata pairs is not a sane header")
        out: dict[str, Any] = {}
        for _ in range(pairs):
            key = reader.string(MAX_KEY_BYTES)
            kind = int(struct.unpack("<I", reader.need(4))[0])
            keep = wanted is None or key in wanted
            value = reader.value(kind, keep)
            if keep and value is not None:
                out[key] = value
            if stop and stop <= out.keys():
                break
        return out


def gguf_architecture(path: str | os.PathLike[str]) -> str | None:
    """`general.architecture` of a GGUF file (e.g. `gemma3`, `llama`), or None if unreadable."""
    try:
        meta = read_gguf_metadata(path, keys=["general.architecture"], stop_after=["general.architecture"])
    except DataError:
        return None
    arch = meta.get("general.architecture")
    return arch if isinstance(arch, str) and arch else None
