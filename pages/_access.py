"""Who may see a page: the Host check (DNS rebinding) and, with an access secret, sign-in.

The rules live in oasis_ops.access; this module draws the refusal and the sign-in form. A
session signs in once (Streamlit keeps it for the browser tab's session); a wrong secret is
audited in the configured database's sidecar and rate-limited per client address.
"""

from __future__ import annotations

import hashlib
import logging
import math

import streamlit as st

from oasis_ops.access import LoginGuard, host_header_allowed, is_loopback_name, secret_matches
from oasis_ops.settings import Settings

log = logging.getLogger("oasis_ops.ui")

SIGNED_IN_KEY = "_oasis_signed_in"  # the digest of the secret this session signed in with
GUARD = LoginGuard()  # one per server process: every session's failures count


def host_ok(settings: Settings) -> bool:
    """False for a session whose Host header this console must not answer (see
    oasis_ops.access.host_header_allowed)."""
    return host_header_allowed(st.context.headers.get("Host"), str(settings.host), settings.allowed_hosts)


def refuse_host(settings: Settings) -> None:
    if is_loopback_name(str(settings.host)):
        st.error("This console only answers on its loopback address (127.0.0.1 or localhost).")
    else:
        st.error("This console does not answer to this host name: add it to the `allowed_hosts` setting.")
    st.stop()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def signed_in(settings: Settings) -> bool:
    secret = str(settings.access_secret)
    return not secret or st.session_state.get(SIGNED_IN_KEY) == _digest(secret)


def client_address() -> str:
    return str(getattr(st.context, "ip_address", None) or "unknown")


def sign_in_form(settings: Settings) -> None:
    """The sign-in form; stops the page until the session has signed in."""
    client = client_address()
    st.title("oasis-ops")
    st.caption("This console needs its access secret (the `access_secret` setting of the machine it runs on).")
    with st.form("oasis_sign_in", clear_on_submit=True):
        given = st.text_input("Access secret", type="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        wait = GUARD.wait_s(client)
        if wait > 0:
            _audit(settings, client, "refused", f"rate-limited: {GUARD.max_failures} wrong secrets within {GUARD.window_s:.0f} s")
            st.error(f"Too many wrong secrets from {client}: try again in {math.ceil(wait)} s.")
        elif secret_matches(given, str(settings.access_secret)):
            GUARD.succeeded(client)
            st.session_state[SIGNED_IN_KEY] = _digest(str(settings.access_secret))
            _audit(settings, client, "done", "signed in")
            st.rerun()
        else:
            GUARD.failed(client)
            _audit(settings, client, "refused", "wrong access secret")
            st.error("Wrong secret.")
    st.stop()


def _audit(settings: Settings, client: str, outcome: str, message: str) -> None:
    """One audit row (action `sign_in`) in the configured database's sidecar; the server log
    when there is none."""
    log.warning("sign-in from %s: %s (%s)", client, outcome, message)
    if not settings.db:
        return
    from oasis_ops.actions.audit import audit
    from oasis_ops.actions.result import ActionResult
    from oasis_ops.errors import OasisOpsError
    from oasis_ops.sidecar import Sidecar

    try:
        sidecar = Sidecar.for_trial_db(settings.db, settings)
    except OasisOpsError as exc:
        log.warning("cannot audit the sign-in: %s", exc.message)
        return
    audit(sidecar, ActionResult(action="sign_in", target=client, requested_by="dashboard", outcome=outcome, message=message))
