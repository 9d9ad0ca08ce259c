"""Recovery actions (issue 5): soft evict, verified hard-kill, recover, and runner control.

Every action takes an `ActionContext` (Ollama client, process list, sidecar for the audit log,
control channel, who asked) and returns an `ActionResult`; every attempt, refused, cancelled and
dry-run ones included, is one row of the sidecar's `actions` table.

    ctx = ActionContext.from_settings(settings, db="trials.duckdb", requested_by="cli")
    result = recover(ctx, "gemma4:e4b")      # evict -> grace -> hard-kill -> new runner answers
    print(result.outcome, result.message)    # exit code: result.exit_code
"""

from oasis_ops.actions.audit import actions_markers, audit, audit_log
from oasis_ops.actions.context import ActionContext, full_process_list
from oasis_ops.actions.control_actions import pause, resume, set_concurrency
from oasis_ops.actions.evict import evict
from oasis_ops.actions.kill import KillPlan, hard_kill, is_dead, own_tree, plan_kill
from oasis_ops.actions.recover import recover
from oasis_ops.actions.result import EXIT_CODES, OUTCOMES, ActionResult, cancelled

__all__ = [
    "EXIT_CODES",
    "OUTCOMES",
    "ActionContext",
    "ActionResult",
    "KillPlan",
    "actions_markers",
    "audit",
    "audit_log",
    "cancelled",
    "evict",
    "full_process_list",
    "hard_kill",
    "is_dead",
    "own_tree",
    "pause",
    "plan_kill",
    "recover",
    "resume",
    "set_concurrency",
]
