"""Periodic housekeeping: delete what has expired, and audit entries past their retention.

Everything is deleted in small batches with the event loop free in between (see
:func:`authgear.server.storage.deletes.delete_in_batches`), so a purge after a flood of anonymous
requests does not stall the requests being served.
"""

from __future__ import annotations

from authgear.server import metrics
from authgear.server.sessions import revocation_retention
from authgear.server.state import ServerState
from authgear.server.storage import Purged

DAY = 86400


async def purge(state: ServerState, now: int) -> Purged:
    config = state.config
    purged = await state.repo.purge_expired(
        now, failures_before=now - config.lockout.history_duration
    )
    await state.repo.accounts.purge(now, purged)
    await state.device_codes.purge(now, purged)
    if config.audit_log_retention_days is not None:
        await state.admin.purge_audit(now - config.audit_log_retention_days * DAY, purged)
    await state.limiter.purge(now, purged)
    # A revocation older than every access token it could concern refuses nothing any more.
    await state.repo.purge_revocations(now - revocation_retention(state.config), purged)
    await state.repo.delete_retired_keys(now)
    for table, count in purged.rows.items():
        if count:
            metrics.PURGED_ROWS.labels(table).inc(count)
    metrics.PURGE_BATCHES.inc(purged.batches)
    return purged
