"""What each Ollama version does by default, as data read from its source at the release tags.

Flash attention with OLLAMA_FLASH_ATTENTION unset (read from `fs/ggml/ggml.go` FlashAttention()
and OllamaEngineRequired(), `llm/server.go` and, from 0.30, `llm/llama_server.go`, at every tag
from v0.11.8 to v0.32.15; the tag where each list changed is the key below):
- before 0.11.8: off.
- 0.11.8 - 0.13.3: on when the model's architecture (`general.architecture` in its GGUF header)
  is on the allow-list, else off (`enabling flash attention` is logged when on).
- 0.13.4 - 0.24: models that need the Ollama engine (OllamaEngineRequired) follow the allow-list;
  the others run on the compatibility (llama.cpp) engine with FlashAttention:Auto in their load
  request, which llama.cpp resolves per device (on wherever the device supports it: CPU, Metal,
  CUDA >= 6.0, ROCm, Vulkan).
- 0.30 and later: `llama-server --flash-attn auto` for every model (off only when a GPU lacks
  support); llama.cpp resolves auto and logs the outcome.
Either way a GPU without flash-attention support turns it off, and on 0.20.4+ gemma4 on a CUDA
GPU older than compute 7.5. Those refinements need the GPU list, which the console reads from
the runner's command line or load line when it can; the default here is the architecture's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Version = tuple[int, int, int]

# Allow-list of architectures whose flash attention Ollama turns on by itself (first tag: list).
FLASH_ALLOW_LIST: tuple[tuple[Version, frozenset[str]], ...] = (
    ((0, 11, 8), frozenset({"gpt-oss", "gptoss"})),
    ((0, 12, 4), frozenset({"gpt-oss", "gptoss", "qwen3", "qwen3moe"})),
    ((0, 12, 6), frozenset({"gemma3", "gpt-oss", "gptoss", "qwen3", "qwen3moe"})),
    ((0, 12, 8), frozenset({"gemma3", "gpt-oss", "gptoss", "qwen3", "qwen3moe", "qwen3vl", "qwen3vlmoe"})),
    ((0, 13, 2), frozenset({"gemma3", "gpt-oss", "gptoss", "mistral3", "qwen3", "qwen3moe", "qwen3vl", "qwen3vlmoe"})),
    ((0, 13, 4), frozenset({"gemma3", "gpt-oss", "gptoss", "mistral3", "olmo3", "qwen3", "qwen3moe", "qwen3vl",
                            "qwen3vlmoe"})),
    ((0, 13, 5), frozenset({"bert", "gemma3", "gpt-oss", "gptoss", "mistral3", "olmo3", "qwen3", "qwen3moe",
                            "qwen3vl", "qwen3vlmoe"})),
    ((0, 14, 3), frozenset({"bert", "gemma3", "glm4moelite", "gpt-oss", "gptoss", "lfm2", "mistral3", "olmo3",
                            "qwen3", "qwen3moe", "qwen3vl", "qwen3vlmoe"})),
    ((0, 15, 5), frozenset({"bert", "gemma3", "glm4moelite", "glmocr", "gpt-oss", "gptoss", "lfm2", "mistral3",
                            "olmo3", "qwen3", "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe"})),
    ((0, 17, 1), frozenset({"bert", "gemma3", "glm4moelite", "glmocr", "gpt-oss", "gptoss", "lfm2", "lfm2moe",
                            "mistral3", "nemotron_h", "nemotron_h_moe", "olmo3", "qwen3", "qwen35", "qwen35moe",
                            "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe"})),
    ((0, 20, 4), frozenset({"bert", "gemma3", "gemma4", "glm4moelite", "glmocr", "gpt-oss", "gptoss", "lfm2",
                            "lfm2moe", "mistral3", "nemotron_h", "nemotron_h_moe", "olmo3", "qwen3", "qwen35",
                            "qwen35moe", "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe"})),
    ((0, 22, 0), frozenset({"bert", "gemma3", "gemma4", "glm4moelite", "glmocr", "gpt-oss", "gptoss", "lfm2",
                            "lfm2moe", "mistral3", "nemotron_h", "nemotron_h_moe", "nemotron_h_omni", "olmo3",
                            "qwen3", "qwen35", "qwen35moe", "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe"})),
)  # fmt: skip

# Architectures that always run on the Ollama engine (first tag: list); others use llama.cpp's.
OLLAMA_ENGINE_REQUIRED: tuple[tuple[Version, frozenset[str]], ...] = (
    ((0, 11, 8), frozenset({"gemma3", "gemma3n", "gpt-oss", "gptoss", "llama4", "mistral3", "mllama", "qwen25vl"})),
    ((0, 12, 6), frozenset({"gemma3", "gemma3n", "gpt-oss", "gptoss", "llama4", "mistral3", "mllama", "qwen25vl",
                            "qwen3", "qwen3moe"})),
    ((0, 12, 8), frozenset({"gemma3", "gemma3n", "gpt-oss", "gptoss", "llama4", "mistral3", "mllama", "qwen25vl",
                            "qwen3", "qwen3moe", "qwen3vl", "qwen3vlmoe"})),
    ((0, 13, 0), frozenset({"deepseek2", "deepseekocr", "gemma3", "gemma3n", "gpt-oss", "gptoss", "llama4",
                            "mistral3", "mllama", "qwen25vl", "qwen3", "qwen3moe", "qwen3vl", "qwen3vlmoe"})),
    ((0, 13, 4), frozenset({"deepseek2", "deepseekocr", "gemma3", "gemma3n", "gpt-oss", "gptoss", "llama4",
                            "mistral3", "mllama", "nomic-bert", "olmo3", "qwen25vl", "qwen3", "qwen3moe", "qwen3vl",
                            "qwen3vlmoe"})),
    ((0, 13, 5), frozenset({"bert", "deepseek2", "deepseekocr", "gemma3", "gemma3n", "gpt-oss", "gptoss", "llama4",
                            "mistral3", "mllama", "nomic-bert", "olmo3", "qwen25vl", "qwen3", "qwen3moe", "qwen3vl",
                            "qwen3vlmoe"})),
    ((0, 14, 3), frozenset({"bert", "deepseek2", "deepseekocr", "gemma3", "gemma3n", "glm4moelite", "gpt-oss",
                            "gptoss", "lfm2", "llama4", "mistral3", "mllama", "nomic-bert", "olmo3", "qwen25vl",
                            "qwen3", "qwen3moe", "qwen3vl", "qwen3vlmoe"})),
    ((0, 15, 5), frozenset({"bert", "deepseek2", "deepseekocr", "gemma3", "gemma3n", "glm4moelite", "glmocr",
                            "gpt-oss", "gptoss", "lfm2", "llama4", "mistral3", "mllama", "nomic-bert", "olmo3",
                            "qwen25vl", "qwen3", "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe"})),
    ((0, 17, 1), frozenset({"bert", "deepseek2", "deepseekocr", "gemma3", "gemma3n", "glm4moelite", "glmocr",
                            "gpt-oss", "gptoss", "lfm2", "lfm2moe", "llama4", "mistral3", "mllama", "nemotron_h",
                            "nemotron_h_moe", "nomic-bert", "olmo3", "qwen25vl", "qwen3", "qwen35", "qwen35moe",
                            "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe"})),
    ((0, 20, 0), frozenset({"bert", "deepseek2", "deepseekocr", "gemma3", "gemma3n", "gemma4", "glm4moelite",
                            "glmocr", "gpt-oss", "gptoss", "lfm2", "lfm2moe", "llama4", "mistral3", "mllama",
                            "nemotron_h", "nemotron_h_moe", "nomic-bert", "olmo3", "qwen25vl", "qwen3", "qwen35",
                            "qwen35moe", "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe"})),
    ((0, 22, 0), frozenset({"bert", "deepseek2", "deepseekocr", "gemma3", "gemma3n", "gemma4", "glm4moelite",
                            "glmocr", "gpt-oss", "gptoss", "laguna", "lfm2", "lfm2moe", "llama4", "mistral3",
                            "mllama", "nemotron_h", "nemotron_h_moe", "nemotron_h_omni", "nomic-bert", "olmo3",
                            "qwen25vl", "qwen3", "qwen35", "qwen35moe", "qwen3moe", "qwen3next", "qwen3vl",
                            "qwen3vlmoe"})),
)  # fmt: skip

FIRST_ALLOW_LIST: Version = (0, 11, 8)
COMPAT_AUTO_FROM: Version = (0, 13, 4)  # compatibility engine gets FlashAttention:Auto
LLAMA_SERVER_FROM: Version = (0, 30, 0)  # runners are llama-server children
PS_TAKES_RUNNER_LOCK_FROM: Version = (0, 32, 4)  # /api/ps waits for a load or an unload

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str | None) -> Version | None:
    """`0.20.4`, `v0.32.15`, `0.33.0-rc1` -> (0, 20, 4); None when not a version."""
    if not text:
        return None
    m = _VERSION.match(text.strip())
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def list_at(table: tuple[tuple[Version, frozenset[str]], ...], version: Version) -> frozenset[str]:
    found: frozenset[str] = frozenset()
    for since, names in table:
        if version >= since:
            found = names
    return found


@dataclass(frozen=True)
class FlashDefault:
    value: str | None  # "on" | "off" | "auto" (llama.cpp decides per device) | None (unknown)
    detail: str


def flash_attention_default(version: str | None, architecture: str | None) -> FlashDefault:
    """What Ollama `version` does for a model of `architecture` with OLLAMA_FLASH_ATTENTION unset."""
    parsed = parse_version(version)
    if parsed is None:
        return FlashDefault(None, "Ollama version unknown: its default cannot be told")
    name = f"Ollama {parsed[0]}.{parsed[1]}.{parsed[2]}"
    if parsed >= LLAMA_SERVER_FROM:
        return FlashDefault("auto", f"{name} starts llama-server with --flash-attn auto: llama.cpp turns it on "
                                    "wherever the device supports it (CPU, Metal, CUDA >= 6.0, ROCm, Vulkan)")
    if parsed < FIRST_ALLOW_LIST:
        return FlashDefault("off", f"{name} leaves flash attention off unless OLLAMA_FLASH_ATTENTION is set")
    if architecture is None:
        return FlashDefault(None, f"{name} decides per architecture, and the model's architecture is unknown")
    allowed = architecture in list_at(FLASH_ALLOW_LIST, parsed)
    if allowed:
        return FlashDefault("on", f"{name} turns flash attention on by itself for architecture {architecture} "
                                  "(its allow-list), unless a GPU lacks support")
    engine_required = architecture in list_at(OLLAMA_ENGINE_REQUIRED, parsed)
    if parsed >= COMPAT_AUTO_FROM and not engine_required:
        return FlashDefault("auto", f"{name} runs architecture {architecture} on llama.cpp's engine with "
                                    "FlashAttention:Auto: llama.cpp turns it on wherever the device supports it")
    return FlashDefault("off", f"{name} leaves flash attention off for architecture {architecture} "
                               "(not on its allow-list)")
