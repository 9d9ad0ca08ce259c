"""The recording, throttling Ollama proxy (`oasis-ops proxy`): any harness, no code changes.

Point the harness at the proxy (`OLLAMA_HOST=127.0.0.1:11435`, or an OpenAI client's
`base_url=http://127.0.0.1:11435/v1`) and every model call becomes a row of the trial table,
while the control channel (concurrency, pause, a recovery in progress) acts on the proxy's
queue. `app` forwards and records, `gate` admits, `record` reads requests and answers,
`service` puts them together. Heavy modules (uvicorn, httpx) load only when the proxy runs.
"""
