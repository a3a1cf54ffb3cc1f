"""The `kreaserve` command, one module per command group: `server` (serve, worker),
`keys`, `accounts` (accounts, credits), `tasks`, `generate`, `database` (db) and
`moderation`; `common` holds what they share and `follow` how a task is followed.

Every command builds the same Settings (flags override KREASERVE_* variables), so a
command run beside a server works on that server's database; the operator commands go
through the admin API's service functions (`kreaserve.admin_service`).
"""

from __future__ import annotations

from kreaserve.cli import accounts, database, generate, keys, moderation, server, tasks
from kreaserve.cli.common import app, fail, open_database, settings_from

__all__ = ["app", "fail", "main", "open_database", "settings_from"]
# The command groups register themselves on `app` when imported.
_GROUPS = (server, keys, accounts, tasks, generate, database, moderation)


def main() -> None:
    app()
