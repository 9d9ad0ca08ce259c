"""`oasis-ops proxy --db trials.duckdb [--upstream URL] [--listen HOST:PORT] [--run-id ID]`.

Serves until Ctrl-C or SIGTERM; then the trials still buffered are written. See the README's
"Use it with your harness".
"""

from __future__ import annotations

import argparse
import logging
import sys

from oasis_ops.commands import number_in, settings_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("proxy", help="an Ollama proxy that records every model call as a trial and obeys the control channel")
    p.add_argument("--db", help="trial database the calls are recorded in (default: the `db` setting)")
    p.add_argument("--upstream", help="the Ollama to forward to (default: proxy_upstream, else OLLAMA_HOST)")
    p.add_argument("--listen", help="HOST:PORT to listen on (default: proxy_listen, 127.0.0.1:11435)")
    p.add_argument("--run-id", help="run_id of the recorded trials (default: run_id, else proxy-<UTC time>)")
    p.add_argument("--max-concurrency", type=number_in(int, 1, 100_000),
                   help="requests let through at once until the control channel says otherwise (default 64)")
    p.add_argument("--max-queue", type=number_in(int, 0, 1_000_000), help="requests held waiting at most (default 1024)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from oasis_ops.proxy.service import ProxyService, plan_proxy

    settings = settings_from(args, db=args.db, proxy_max_concurrency=args.max_concurrency, proxy_max_queue=args.max_queue)
    plan = plan_proxy(settings, upstream=args.upstream, listen=args.listen, run_id=args.run_id)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    service = ProxyService(settings, plan)
    host = f"[{plan.host}]" if ":" in plan.host else plan.host
    print(f"oasis-ops proxy on http://{host}:{plan.port} -> {plan.upstream}; trials of run {plan.run_id} go to "
          f"{plan.db}; control directory {plan.control_dir}", file=sys.stderr, flush=True)  # fmt: skip
    print(f"point the harness at it: OLLAMA_HOST={host}:{plan.port} (OpenAI clients: base_url=http://{host}:{plan.port}/v1)",
          file=sys.stderr, flush=True)  # fmt: skip
    service.serve()
    counters = service.app.counters
    print(f"proxy stopped: {counters.trials} trials recorded ({counters.by_status.get('ok', 0)} ok, "
          f"{counters.by_status.get('error', 0)} error, {counters.by_status.get('timeout', 0)} timeout)",
          file=sys.stderr)  # fmt: skip
    return 0
