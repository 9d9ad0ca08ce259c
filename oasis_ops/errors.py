"""One exception tree for the whole library.

Third-party errors (DuckDB, httpx, psutil, OS) are translated at the edge into these, so the
CLI can turn any of them into a one-line message and an exit code, and the pages into a clear
message instead of a traceback.
"""

from __future__ import annotations


class OasisOpsError(Exception):
    """Base of every error the library raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(OasisOpsError):
    """Bad arguments or settings."""

    exit_code = 2


class ConfigError(UsageError):
    """A settings file or variable that cannot be used."""


class TooManyBuckets(UsageError):
    """A rollup that would materialise more than `max_buckets` buckets (a bound, not a bug)."""


# --- data files -------------------------------------------------------------------------------
class DataError(OasisOpsError):
    """A database or log file that cannot be read as expected."""


class DatabaseMissing(DataError):
    """The file does not exist."""


class DatabaseLocked(DataError):
    """Another process holds a conflicting lock."""


class DatabaseCorrupt(DataError):
    """The file is not a readable DuckDB database (or a snapshot of it is torn)."""


class SchemaError(DataError):
    """The table or its columns are not what the mapping expects; says what is missing."""


class SidecarBusy(DataError):
    """Another sampler already writes this telemetry sidecar."""


# --- Ollama and processes ---------------------------------------------------------------------
class OllamaError(OasisOpsError):
    """Ollama could not be asked, or answered something we cannot use."""


class OllamaUnreachable(OllamaError):
    """Connection refused, DNS failure or timeout."""


class OllamaBadResponse(OllamaError):
    """Ollama answered, but not in a shape we understand."""


class ProbeError(OasisOpsError):
    """A host-memory source (/proc files, vm_stat, sysctl) could not be read or parsed."""


class ProcessError(OasisOpsError):
    """A process could not be found, verified or signalled."""


class ProcessRefused(ProcessError):
    """We refuse to act on this process (identity mismatch, not a runner, our own tree...)."""


class ProcessVanished(ProcessError):
    """The process went away between looking and acting."""


class ServerError(OasisOpsError):
    """The dashboard server (or another child service) could not be started or did not stay up."""


# --- actions ----------------------------------------------------------------------------------
class ActionError(OasisOpsError):
    """A recovery action failed."""


class NotAcknowledged(ActionError):
    """The runner did not acknowledge a control change in time; or a model is still stuck."""

    exit_code = 3
