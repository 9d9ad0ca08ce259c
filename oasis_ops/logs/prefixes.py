"""Every server.log line outside the fast path (part of ServerLogParser): a collector's prefix
is stripped and the rest dispatched again; JSON lines, ANSI colours and raw runner text too.

Prefixes stripped (nested prefixes too; tests/fixtures/real/README.md names a public source for
each): journald (`Jun 05 12:36:11 host ollama[1234]: `, any month spelling: `janv.`, `févr.`,
`Dez`, `5月`, ...; `-o short-iso`, `short-precise`, `short-full`), `docker logs -t` /
`kubectl logs --timestamps` (`2025-03-05T08:58:54.123456789Z `), CRI files (`... stderr F `),
Docker Desktop's `2024-08-27 19:10:09 `, docker compose (`ollama-1  | `), `kubectl logs
--prefix` (`[pod/ollama-0/ollama] `), llama.cpp's own `0.00.613.241 I ` prefix, k8s/Docker JSON
lines (`{"log":"...\\n","stream":"stderr","time":"..."}`); CR line ends; ANSI escapes.

A collector's prefix time is used only for lines that have no time of their own (raw runner
output, timing blocks, llama.cpp flash-attention lines), and only when it is absolute
(docker/CRI/k8s `...Z`, journald `-o short-iso`): a line's own time always wins, and naive
prefix times (journald's default `Jun 05 12:36:11`, which also lacks the year, Docker
Desktop's) are ignored.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from oasis_ops.logs.golines import GO_PLAIN
from oasis_ops.logs.rows import CONTROL, ParseCounts
from oasis_ops.logs.timefmt import iso_abs_us

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_IDENT = r"(?:\S+ )??[^\s\[\]:]+(?:\[\d+\])?: "  # [host ]ident[pid]: (host optional, lazily)
_JOURNAL = re.compile(r"(?:[^\W\d_]{2,5}\.?|\d{1,2}[月월]) {1,2}\d{1,2}日? \d\d:\d\d:\d\d(?:\.\d{1,9})? " + _IDENT)
_ISO_PREFIX = re.compile(
    r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?)(Z|[+-]\d\d(?::?\d\d)?)? "
    r"(?:(?:stdout|stderr) [FP] |\S+ [^\s\[\]:]+\[\d+\]: )?"
)
# Everything outside the fast path that we may recognise starts like one of these; a line
# matching none is chatter (or junk) after one failed match.
GATE = re.compile(
    r"(?P<digit>\d)|(?P<json>\{)|(?P<esc>\x1b)|(?P<bracket>\[(?!GIN)[^\]]{1,200}\] )"
    r"|(?P<raw>\s*(?:prompt eval|reasoning|eval|total) time\s+=|llama_print_timings:"
    r"|(?:INFO|DEBUG|VERB|WARN|WARNING|ERR|ERROR)\s+\[|(?:llama_context|llama_new_context_with_model|llama_init_from_model):)"
    # possessive quantifiers: a word that is not a month fails without backtracking
    r"|(?P<journal>[^\W\d_]{2,5}+\.?+ (?: ?\d{1,2}日? \d\d:\d\d:\d\d(?:\.\d{1,9})? "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,9})? \S+ )" + _IDENT + ")"
    r"|(?P<compose>[\w.-]++ +\| )"
)
_LLAMA_PREFIX = re.compile(r"\d+\.\d\d\.\d\d\d\.\d\d\d [IWEDT] ")


class PrefixesMixin:
    """ServerLogParser's lines outside the fast path (`_other`, fed what `GATE` matched)."""

    counts: ParseCounts  # set by ServerLogParser

    if TYPE_CHECKING:  # the shapes a stripped line may turn out to be (ServerLogParser, TimingsMixin)

        def _gin(self, line: str, line_no: int) -> None: ...
        def _slog(self, line: str, line_no: int) -> None: ...
        def _plain(self, m: re.Match[str], line_no: int) -> None: ...
        def _raw(self, line: str, line_no: int) -> None: ...
        def _runner_text(self, line: str, line_no: int) -> bool: ...
        def _cpp(self, function: str, message: str, values: dict[str, Any], line_no: int) -> None: ...

    def _init_prefixes(self) -> None:
        self._prefix_ts: int | None = None  # absolute time of the current line's collector prefix

    def _other(self, line: str, line_no: int, m: re.Match[str]) -> None:
        try:
            self._shape(line, line_no, 0, m)
        except (ValueError, IndexError, KeyError, TypeError, OverflowError, AttributeError, RecursionError):
            self.counts.junk += 1  # junk never raises
        finally:
            self._prefix_ts = None

    def _dispatch(self, line: str, line_no: int, depth: int) -> None:
        line = line.rstrip("\r\n")
        if line.startswith("[GIN] "):
            self._gin(line, line_no)
        elif line.startswith("time="):
            self._slog(line, line_no)
        elif line.startswith(("slot ", "image ")):
            self._raw(line, line_no)
        elif not line or line.isspace():
            return
        else:
            m = GATE.match(line)
            if m is None:
                self._skip(line)
            else:
                self._shape(line, line_no, depth, m)

    def _strip(self, name: str, rest: str, line_no: int, depth: int, abs_ts: int | None = None) -> None:
        self._bump_prefix(name)
        if abs_ts is not None and self._prefix_ts is None:
            self._prefix_ts = abs_ts
        self._dispatch(rest, line_no, depth + 1)

    def _bump_prefix(self, name: str) -> None:
        prefixes = self.counts.prefixes
        prefixes[name] = prefixes.get(name, 0) + 1

    def _skip(self, line: str) -> None:
        if CONTROL.search(line):
            self.counts.junk += 1
        else:
            self.counts.unrecognized += 1

    def _shape(self, line: str, line_no: int, depth: int, m: re.Match[str]) -> None:
        """A line that `GATE` matched: a collector prefix, JSON, ANSI or raw runner output."""
        if depth > 5:
            self.counts.unrecognized += 1
            return
        shape = m.lastgroup
        if shape == "journal" or shape == "compose" or shape == "bracket":
            self._strip(shape, line[m.end() :], line_no, depth)
        elif shape == "raw":
            if not self._runner_text(line, line_no):
                self._skip(line)
        elif shape == "digit":
            d = GO_PLAIN.match(line)
            if d:
                self._plain(d, line_no)
                return
            d = _ISO_PREFIX.match(line)
            if d:
                abs_ts = iso_abs_us(d.group(1) + d.group(2)) if d.group(2) else None
                self._strip("iso time" if d.group(2) else "naive date", line[d.end() :], line_no, depth, abs_ts)
                return
            d = _LLAMA_PREFIX.match(line) or _JOURNAL.match(line)
            if d:
                self._strip("llama.cpp" if d.re is _LLAMA_PREFIX else "journal", line[d.end() :], line_no, depth)
                return
            self._skip(line)
        elif shape == "json":
            self._json_line(line, line_no, depth)
        else:  # esc
            plain = ANSI.sub("", line)
            if plain != line:
                self._strip("ansi", plain, line_no, depth)
            else:
                self._skip(line)

    def _json_line(self, line: str, line_no: int, depth: int) -> None:
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            self.counts.junk += 1
            return
        if not isinstance(data, dict):
            self.counts.unrecognized += 1
            return
        inner = data.get("log")
        if isinstance(inner, str):  # Docker json-file / k8s export
            stamp = data.get("time")
            abs_ts = None
            if isinstance(stamp, str):
                try:
                    abs_ts = iso_abs_us(stamp)
                except ValueError:
                    abs_ts = None
            self._strip("json", inner, line_no, depth, abs_ts)
            return
        if "function" in data:  # the 2024 C++ server with --log-format json
            message = data.get("msg", data.get("message"))
            self._cpp(str(data["function"]), str(message or ""), data, line_no)
            return
        self.counts.unrecognized += 1
