"""`oasis-ops demo fault NAME on|off [--param value] [--url URL]`: switch emulator faults.

Talks to a running emulator's control endpoint (`POST /_demo/faults`), which is separate from
Ollama's API. `oasis-ops demo fault status` prints every fault; `oasis-ops demo fault all off`
clears them all. The URL defaults to the `ollama_host` setting (OLLAMA_HOST).
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx

from oasis_ops.commands import settings_from
from oasis_ops.demo.faults import FAULTS, fault_spec
from oasis_ops.errors import OllamaBadResponse, OllamaUnreachable, UsageError
from oasis_ops.fmt import json_text

PARAM_NAMES = sorted({p for spec in FAULTS.values() for p in spec.params})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help=f"{', '.join(FAULTS)}; or `status`; or `all` (with off)")
    parser.add_argument("state", nargs="?", choices=("on", "off"), help="switch the fault on or off")
    parser.add_argument("--url", help="emulator URL (default: the ollama_host setting / OLLAMA_HOST)")
    parser.add_argument("--json", action="store_true", help="print the emulator's full fault state as JSON")
    for name in PARAM_NAMES:
        owners = [f for f, spec in FAULTS.items() if name in spec.params]
        parser.add_argument(f"--{name.replace('_', '-')}", dest=f"param_{name}", type=float, metavar="N",
                            help=f"parameter of {', '.join(owners)}")


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def request_faults(url: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """GET (body None) or POST the emulator's /_demo/faults; library errors on failure."""
    target = normalize_url(url) + "/_demo/faults"
    try:
        if body is None:
            resp = httpx.get(target, timeout=timeout)
        else:
            resp = httpx.post(target, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        raise OllamaUnreachable(f"cannot reach the emulator at {url}: {exc}") from None
    try:
        data = resp.json()
    except ValueError:
        raise OllamaBadResponse(f"{target} answered {resp.status_code} without JSON (is this the oasis-ops emulator?)") from None
    if resp.status_code == 400:
        raise UsageError(str(data.get("error", "rejected")))
    if resp.status_code != 200 or not isinstance(data, dict) or "faults" not in data:
        raise OllamaBadResponse(f"{target} answered {resp.status_code}: {str(data)[:200]} (is this the oasis-ops emulator?)")
    return data


def describe(name: str, entry: dict[str, Any]) -> str:
    params = " ".join(f"{k}={v:g}" for k, v in entry.get("params", {}).items())
    extra = ""
    if "multiplier" in entry and entry["on"]:
        extra = f" multiplier={entry['multiplier']}"
    if name == "stopping_deadlock" and entry["on"]:
        extra = f" wedged={entry['wedged']} left={entry['wedges_left']}"
    if name == "memory_pressure" and entry["on"]:
        extra = f" rss_target_mb={entry['rss_target_mb']} host_severity={entry['host_severity']}"
    return f"{name:<26} {'ON ' if entry['on'] else 'off'} {params}{extra}".rstrip()


def main(args: argparse.Namespace) -> int:
    url = args.url or settings_from(args).ollama_host
    params = {p: getattr(args, f"param_{p}") for p in PARAM_NAMES if getattr(args, f"param_{p}", None) is not None}
    if args.name == "status":
        data = request_faults(url)
    elif args.name == "all":
        if args.state != "off":
            raise UsageError("`all` only takes `off`: oasis-ops demo fault all off")
        data = request_faults(url, {"clear": True})
    else:
        spec = fault_spec(args.name)
        if args.state is None:
            raise UsageError(f"say on or off: oasis-ops demo fault {args.name} on|off")
        foreign = [p for p in params if p not in spec.params]
        if foreign:
            raise UsageError(f"fault {args.name} has no parameter {foreign[0]} "
                             f"(parameters: {', '.join(spec.params) or 'none'})")
        data = request_faults(url, {"name": args.name, "on": args.state == "on", "params": params})
    if args.json:
        print(json_text(data, indent=2))
    else:
        for name, entry in data["faults"].items():
            if args.name in ("status", "all") or name == args.name:
                print(describe(name, entry))
    return 0
