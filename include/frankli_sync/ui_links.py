"""Links into the Airflow UI: a run's report page (the reports plugin) and the DAG run, under ``[api] base_url``."""

from __future__ import annotations

from urllib.parse import quote

from frankli_sync.report_site import safe_run_id

REPORTS_PREFIX = "/frankli-reports"  # where plugins/frankli_reports.py mounts the reports
DEFAULT_BASE_URL = "http://localhost:8080/"  # Airflow's own fallback for [api] base_url (its task log links)


def base_url() -> str:
    """Airflow's ``[api] base_url`` (what users open the UI at), as Airflow's own task log links take it."""
    from airflow.sdk.configuration import conf

    return (conf.get("api", "base_url", fallback=None) or DEFAULT_BASE_URL).rstrip("/")


def report_url(tenant: str, run_id: str) -> str:
    """The run's report page in the Airflow UI (the plugin's route, behind Airflow's login)."""
    return f"{base_url()}{REPORTS_PREFIX}/{tenant}/{safe_run_id(run_id)}/"


def run_url(dag_id: str, run_id: str) -> str:
    """The DAG run's page in the Airflow UI."""
    return f"{base_url()}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
