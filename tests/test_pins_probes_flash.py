"""Pins for the per-model flash-attention answer (written from the probes mutation run's
survivors): which server.log statements count, the last one winning, values as words, and the
unknown answer when nothing tells."""

from __future__ import annotations

from oasis_ops.probes.flash import FlashAttentionSetting, model_flash_attention

BLOB = "/m/blobs/sha256-" + "ab" * 32
OTHER = "/m/blobs/sha256-" + "cd" * 32


def _said(source: str, value: object, model: str | None = BLOB, evidence: str = "e") -> dict[str, object]:
    return {"source": source, "value": value, "model": model, "evidence": evidence}


def test_the_server_logs_last_word_for_this_model_counts_with_its_value_as_a_word() -> None:
    for source in ("load request", "enabling flash attention", "flash attention not supported", "runner cmd"):
        got = model_flash_attention(blob=BLOB, version="0.20.4", statements=[_said(source, False, evidence=f"{source} said")])
        assert got == FlashAttentionSetting("off", "server log", f"server.log: {source} said", "off"), source
    latest = model_flash_attention(blob=BLOB, statements=[_said("load request", False), _said("runner cmd", True, evidence="later")])
    assert (latest.value, latest.detail) == ("on", "server.log: later")  # a restart: the latest wins
    auto = model_flash_attention(blob=BLOB, statements=[_said("load request", None)])
    assert (auto.value, auto.setting, auto.source) == ("on", "auto", "server log")  # neither true nor false: auto
    # another model's statements, or a source that is not about this load, do not count
    others = [_said("load request", False, model=OTHER), _said("server config", False)]
    unknown = model_flash_attention(blob=BLOB, version=None, statements=others)
    assert unknown == FlashAttentionSetting(None, "unknown", "Ollama version unknown: its default cannot be told", None)


def test_the_runner_command_line_names_the_blob_when_none_is_given() -> None:
    cmd = ["/usr/lib/ollama/llama-server", "--model", BLOB, "--port", "1", "--flash-attn", "auto"]
    settled = [_said("llama.cpp context", False, evidence="flash_attn = 0")]
    got = model_flash_attention(runner_cmdline=cmd, statements=settled)
    assert got == FlashAttentionSetting("off", "runner --flash-attn", "runner pid's command line: --flash-attn auto; "
                                        "llama.cpp resolved it: flash_attn = 0", "auto")  # fmt: skip
    plain = ["/usr/lib/ollama/llama-server", "--model", BLOB, "--port", "1"]
    from_log = model_flash_attention(runner_cmdline=plain, statements=[_said("load request", True, evidence="FlashAttention:Enabled")])
    assert (from_log.value, from_log.source) == ("on", "server log")  # the command line's blob found the statement
    default = model_flash_attention(runner_cmdline=plain, version="0.20.4", architecture="gemma3", statements=settled)
    assert default == FlashAttentionSetting("on", "version default", "Ollama 0.20.4 turns flash attention on by itself for "
                                            "architecture gemma3 (its allow-list), unless a GPU lacks support", "on")  # fmt: skip


def test_the_log_tail_starts_at_a_whole_line_and_is_never_more_than_asked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from oasis_ops.probes.flash import read_log_tail

    log = tmp_path / "server.log"
    log.write_bytes(b"first\nsecond\nthird caf\xc3\xa9 \xff\n")
    assert read_log_tail(log) == "first\nsecond\nthird caf\u00e9 \ufffd\n"  # all of it, invalid bytes replaced
    size = log.stat().st_size
    assert read_log_tail(log, max_bytes=size) == read_log_tail(log)  # the whole file: its first line kept
    assert read_log_tail(log, max_bytes=size - 1) == "second\nthird caf\u00e9 \ufffd\n"  # cut mid-line: from the next
    assert read_log_tail(log, max_bytes=size - 6) == "second\nthird caf\u00e9 \ufffd\n"  # cut right after a newline
    assert read_log_tail(log, max_bytes=5) == ""  # no whole line in the tail
    one = tmp_path / "one.log"
    one.write_bytes(b"x" * 50)
    assert read_log_tail(one, max_bytes=10) == "" and read_log_tail(one, max_bytes=50) == "x" * 50
    assert read_log_tail(tmp_path) == "" and read_log_tail(tmp_path / "missing.log") == ""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_log_tail(fifo) == ""  # never opened: it would block


