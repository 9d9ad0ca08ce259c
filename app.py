"""oasis-ops dashboard: the Streamlit entry point (`oasis-ops dashboard` runs it).

A thin shell around the pages: page config, navigation, and the frame every page shares (the
data-source picker in the sidebar, the demo banner). Pages live in pages/; adding one is one
line in PAGES. Each page starts with `_common.page_setup("pages/<file>.py")`, which returns
the settings and draws the frame itself when Streamlit ran the page without this shell.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages import _common

ROOT = Path(__file__).resolve().parent

# (file under pages/, title, icon). The first present page is the default; missing files are
# skipped so the shell runs while other pages are still being written.
PAGES: list[tuple[str, str, str]] = [
    ("live.py", "Live", ":material/monitor_heart:"),
    ("timeline.py", "Timeline", ":material/timeline:"),
    ("recovery.py", "Recovery", ":material/healing:"),
    ("diagnostics.py", "Diagnostics", ":material/troubleshoot:"),
    ("demo.py", "Demo", ":material/science:"),
]

# A local file: a ":material/...:" page icon makes the browser fetch it from fonts.gstatic.com,
# which fails offline (a console error on every page).
st.set_page_config(page_title=_common.PAGE_TITLE, page_icon=str(ROOT / "assets" / "icon.png"), layout="wide")

available = [(f, t, i) for f, t, i in PAGES if (ROOT / "pages" / f).is_file()]
pages = [
    st.Page(f"pages/{file}", title=title, icon=icon, url_path=Path(file).stem, default=(n == 0))
    for n, (file, title, icon) in enumerate(available)
]
settings = _common.app_settings()
# A foreign Host name (DNS rebinding) gets a refusal, and a session that has not signed in (with
# an access secret set) the sign-in form: nothing else, not even the page list.
allowed = _common.access_ok(settings)
current = st.navigation(pages, position="sidebar" if allowed else "hidden")
if not allowed:
    _common.refuse_access(settings)
_common.follow_goto()

_common.shell_frame(settings)
_common.mark_shell()
current.run()
