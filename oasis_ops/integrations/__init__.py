"""Integrations with harness libraries; each module imports its library, so import only the one
you use (`oasis_ops.integrations.litellm` needs litellm)."""
