"""Diagnosis (issue 6): incident windows, evidence-based findings, preflight checks, post-mortems.

    from oasis_ops.diagnosis.incidents import analyze
    analysis = analyze("trials.duckdb", load_settings())   # windows + findings, from DB + sidecar
    analysis.as_json()                                      # what `oasis-ops incidents --json` prints

windows.py finds the minutes that depart from the run's own baseline; findings.py runs the checks
of checks/ (one module per finding, the shared sidecar reading in checks/context.py) around each
window for evidence; preflight.py checks a machine before a run;
report.py composes the post-mortem, render.py writes it (Markdown or self-contained HTML with inline
SVG charts).
"""
