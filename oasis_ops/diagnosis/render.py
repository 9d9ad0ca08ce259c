"""The post-mortem rendered: Markdown (charts as SVG files beside it) or one self-contained HTML
file (inline CSS and SVG, no script, no network), written atomically. Both render the same
blocks of oasis_ops.diagnosis.report.PostMortem, so they say the same thing."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oasis_ops.errors import UsageError

if TYPE_CHECKING:
    from oasis_ops.diagnosis.report import PostMortem

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_ITALIC = re.compile(r"(?<![*\w])\*([^*]+)\*(?![*\w])")


def _inline_html(text: str) -> str:
    out = escape(text)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return _ITALIC.sub(r"<em>\1</em>", out)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(pm: PostMortem, chart_links: dict[str, str] | None = None) -> str:
    """Markdown; charts are linked to `chart_links[name]` (relative paths of SVG files)."""
    lines = [f"# {pm.title}", ""]
    for block in pm.blocks:
        kind = block[0]
        if kind == "meta":
            lines += [f"*{block[1]}*", ""]
        elif kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind in ("ul", "ol"):
            lines += [(f"{n}. " if kind == "ol" else "- ") + item for n, item in enumerate(block[1], 1)] + [""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            lines.append("|" + "|".join("---" for _ in headers) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "finding":
            f = block[1]
            lines += [f"### {f.title} — {f.status}, confidence {f.confidence:.2f}", "", f"`{f.id}`", ""]
            lines += [f"- {e}" for e in f.evidence]
            lines += ["", f"**Action:** {f.action}", ""]
        elif kind == "chart":
            chart = block[1]
            link = (chart_links or {}).get(chart.name)
            if link:
                lines += [f"![{chart.title}]({link})", "", f"*{chart.caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1d1d1f;max-width:900px;margin:2rem auto;padding:0 1.2rem;line-height:1.5}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
h3{font-size:1rem;margin:1.2rem 0 .3rem}.meta{color:#666;font-size:.85rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:left}
th{background:#f5f5f7}td{font-variant-numeric:tabular-nums}code{background:#f2f2f2;padding:0 .25rem;border-radius:3px;font-size:.85em}
.finding{border-left:4px solid #d62728;background:#fff8f8;padding:.4rem .9rem;margin:.8rem 0}
.finding.refuted{border-color:#2ca02c;background:#f6fbf6}.badge{font-size:.75rem;padding:.05rem .45rem;border-radius:8px;color:#fff;background:#d62728;margin-left:.4rem}
.refuted .badge{background:#2ca02c}.action{margin-top:.4rem}figure{margin:1rem 0}figcaption{color:#666;font-size:.85rem}
svg{max-width:100%;height:auto}
"""


def render_html(pm: PostMortem) -> str:
    """One self-contained HTML document: inline CSS and SVG, no script, no network."""
    body = [f"<h1>{escape(pm.title)}</h1>"]
    list_open: str | None = None
    for block in pm.blocks:
        kind = block[0]
        if kind == "meta":
            body.append(f'<p class="meta">{_inline_html(block[1])}</p>')
        elif kind == "h2":
            body.append(f"<h2>{escape(block[1])}</h2>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind in ("ul", "ol"):
            list_open = kind
            body.append(f"<{kind}>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1]) + f"</{list_open}>")
        elif kind == "table":
            head = "".join(f"<th>{escape(str(h))}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "finding":
            f = block[1]
            evidence = "".join(f"<li>{_inline_html(e)}</li>" for e in f.evidence)
            body.append(
                f'<div class="finding {escape(f.status)}"><h3>{escape(f.title)}<span class="badge">{escape(f.status)} · '
                f"{f.confidence:.2f}</span></h3><div><code>{escape(f.id)}</code></div><ul>{evidence}</ul>"
                f'<div class="action"><strong>Action:</strong> {_inline_html(f.action)}</div></div>'
            )
        elif kind == "chart":
            chart = block[1]
            body.append(f"<figure>{chart.svg}<figcaption>{escape(chart.caption)}</figcaption></figure>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(pm.title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


@dataclass
class WrittenReport:
    path: Path
    format: str  # "md" | "html"
    charts: list[Path]
    incidents: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "charts": [str(c) for c in self.charts], "incidents": self.incidents}


def write_report(pm: PostMortem, out: str | os.PathLike[str]) -> WrittenReport:
    """Write `pm` to FILE.md (charts as FILE-<name>.svg beside it) or FILE.html (charts inline).
    Files are written aside and renamed, so a reader never sees half a report."""
    path = Path(out).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".md", ".markdown", ".html", ".htm"):
        raise UsageError(f"--out must end in .md or .html, got {path.name!r}")
    if not path.parent.is_dir():
        raise UsageError(f"the directory of --out does not exist: {path.parent}")
    charts: list[Path] = []
    if suffix in (".html", ".htm"):
        _atomic_write(path, render_html(pm))
        fmt = "html"
    else:
        links = {}
        for chart in pm.charts:
            chart_path = path.with_name(f"{path.stem}-{chart.name}.svg")
            _atomic_write(chart_path, chart.svg + "\n")
            charts.append(chart_path)
            links[chart.name] = chart_path.name
        _atomic_write(path, render_markdown(pm, links))
        fmt = "md"
    incidents = len(pm.analysis.incidents) if pm.analysis else 0
    return WrittenReport(path, fmt, charts, incidents)


def _atomic_write(path: Path, content: str) -> None:
    """Temp file made exclusively (mkstemp: unpredictable name, never follows a planted link),
    then renamed over `path`: a reader never sees half a report."""
    partial: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        partial = Path(name)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(partial, 0o644)  # mkstemp makes 0600; a report is meant to be shared
        os.replace(partial, path)
    except OSError as exc:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def report_bytes(pm: PostMortem) -> bytes:
    """The HTML report as bytes (for a download button)."""
    return render_html(pm).encode("utf-8")


__all__ = ["WrittenReport", "render_html", "render_markdown", "report_bytes", "write_report"]
