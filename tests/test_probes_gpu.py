"""The GPU probe: NVML through its seam (a pynvml-like module), nvidia-smi and rocm-smi through a
command runner fed recorded outputs (tests/fixtures/gpu/SOURCES.md), and this machine, which has
no GPU: a clean "none" with the reason for each source, no exception."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers_gpu import NVMLError, fake_nvml

from oasis_ops.probes.gpu import GpuProbe, parse_nvidia_smi_csv, parse_rocm_smi_json

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gpu"
MIB = 1024 * 1024


def no_tools(name: str) -> None:
    return None


def test_nvml_gives_every_gpu_figure_and_each_runners_vram() -> None:
    nvml = fake_nvml()
    snap = GpuProbe(nvml=nvml, which=no_tools).read()
    assert snap.source == "nvml" and nvml.calls == ["init", "shutdown"]
    (gpu,) = snap.gpus
    assert (gpu.name, gpu.uuid, gpu.memory_free_bytes, gpu.utilization_percent, gpu.temperature_c, gpu.power_w) == (
        "NVIDIA GeForce RTX 4090", "GPU-5f1e0c2a-aaaa", 4_282_384_384, 97.0, 71.0, 215.412)
    assert snap.vram_of(4242) == 20_000_000_000 and snap.vram_of(99) is None and snap.vram_of(1) is None
    (row,) = snap.as_rows()
    assert row["source"] == "nvml" and row["memory_used_bytes"] == 21_474_836_480 and row["gpu_index"] == 0
    assert GpuProbe(nvml=fake_nvml(power=False), which=no_tools).read().gpus[0].power_w is None  # not supported: unknown


def test_no_driver_falls_through_to_nvidia_smi_then_rocm_smi() -> None:
    gpus = ("0, GPU-5f1e0c2a-aaaa, NVIDIA A10, 23028, 20480, 2548, 88, 64, 121.53\n"
            "1, GPU-77aa, NVIDIA A10, 23028, 1, 23027, 0, 30, [N/A]\n")  # fmt: skip
    apps = "4242, GPU-5f1e0c2a-aaaa, 20400\n4243, GPU-77aa, [N/A]\n"
    ran: list[list[str]] = []

    def run(argv: list[str], timeout_s: float) -> str:
        ran.append(argv)
        return gpus if "--query-gpu" in argv[1] else apps

    snap = GpuProbe(nvml=fake_nvml(init_error=NVMLError("Driver Not Loaded")), run=run,
                    which=lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None).read()  # fmt: skip
    assert snap.source == "nvidia-smi" and snap.note == "nvml: no NVIDIA driver (Driver Not Loaded)"
    assert [g.memory_used_bytes for g in snap.gpus] == [20480 * MIB, 1 * MIB] and snap.gpus[1].power_w is None
    assert snap.vram_of(4242) == 20400 * MIB and snap.processes[0].gpu_index == 0 and snap.vram_of(4243) is None
    assert ran[0][1].startswith("--query-gpu=index,uuid,name,memory.total")
    amd = (FIXTURES / "rocm-smi-7900xt.json").read_text()
    snap = GpuProbe(nvml=fake_nvml(init_error=NVMLError("x")), run=lambda argv, t: amd,
                    which=lambda name: "/opt/rocm/bin/rocm-smi" if name == "rocm-smi" else None).read()  # fmt: skip
    (gpu,) = snap.gpus
    assert snap.source == "rocm-smi" and gpu.vendor == "amd" and gpu.name == "Radeon RX 7900 XT"
    assert (gpu.memory_total_bytes, gpu.memory_used_bytes, gpu.utilization_percent) == (21_458_059_264, 27_856_896, 0.0)
    assert gpu.memory_free_bytes == 21_458_059_264 - 27_856_896 and snap.note == "nvml: no NVIDIA driver (x); nvidia-smi: not installed"


def test_a_tool_that_hangs_or_prints_junk_is_no_answer_and_no_exception() -> None:
    def hang(argv: list[str], timeout_s: float) -> str:
        import subprocess

        raise subprocess.TimeoutExpired(argv, timeout_s)

    snap = GpuProbe(nvml=fake_nvml(init_error=NVMLError("x")), run=hang, which=lambda n: "/usr/bin/" + n).read()
    assert snap.source == "none" and "nvidia-smi: TimeoutExpired" in (snap.note or "") and "rocm-smi: TimeoutExpired" in (snap.note or "")
    junk = GpuProbe(nvml=fake_nvml(init_error=NVMLError("x")), run=lambda a, t: "NVIDIA-SMI has failed\n\x00\xff",
                    which=lambda n: "/usr/bin/" + n).read()  # fmt: skip
    assert junk.source == "none" and junk.gpus == [] and "nvidia-smi: no GPU listed" in (junk.note or "")
    assert parse_nvidia_smi_csv("", "") == ([], []) and parse_rocm_smi_json("[]") == ([], [])


def test_this_machine_has_no_gpu_and_says_why_cleanly() -> None:
    pytest.importorskip("pynvml")
    snap = GpuProbe().read()  # the real pynvml (no libnvidia-ml here), the real PATH (no nvidia-smi, rocm-smi)
    assert snap.source == "none" and snap.gpus == [] and snap.as_rows() == [] and snap.vram_of(1) is None
    assert snap.note is not None and snap.note.startswith("nvml: no NVIDIA driver") and "nvidia-smi: not installed" in snap.note


def test_the_sampler_writes_gpu_samples_and_the_runners_vram_and_status_and_preflight_say_it(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from helpers_probes import FakeOllama

    from oasis_ops.diagnosis.preflight import Sources, run_preflight
    from oasis_ops.sampler import Sampler
    from oasis_ops.settings import load_settings
    from oasis_ops.sidecar import Sidecar
    from oasis_ops.status import format_status, gpu_dict

    fake = FakeOllama()
    try:
        settings = load_settings(env={}).replace(ollama_host=fake.url)
        probe = GpuProbe(nvml=fake_nvml(), which=no_tools)
        sampler = Sampler(tmp_path / "t.ops.duckdb", settings, gpu_probe=probe, flush_interval_s=0.0, log_interval_s=0.0)
        try:
            report = sampler.tick()
            sampler.tick()  # within process_interval_s: no second read
        finally:
            sampler.close()
        assert report.gpus is not None and report.gpus.source == "nvml"
        rows = Sidecar(tmp_path / "t.ops.duckdb").gpu_samples_since(datetime(2000, 1, 1, tzinfo=UTC))
        assert len(rows) == 1 and rows["name"].iloc[0] == "NVIDIA GeForce RTX 4090" and rows["power_w"].iloc[0] == 215.412
        # status: one line per GPU; preflight: VRAM 83% used is fine, a model split CPU/GPU is not
        snap = probe.read()
        text = format_status({"ollama": {"reachable": False, "error": "down", "url": fake.url}, "models": [],
                              "host": {"simulated": False, "source": None, "error": "x", "mem_free_bytes": None},
                              "flash_attention": {"value": "off", "source": "s", "detail": "d"}, "errors": [],
                              "gpus": gpu_dict(snap, [])})  # fmt: skip
        assert "GPU 0    NVIDIA GeForce RTX 4090: VRAM 21.5 GB of 25.8 GB used (83%), busy 97% (nvml)" in text
        result = run_preflight(settings, sources=Sources(gpus=probe.read, host=lambda: None, apple_silicon=False))  # type: ignore[arg-type,return-value]
        vram = next(c for c in result.checks if c.id == "vram")
        assert vram.status == "ok" and "GPU 0 NVIDIA GeForce RTX 4090: 4.3 GB free of 25.8 GB (nvml)" in vram.message
        none = run_preflight(settings, sources=Sources(gpus=GpuProbe(nvml=fake_nvml(init_error=NVMLError("x")), which=no_tools).read,
                                                       host=lambda: None, apple_silicon=False))  # type: ignore[arg-type,return-value]
        assert next(c for c in none.checks if c.id == "vram").message.startswith("no GPU found (nvml: no NVIDIA driver (x)")
    finally:
        fake.server.shutdown()


def test_preflight_warns_of_a_model_split_between_cpu_and_gpu_a_full_gpu_and_a_model_too_big() -> None:
    from oasis_ops.diagnosis.preflight_gpu import vram_check

    snap = GpuProbe(nvml=fake_nvml(), which=no_tools).read()
    split = SimpleNamespace(name="gemma4:e4b", size_bytes=10_000_000_000, size_vram_bytes=5_200_000_000)
    level, message, values = vram_check(snap, [split], "qwen3:32b", 20_000_000_000, False)  # type: ignore[list-item]
    assert level == "warn" and "gemma4:e4b is only 52% on the GPU (48%/52% CPU/GPU)" in message
    assert "qwen3:32b (20.0 GB) is larger than the most free VRAM on one GPU (4.3 GB)" in message
    assert values["max_free_vram_bytes"] == 4_282_384_384


def test_rocm_smi_as_users_posted_it_edge_temperature_power_and_the_runners_vram() -> None:
    """Two recordings (tests/fixtures/gpu/SOURCES.md): a 7900 XTX with its three sensors and a
    2019 card whose keys end in a lower-case "(c)" and whose junction runs 26 degrees over its edge."""
    (xtx,), _ = parse_rocm_smi_json((FIXTURES / "rocm-smi-7900xtx-showtemp-showpower.json").read_text())
    assert (xtx.memory_total_bytes, xtx.memory_used_bytes, xtx.temperature_c, xtx.power_w) == (25_753_026_560, 794_341_376, 49.0, 19.0)
    assert xtx.name == "AMD GPU 0" and xtx.vendor == "amd" and xtx.uuid is None  # no --showproductname: named by its index
    (old,), _ = parse_rocm_smi_json((FIXTURES / "rocm-smi-2019-f-t-P.json").read_text())
    assert (old.temperature_c, old.power_w, old.memory_total_bytes) == (77.0, 222.0, None)  # the edge sensor, not the junction
    # --showpids adds "system": {"PID<n>": "name, GPU count, VRAM bytes, SDMA, CU"}; "UNKNOWN" where the kernel will not say
    # (rocm_smi_lib #166); non-card keys and a card that is not an object are skipped.
    text = ('{"card0": {"VRAM Total Memory (B)": "100", "VRAM Total Used Memory (B)": "60"}, "card1": "busy", "cardX": {},'
            ' "system": {"PID132174": "llama-server, 2, 15053770752, 0, 0", "PID55573": "gmx_mpi, 1, UNKNOWN, UNKNOWN, UNKNOWN",'
            ' "PID7": "short", "PID8": "two, 1", "PID9": "older, 1, 512", "Driver version": "6.4.2"}}')  # fmt: skip
    gpus, procs = parse_rocm_smi_json(text)
    assert [g.index for g in gpus] == [0] and gpus[0].memory_free_bytes == 40
    assert [(p.pid, p.used_memory_bytes, p.gpu_index) for p in procs] == [(132174, 15_053_770_752, None), (55573, None, None), (7, None, None),
                                                                   (8, None, None), (9, 512, None)]


def test_nvidia_smi_lines_keep_every_column_in_its_place() -> None:
    gpus = ("0, GPU-aaaa, NVIDIA A10, 23028, 20480, 2548, 88, 64, 121.53\n"
            "not, a, gpu\n"  # a warning nvidia-smi printed in between: skipped, the next line still read
            "1, GPU-bbbb, NVIDIA L4, 23034, 3, 23031, 12, 41, 27.10\n")  # fmt: skip
    apps = "4242, GPU-bbbb, 20400\n"
    (a10, l4), (app,) = parse_nvidia_smi_csv(gpus, apps)
    assert (a10.name, a10.vendor, a10.utilization_percent, a10.temperature_c, a10.power_w) == ("NVIDIA A10", "nvidia", 88.0, 64.0, 121.53)
    assert (l4.index, l4.uuid, l4.memory_used_bytes) == (1, "GPU-bbbb", 3 * MIB)
    assert (app.pid, app.gpu_uuid, app.gpu_index, app.used_memory_bytes) == (4242, "GPU-bbbb", 1, 20400 * MIB)
    nvml = fake_nvml()
    snap = GpuProbe(nvml=nvml, which=no_tools).read()
    assert [(p.pid, p.gpu_index, p.gpu_uuid) for p in snap.processes] == [(4242, 0, "GPU-5f1e0c2a-aaaa"), (99, 0, "GPU-5f1e0c2a-aaaa")]


XML = {  # file -> (name, total MiB, used MiB, utilisation, temperature, power W, processes, VRAM of the first)
    "nvidia-smi-q-x-a100-sxm4-40gb-mig-510.47.03.xml": ("NVIDIA A100-SXM4-40GB", 40960, 38, None, 36.0, 66.92, 0, None),
    "nvidia-smi-q-x-rtx-2080-win-516.59.xml": ("NVIDIA GeForce RTX 2080", 8192, 862, 2.0, 29.0, 14.5, 26, None),
    "nvidia-smi-q-x-rtx-3060-laptop-515.65.01.xml": ("NVIDIA GeForce RTX 3060 Laptop GPU", 6144, 5, 0.0, 45.0, 8.7, 1, 4),
    "nvidia-smi-q-x-rtx-4090-535.86.05.xml": ("NVIDIA GeForce RTX 4090", 24564, 2, 0.0, 40.0, 26.84, 0, None),
}


@pytest.mark.parametrize("name", sorted(XML))
def test_nvidia_smi_xml_reports_of_four_drivers(name: str) -> None:
    """`nvidia-smi -q -x` as drivers 510 to 535 print it (power_readings until 535, then
    gpu_power_readings; a MIG A100 with N/A utilisation; Windows, whose processes' memory is N/A)."""
    from oasis_ops.probes.gpu import parse_nvidia_smi_xml

    (gpu,), procs = parse_nvidia_smi_xml((FIXTURES / name).read_text())
    title, total, used, util, temp, power, count, first_vram = XML[name]
    assert (gpu.name, gpu.memory_total_bytes, gpu.memory_used_bytes) == (title, total * MIB, used * MIB)
    assert (gpu.utilization_percent, gpu.temperature_c, gpu.power_w) == (util, temp, power)
    assert len(procs) == count and all(p.gpu_uuid == gpu.uuid and p.gpu_index == 0 for p in procs)
    assert (procs[0].used_memory_bytes if procs else None) == (first_vram * MIB if first_vram is not None else None)


CSV = {  # (query-gpu file, query-apps file) -> (name, total MiB, used MiB, utilisation, power W, apps, VRAM of the second app MiB)
    ("nvidia-smi-query-gpu-rtx-4080-super-595.71.05-load.csv", "nvidia-smi-query-apps-rtx-4080-super-595.71.05-load.csv"):
        ("NVIDIA GeForce RTX 4080 SUPER", 16376, 1474, 7.0, 84.24, 3, 503),
    ("nvidia-smi-query-gpu-rtx-2080-super-win-591.86-load.csv", "nvidia-smi-query-apps-rtx-2080-super-win-591.86-load.csv"):
        ("NVIDIA GeForce RTX 2080 SUPER", 8192, 1296, 7.0, 97.43, 12, None),
    ("nvidia-smi-query-gpu-h100-mig-590.48.01-load.csv", "nvidia-smi-query-apps-h100-mig-590.48.01-load.csv"):
        ("NVIDIA H100 80GB HBM3", 81559, 11125, None, 433.78, 3, 1272),
    ("nvidia-smi-query-gpu-tesla-p100-nounits.csv", "nvidia-smi-query-apps-h200-590.48.01-idle-empty.csv"):
        ("Tesla P100-PCIE-16GB", 16280, 0, 0.0, 28.16, 0, None),
}  # fmt: skip


@pytest.mark.parametrize("files", sorted(CSV))
def test_headed_nvidia_smi_csv_as_users_and_exporters_record_it(files: tuple[str, str]) -> None:
    """`--format=csv` with a header: 200+ columns in another order, units in the header and in the
    values (`24564 MiB`, `84.24 W`), `[N/A]` (MIG utilisation, Windows process memory), a header
    with no rows (an idle H200), a P100 capture without memory.total (used + free) or index."""
    gpus_text, apps_text = ((FIXTURES / f).read_text() for f in files)
    (gpu,), apps = parse_nvidia_smi_csv(gpus_text, apps_text)
    title, total, used, util, power, count, second = CSV[files]
    assert (gpu.index, gpu.name, gpu.memory_total_bytes, gpu.memory_used_bytes) == (0, title, total * MIB, used * MIB)
    assert (gpu.utilization_percent, gpu.power_w) == (util, power)
    assert len(apps) == count and (apps[1].used_memory_bytes if count > 1 else None) == (second * MIB if second is not None else None)


def test_a_driver_refusing_a_query_field_is_read_from_its_xml_report() -> None:
    xml = (FIXTURES / "nvidia-smi-q-x-rtx-3060-laptop-515.65.01.xml").read_text()
    ran: list[list[str]] = []

    def run(argv: list[str], timeout_s: float) -> str:
        ran.append(argv)
        if argv[1:] == ["-q", "-x"]:
            return xml
        return 'Field "power.draw" is not a valid field to query.\n'

    snap = GpuProbe(nvml=fake_nvml(init_error=NVMLError("x")), run=run, which=lambda n: "/usr/bin/" + n if n == "nvidia-smi" else None).read()
    assert snap.source == "nvidia-smi" and snap.gpus[0].name == "NVIDIA GeForce RTX 3060 Laptop GPU" and snap.vram_of(28543) == 4 * MIB
    assert [a[1] for a in ran] == [ran[0][1], "-q"]  # the query, then the XML report; no apps query
