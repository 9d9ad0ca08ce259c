"""The diagnosis checks, one module each; context.py holds what they share.

oasis_ops.diagnosis.findings runs them all (`diagnose()`) and is where callers import from.
"""