def test_the_default_server_log_is_ollamas_own_when_it_exists(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from oasis_ops.probes.flash import default_server_log, env_flag_value

    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_server_log() is None  # none there: no guess
    log = tmp_path / ".ollama" / "logs" / "server.log"
    log.parent.mkdir(parents=True)
    log.write_text("x\n")
    assert default_server_log() == log and default_server_log("~/other.log") == tmp_path / "other.log"
    assert default_server_log("/var/log/ollama.log") == Path("/var/log/ollama.log")  # given: taken as is
    assert [env_flag_value(v) for v in ("'1'", ' "false" ', "''", "yes")] == ["on", "off", None, "on"]


def test_auto_is_settled_only_by_llama_cpps_own_line_for_this_model() -> None:
    cmd = ["/usr/lib/ollama/llama-server", "--model", BLOB, "--flash-attn", "auto"]
    unsettled = model_flash_attention(runner_cmdline=cmd, statements=[_said("load request", False)])  # not llama.cpp's line
    assert (unsettled.value, unsettled.source, unsettled.setting) == ("on", "runner --flash-attn", "auto")
    assert unsettled.detail.startswith("runner pid's command line: --flash-attn auto; auto: ")
    no_value = model_flash_attention(runner_cmdline=cmd, statements=[_said("llama.cpp context", None)])
    assert no_value.value == "on" and "llama.cpp resolved it" not in no_value.detail
    on = model_flash_attention(runner_cmdline=cmd, statements=[_said("llama.cpp context", True, evidence="flash_attn = 1")])
    assert (on.value, on.source, on.setting) == ("on", "runner --flash-attn", "auto") and on.detail.endswith("flash_attn = 1")
    explicit = model_flash_attention(runner_cmdline=[*cmd[:-1], "off"])
    assert explicit == FlashAttentionSetting("off", "runner --flash-attn", "runner pid's command line: --flash-attn off", "off")


def test_the_model_probe_asks_each_source_for_each_loaded_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ModelProbe.flash_attention: the serve's environment (of the serve asked for, not another),
    each runner's command line, the blob's architecture with the version's default, and the log."""
    import struct
    from datetime import UTC, datetime

    import httpx

    from oasis_ops.probes import ModelProbe, ModelSnapshot
    from oasis_ops.probes.ollama import OllamaClient, model_status_from_ps
    from oasis_ops.probes.processes import records_from

    gguf = tmp_path / ("sha256-" + "ef" * 32)
    key, value = b"general.architecture", b"gemma3"
    gguf.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<I", 8)
                     + struct.pack("<Q", len(value)) + value)  # fmt: skip
    serves = [{"pid": 100, "ppid": 1, "name": "ollama", "cmdline": ["/usr/bin/ollama", "serve"], "create_time": 1.0, "environ": {}},
              {"pid": 300, "ppid": 1, "name": "ollama", "cmdline": ["/opt/ollama", "serve"], "create_time": 2.0,
               "environ": {"OLLAMA_FLASH_ATTENTION": "1"}}]  # fmt: skip
    records = records_from(serves)
    client = OllamaClient("http://127.0.0.1:9", transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    probe = ModelProbe(client, lambda: records, models_dir=tmp_path, serve_pid=100)
    now = datetime(2025, 11, 20, 17, 58, tzinfo=UTC)

    def snap(name: str, blob: str | None, cmdline: tuple[str, ...] | None) -> ModelSnapshot:
        return ModelSnapshot(ts=now, status=model_status_from_ps({"name": name}, now), blob_path=blob, runner_pid=None,
                             runner_create_time=None, runner_rss_bytes=None, runner_cpu_percent=None, runner_threads=None,
                             runner_cmdline=cmdline, runner_variant=None, runner_port=None, note=None)  # fmt: skip

    log = tmp_path / "server.log"
    log.write_text("")
    server, per_model = probe.flash_attention(
        [snap("by-arch:1", str(gguf), None), snap("by-cmd:1", None, ("llama-server", "--model", str(gguf), "--flash-attn", "off"))],
        "0.20.4", log)  # fmt: skip
    assert (per_model["by-arch:1"].value, per_model["by-arch:1"].source) == ("on", "version default")  # gemma3 on 0.20.4
    assert "architecture gemma3" in per_model["by-arch:1"].detail
    assert (per_model["by-cmd:1"].value, per_model["by-cmd:1"].source) == ("off", "runner --flash-attn")
    assert server.source == "version default" and "Ollama 0.20.4 decides per model" in server.detail  # serve 100: unset
    unknown, _ = probe.flash_attention([], None)
    assert "Ollama (version unknown) decides per model" in unknown.detail
    other = ModelProbe(client, lambda: records, models_dir=tmp_path, serve_pid=300)
    assert other.flash_attention([], "0.20.4")[0].value == "on"  # that serve's environment says 1
    client.close()


def test_the_setting_as_a_record() -> None:
    setting = FlashAttentionSetting("on", "runner --flash-attn", "--flash-attn on", setting="auto")
    assert setting.as_dict() == {"value": "on", "setting": "auto", "source": "runner --flash-attn", "detail": "--flash-attn on"}


def test_an_auto_in_the_log_is_settled_by_llama_cpp_s_line_for_this_model() -> None:
    statements = [_said("load request", None, evidence="FlashAttention:Auto"),
                  _said("llama.cpp context", False, evidence="flash_attn = 0"),
                  _said("llama.cpp context", True, model=None, evidence="flash_attn = 1 (no model known)")]  # fmt: skip
    got = model_flash_attention(blob=BLOB, statements=statements)
    assert got == FlashAttentionSetting("off", "server log", "server.log: FlashAttention:Auto; llama.cpp resolved it: flash_attn = 0", "auto")
