"""The built-in demo world: an Ollama-compatible emulator, a harness-shaped runner, replays."""
