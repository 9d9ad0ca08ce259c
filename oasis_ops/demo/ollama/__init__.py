"""The demo's `ollama serve`: an Ollama-compatible server with real runner child processes.

Rooms: `profiles` (what each Ollama version does, as data), `goparse` (Go-style parsing of
durations and booleans), `scheduler` (loads, keep-alive, queue, unloads), `runners` (runner
processes and the llama.cpp server API spoken to them), `api` (the HTTP endpoints), `server`
(the process: `<home>/bin/ollama serve`), `process` (starting one from tests and the demo),
`home` (OLLAMA_MODELS with the catalogue, real and emulated models), `servelog` (server.log in
Ollama's formats). Runner children: `runner_main` (entry), `runner_real` (llama.cpp via
xllamacpp on a real GGUF), `runner_emulated` (the incident's large models), `argv` (giving a
child the exact command line of a real runner).

Nothing here is imported by the console itself: only the demo, the tests and the benchmarks use it.
"""
