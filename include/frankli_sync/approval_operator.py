"""The approval task of a tripped deletion guard: Airflow's `ApprovalOperator`, keeping the answer with the run.

Airflow 3 drops the return value of an approval task that rejects (it skips its downstream task by
raising), so the answer, whichever it is, is kept in staging as the run's ``approval`` document
before the operator acts on it: `pipeline.apply_approved_archives` and the report read it there.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator


class ArchiveApproval(ApprovalOperator):
    def __init__(self, *, tenant: str, **kwargs: Any) -> None:
        self.tenant = tenant
        super().__init__(**kwargs)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from frankli_sync import pipeline

        pipeline.keep_approval(self.tenant, context["run_id"], event)
        return super().execute_complete(context=context, event=event)
