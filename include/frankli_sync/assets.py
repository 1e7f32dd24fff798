"""The Airflow Asset "the users of this Frankli organisation changed", for DAGs downstream of the sync.

One asset per Frankli organisation (a tenant's target; config refuses two tenants on one):

    frankli://<target conn_id, lower-cased>/<organisation, percent-encoded>/users

e.g. ``Asset("frankli://frankli_contoso/Contoso%20Ltd/users")`` (its name is its URI). The connection is
part of it because the organisation's name is unique only within one Frankli database. A DAG that
should run when those users changed schedules on it::

    from airflow.sdk import Asset, dag

    @dag(schedule=[Asset("frankli://frankli_contoso/Contoso%20Ltd/users")])

or, with this package importable, ``schedule=[users_asset_of("contoso")]``.

An event is emitted by ``load_upserts`` and by ``load_archives`` each time that load wrote users (created,
updated, linked, restored, archived), with ``extra`` = tenant, organisation, run id, step and the counts.
A run that wrote nothing emits nothing: a dry run, a run with no changes, a load superseded by a newer
snapshot, the archives a deletion guard stopped, a failed load (rolled back). So a downstream run means
"Frankli users changed", never "the sync ran". A run that both upserts and archives emits two events,
one per load: Airflow queues one downstream run for events that arrive before it is created.

How: each load has the tenant's ``AssetAlias`` (``frankli_users_changed__<tenant>``) as its outlet and adds
the organisation's asset to it through ``outlet_events`` only when it wrote something. Airflow 3.3 gives a
task no way to drop the event of a plain ``Asset`` outlet: ``TaskInstance.register_asset_changes_in_db``
records one for every ``Asset`` outlet of a successful task, extra or not; an alias records only the
events added to it (``OutletEventAccessor.add``). An asset first reached through the alias is created by
Airflow on that first event and is active once a DAG schedules on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from airflow.sdk import Asset, AssetAlias

from frankli_sync.config import TargetSettings, TenantConfig

# Counts of a load's summary that are not changes to Frankli users.
NOT_USER_CHANGES = frozenset({"quarantine"})


def users_asset(target: TargetSettings) -> Asset:
    """The asset of the users of the target's Frankli organisation."""
    connection = quote(target.conn_id.strip().lower(), safe="")
    return Asset(uri=f"frankli://{connection}/{quote(target.organisation.strip(), safe='')}/users")


def users_asset_of(tenant_name: str) -> Asset:
    """The asset of a configured tenant's organisation (reads ``$FRANKLI_SYNC_CONFIG``)."""
    from frankli_sync.config import load_config

    return users_asset(load_config().tenant(tenant_name).target)


def changes_alias(tenant: TenantConfig) -> AssetAlias:
    """The loads' outlet: the organisation's asset is added to it only when a load wrote users."""
    return AssetAlias(name=f"frankli_users_changed__{tenant.name}")


def written(summary: Mapping[str, Any]) -> dict[str, int]:
    """The user changes a load's summary counts (its dry-run, superseded and quarantine entries left out)."""
    return {
        action: count
        for action, count in summary.items()
        if action not in NOT_USER_CHANGES and isinstance(count, int) and not isinstance(count, bool) and count > 0
    }


def announce(context: Mapping[str, Any], tenant: TenantConfig, step: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Add the organisation's asset event when the load `step` wrote users; returns `summary` unchanged."""
    changes = written(summary)
    if changes:
        extra = {
            "tenant": tenant.name,
            "organisation": tenant.target.organisation,
            "run_id": str(context["run_id"]),
            "step": step,
            "counts": changes,
        }
        context["outlet_events"][changes_alias(tenant)].add(users_asset(tenant.target), extra=extra)
    return summary
