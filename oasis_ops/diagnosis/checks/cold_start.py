"""`cold_start`: confirmed by the model leaving /api/ps, a runner respawn, load lines or a cold
encoder in the window; refuted (and reported as such) when the model was listed in every sample
of the window with one runner and no load line, and the encoder stayed warm. The only refuted
finding the diagnosis reports.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from oasis_ops.diagnosis import text as t
from oasis_ops.diagnosis.checks.context import (
    Finding,
    Telemetry,
    WindowContext,
    _detail,
    _model_rows,
    timing_comparison,
)
from oasis_ops.diagnosis.thresholds import COLD_LEAD, ENCODER_COLD_RATIO, ENCODER_WARM_RATIO
from oasis_ops.probes.processes import blob_from_manifest


def _cold_start_loads(ctx: WindowContext, lo: datetime, hi: datetime) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Distinct model loads of the window's model in server.log rows between lo and hi.

    One load is one load: its spawn, its `load request` lines (fit/alloc/commit) and its one or
    two `started in` lines share detail.load_id (oasis_ops.logs.parse); GPU-discovery runners
    (kind runner_discovery, or a spawn whose cmd has no --model) are not loads. Rows ingested
    before load_id existed fall back to: one load per spawn, else per `started` line (two within
    5 s are one).

    Whose load: the window's model is a name (gemma4:e4b), the log knows blob paths. The name ->
    blob mapping comes from the local manifest (setting ollama_models), used only when that blob
    appears in the log's loads (a re-pulled model has a new blob, and this may run on another
    machine). MLX loads carry the name itself. Without a mapping, the model's blob is taken to be
    the one loaded most often in the hour before the window's end (ties: the latest) among the
    non-embedding loads (the embedding loads for a model whose name says embed), and only
    loads that are clearly another model's are left out:
    another blob, or an embedding load (a llama-server `--embedding` runner, or a load whose
    first request afterwards is /api/embed) when the model's name does not say embed. Loads of
    unknown model count.
    """
    gen_paths = {"/api/chat", "/api/generate", "/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"}
    embed_paths = {"/api/embed", "/api/embeddings", "/v1/embeddings"}
    blob_key = _blob_hex

    def collect(frame: pd.DataFrame) -> list[dict[str, Any]]:
        rows = frame[frame["kind"].isin(["runner_start", "runner_started", "load_request"])] if len(frame) else frame
        loads: dict[str, dict[str, Any]] = {}
        last_spawn: str | None = None
        last_started: tuple[pd.Timestamp, str] | None = None
        for ts, kind, raw in zip(rows["ts"], rows["kind"], rows["detail"], strict=False) if len(rows) else []:
            d = _detail(raw)
            if kind == "runner_start" and d.get("cmd") and not d.get("model"):
                continue  # GPU discovery, ingested before runner_discovery existed
            key = d.get("load_id")
            if key is None:  # rows ingested before load_id: rebuild the grouping
                if kind == "runner_start":
                    key = last_spawn = f"spawn@{ts}"
                elif last_spawn is not None:
                    key = last_spawn
                elif kind == "runner_started":
                    if last_started is not None and (ts - last_started[0]) <= pd.Timedelta(seconds=5):
                        key = last_started[1]
                    else:
                        key = f"started@{ts}"
                    last_started = (ts, key)
                else:
                    continue
            load = loads.setdefault(str(key), {"id": str(key), "ts": ts, "model": None, "seconds": None, "embedding": False,
                                               "lines": 0, "ready": ts})  # fmt: skip
            load["lines"] += 1
            load["ready"] = ts
            if d.get("model") and load["model"] is None:
                load["model"] = str(d["model"])
            if kind == "runner_start" and d.get("embedding") and d.get("runner") == "llama-server":
                load["embedding"] = True  # before 0.30 every runner got --embedding
            seconds = d.get("seconds")
            if isinstance(seconds, int | float) and not d.get("repeat"):
                load["seconds"] = max(float(seconds), load["seconds"] or 0.0)
        return list(loads.values())

    def mark_embedding(loads: list[dict[str, Any]]) -> None:
        """A load whose first request afterwards is an embedding request is an embedding model's."""
        req = ctx.telemetry.requests
        if req.empty or "path" not in req.columns:
            return
        req = req[req["path"].isin(list(gen_paths | embed_paths))]
        for load in loads:
            after = req[req["ts"] >= load["ready"]]
            if len(after) and after["path"].iloc[0] in embed_paths:
                load["embedding"] = True

    window = collect(Telemetry.between(ctx.telemetry.log_events, lo, hi))
    info: dict[str, Any] = {"load_lines": sum(x["lines"] for x in window), "other_model_loads": 0, "attribution": "all loads"}
    model = ctx.model
    if model is None or not window:
        return window, info
    history = collect(Telemetry.between(ctx.telemetry.log_events, hi - timedelta(hours=1), hi))
    mark_embedding(window)
    mark_embedding(history)
    embed_model = "embed" in model.lower()  # nomic-embed-text, mxbai-embed-large, ...
    blobs = [blob_key(x["model"]) for x in history if blob_key(x["model"]) and x["embedding"] == embed_model]
    models_dir = ctx.settings.ollama_models or str(Path.home() / ".ollama" / "models")
    mine = blob_key(blob_from_manifest(models_dir, model))
    if mine is not None and any(blob_key(x["model"]) == mine for x in history):
        info["attribution"] = "manifest"
    elif blobs:
        counts = pd.Series(blobs).value_counts()
        top = counts[counts == counts.max()].index
        mine = next(b for b in reversed(blobs) if b in top)  # ties: the latest loaded
        info["attribution"] = "most frequent blob"
    else:
        mine = None
        info["attribution"] = "model names only"

    def tagged(name: str) -> str:
        return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"

    def ours(load: dict[str, Any]) -> bool:
        name = load["model"]
        if name is None:
            return True  # unknown: not clearly another model's
        key = blob_key(name)
        if key is None:  # an MLX load names its model
            return tagged(name) == tagged(model)
        if key == mine:
            return True
        if load["embedding"] and not embed_model:
            return False
        return mine is None

    kept = [x for x in window if ours(x)]
    info["other_model_loads"] = len(window) - len(kept)
    info["load_lines"] = sum(x["lines"] for x in kept)
    return kept, info


