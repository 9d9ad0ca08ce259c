"""Pins for the GGUF header reader (written from the probes mutation run's survivors): v1's
32-bit counts, values of each kind, the byte budget at its edge, and every refusal's words.
Headers are built here byte by byte from the format's description (oasis_ops/probes/gguf.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from oasis_ops.probes.gguf import GgufError, gguf_architecture, read_gguf_metadata


def _count(n: int, version: int) -> bytes:
    return struct.pack("<I" if version == 1 else "<Q", n)


def _text(s: str | bytes, version: int) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return _count(len(raw), version) + raw


def _header(pairs: list[tuple[str, int, bytes]], version: int = 3) -> bytes:
    out = b"GGUF" + struct.pack("<I", version) + _count(0, version) + _count(len(pairs), version)
    for key, kind, value in pairs:
        out += _text(key, version) + struct.pack("<I", kind) + value
    return out


def test_a_v1_header_and_values_of_each_kind(tmp_path: Path) -> None:
    for version in (1, 2, 3):
        path = tmp_path / f"v{version}.gguf"
        path.write_bytes(_header([
            ("general.architecture", 8, _text("gemma3", version)),
            ("tokenizer.ggml.tokens", 9, struct.pack("<I", 8) + _count(2, version) + _text("a", version) + _text("bc", version)),
            ("gemma3.context_length", 4, struct.pack("<I", 131072)),
            ("general.signed", 5, struct.pack("<i", -7)),
            ("general.name", 8, _text(b"caf\xe9", version)),  # not UTF-8: replaced, not refused
            ("tokenizer.scores", 9, struct.pack("<I", 6) + _count(3, version) + b"\0" * 12),
            ("general.file_type", 10, struct.pack("<Q", 15)),
        ], version))  # fmt: skip
        meta = read_gguf_metadata(path)
        assert meta == {"general.architecture": "gemma3", "gemma3.context_length": 131072, "general.signed": -7,
                        "general.name": "caf\ufffd", "general.file_type": 15}, version  # fmt: skip
        assert gguf_architecture(path) == "gemma3"
        assert read_gguf_metadata(path, keys=["general.file_type"]) == {"general.file_type": 15}


def test_the_byte_budget_and_the_refusals(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    data = _header([("general.architecture", 8, _text("llama", 3))])
    path.write_bytes(data)
    assert read_gguf_metadata(path, max_bytes=len(data)) == {"general.architecture": "llama"}  # exactly the budget
    with pytest.raises(GgufError) as over:
        read_gguf_metadata(path, max_bytes=len(data) - 1)
    assert str(over.value) == f"GGUF header longer than {len(data) - 1:,} bytes: not read further"
    skipped = tmp_path / "skip.gguf"
    skip_data = _header([("v", 9, struct.pack("<I", 0) + _count(4, 3) + b"\0" * 4)])
    skipped.write_bytes(skip_data)
    assert read_gguf_metadata(skipped, max_bytes=len(skip_data)) == {}
    with pytest.raises(GgufError, match="GGUF header longer than"):
        read_gguf_metadata(skipped, max_bytes=len(skip_data) - 1)  # a skip past the budget is refused too
    truncated = tmp_path / "t.gguf"
    truncated.write_bytes(data[:-2])
    with pytest.raises(GgufError) as cut:
        read_gguf_metadata(truncated)
    assert str(cut.value) == "GGUF header is truncated" and gguf_architecture(truncated) is None
    cases = [
        (b"GGU", f"{tmp_path / 'x.gguf'} is not a GGUF file"),
        (b"GGUF" + struct.pack("<I", 4), f"{tmp_path / 'x.gguf'}: GGUF version 4 is not supported"),
        (_header([("k", 13, b"")]), "GGUF value type 13: not supported"),
        (_header([("k", 9, struct.pack("<I", 13) + _count(1, 3))]), "GGUF array of type 13: not supported"),
        (b"GGUF" + struct.pack("<I", 3) + _count(0, 3) + _count(70000, 3), f"{tmp_path / 'x.gguf'}: 70,000 metadata pairs is not a sane header"),
        (_header([])[:-8] + _count(1, 3) + _count(1 << 17, 3), "GGUF string of 131,072 bytes: not a sane header"),
    ]  # fmt: skip
    for raw, said in cases:
        (tmp_path / "x.gguf").write_bytes(raw)
        with pytest.raises(GgufError) as refused:
            read_gguf_metadata(tmp_path / "x.gguf")
        assert str(refused.value) == said
    with pytest.raises(GgufError) as missing:
        read_gguf_metadata(tmp_path / "nope.gguf")
    assert str(missing.value) == f"cannot read {tmp_path / 'nope.gguf'}: No such file or directory"


def test_a_v1_count_is_unsigned(tmp_path: Path) -> None:
    """v1 counts are uint32: 2**31 pairs is a huge count refused as such, not a negative one."""
    path = tmp_path / "v1.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 1) + _count(0, 1) + _count(1 << 31, 1))
    with pytest.raises(GgufError) as huge:
        read_gguf_metadata(path)
    assert str(huge.value) == f"{path}: 2,147,483,648 metadata pairs is not a sane header"
