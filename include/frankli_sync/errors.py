"""Errors that say what to do, and which of them retrying cannot fix.

`SyncStopped` marks a stop that task retries cannot help: a safety rule stopped
the run on purpose, or the configuration / credentials are wrong. The DAG turns
it into ``AirflowFailException`` so the task fails at once instead of being
retried for minutes. Every message names the tenant, the field, the user or the
line, and what to do.
"""

from __future__ import annotations


class SyncStopped(RuntimeError):
    """Retrying the same task will not help: the message says what to fix."""