def check_cold_start(ctx: WindowContext) -> Finding | None:
    lo, hi = ctx.start - COLD_LEAD, ctx.end
    model = ctx.model
    events = Telemetry.between(ctx.telemetry.events, lo, hi)
    if model is not None and len(events):
        events = events[(events["model"] == model) | events["model"].isna()]
    gone = events[events["kind"] == "gone"] if len(events) else events
    respawn_events = events[events["kind"] == "runner_pid_changed"] if len(events) else events
    rows = _model_rows(ctx, ctx.start, ctx.end)
    pids = sorted({int(p) for p in pd.to_numeric(rows["runner_pid"], errors="coerce").dropna()}) if len(rows) else []
    loads, load_info = _cold_start_loads(ctx, lo, hi)
    load_seconds = [float(x["seconds"]) for x in loads if x["seconds"] is not None]
    before, during = timing_comparison(ctx)
    b_enc, d_enc = before["encode_ms"], during["encode_ms"]
    enc_cold = bool(b_enc and d_enc and d_enc >= ENCODER_COLD_RATIO * b_enc and d_enc - b_enc >= 50)
    enc_warm = bool(b_enc and d_enc and d_enc <= ENCODER_WARM_RATIO * b_enc + 5)

    name = model or "the model"
    evidence: list[str] = []
    signals = 0
    if len(gone):
        signals += 1
        evidence.append(f"{name} left /api/ps {len(gone)} time(s) in the window (first at {t.hms(gone['ts'].iloc[0])} UTC)")
    if len(respawn_events) or len(pids) > 1:
        signals += 1
        chain = " → ".join(str(p) for p in pids) if len(pids) > 1 else f"{len(respawn_events)} change(s)"
        evidence.append(f"runner respawned in the window: pid {chain}")
    if loads:
        signals += 1
        slowest = f"; load took up to {max(load_seconds):.1f} s" if load_seconds else ""
        ignored = load_info["other_model_loads"]
        others = f"; {ignored} load(s) of other models ignored" if ignored else ""
        evidence.append(f"server.log: {len(loads)} load(s) of {name} in the window ({load_info['load_lines']} load lines){slowest}{others}")
    if enc_cold:
        signals += 1
        evidence.append(f"image encoder {d_enc:.0f} ms median in the window vs {b_enc:.0f} ms before (cold weights)")
    values: dict[str, Any] = {"model": model, "runner_pids": pids, "load_lines": load_info["load_lines"], "loads": len(loads),
                              "other_model_loads": load_info["other_model_loads"], "load_attribution": load_info["attribution"],
                              "gone_events": len(gone), "encode_ms_before": b_enc, "encode_ms_during": d_enc}  # fmt: skip
    if signals >= 2 and (len(gone) or len(respawn_events) or len(pids) > 1 or loads):
        return Finding(
            "cold_start",
            "confirmed",
            min(0.95, 0.55 + 0.12 * signals),
            evidence,
            "Keep the model resident: send keep_alive -1 (or set OLLAMA_KEEP_ALIVE=-1), do not evict between trials, "
            "and leave room for it under OLLAMA_MAX_LOADED_MODELS; warm it up with one request before the run.",
            values,
        )
    # Refutation: listed in every sample, one runner, no load line, encoder warm.
    if model is None or len(rows) < 3 or signals or not _covers(rows, ctx.start, ctx.end):
        return None
    if b_enc is not None and d_enc is not None and not enc_warm:
        return None
    states = rows["state"].value_counts()
    loaded_n = int(states.get("loaded", 0))
    stopping_n = int(states.get("stopping", 0))
    size = pd.to_numeric(rows["size_bytes"], errors="coerce")
    vram = pd.to_numeric(rows["size_vram_bytes"], errors="coerce")
    all_gpu = bool(((size > 0) & (vram == size)).all())
    split = ", 100% GPU" if all_gpu else ""
    listed = "listed loaded" if stopping_n == 0 else f"listed ({loaded_n} loaded, {stopping_n} Stopping…)"
    evidence = [f"{model} {listed} in every /api/ps sample {t.span(ctx.start, ctx.end)} (n={len(rows)}){split}"]
    if pids:
        evidence.append(f"one runner throughout (pid {pids[0]}); no runner start or load line in server.log in the window")
    else:
        evidence.append("no runner start or load line in server.log in the window")
    if enc_warm:
        evidence.append(f"image encoder {d_enc:.0f} ms median in the window vs {b_enc:.0f} ms before: the weights were warm")
    return Finding(
        "cold_start",
        "refuted",
        0.9 if enc_warm else 0.75,
        evidence,
        "Not a cold start: the model stayed loaded and warm, so the time went into generation. Look at the confirmed findings.",
        {**values, "samples": len(rows), "loaded_samples": loaded_n, "stopping_samples": stopping_n, "all_gpu": all_gpu},
    )


def _covers(rows: pd.DataFrame, start: datetime, end: datetime) -> bool:
    """The samples cover the window without a hole (so 'every sample' means something)."""
    ts = rows["ts"].sort_values()
    gaps = ts.diff().dropna().dt.total_seconds()
    typical = float(gaps.median()) if len(gaps) else 60.0
    allowed = max(3 * typical, 30.0)
    head = (ts.iloc[0] - pd.Timestamp(start)).total_seconds()
    tail = (pd.Timestamp(end) - ts.iloc[-1]).total_seconds()
    return bool(head <= allowed and tail <= allowed and (gaps <= allowed).all())


_SHA256 = re.compile(r"sha256[-:]([0-9a-f]{64})")


def _blob_hex(text: Any) -> str | None:
    """The sha256 hex of a blob path or digest (`.../blobs/sha256-<hex>`, `sha256:<hex>`), else None."""
    m = _SHA256.search(str(text or ""))
    return m.group(1) if m else None
