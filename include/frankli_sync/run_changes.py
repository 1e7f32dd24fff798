"""Who changed in a run: its audit trail as rows an admin reads, searches and downloads.

A run's audit (``sync_audit``, or a dry run's plan) says what happened to each user in machine
terms: an update is ``{"changes": {"job_title": ["Engineer", "Lead"]}}``, a manager is an Entra
object id. `change_rows` turns each entry into one row a person reads: the user's UPN and name,
what happened in words (``job title: Engineer → Lead``; managers by name and UPN) and a link to
the user's page in the Entra admin center. The report task writes the rows to ``changes.csv``
(and the quarantine to ``quarantine.csv``) beside ``report.json``; the run page shows the first
rows and the plugin serves the whole list paged and filtered (`select_page`, `render_changes_page`)
without any script: a 100,000-change run is read a page at a time on the server.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from frankli_sync.report_site import CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_HEADER, template_environment
from frankli_sync.transform import ENTITY_FIELDS, TEXT_FIELDS

CHANGES_CSV = "changes.csv"
QUARANTINE_CSV = "quarantine.csv"
CHANGES_PAGE = "changes"  # the plugin's route under a run: <run>/changes
CHANGE_COLUMNS = ("action", "user_principal_name", "name", "object_id", "details", "entra_url")
QUARANTINE_COLUMNS = ("user_principal_name", "object_id", "expectation", "column", "value", "entra_url")
# What changed in Frankli. The quarantine (re-audited every run while a user stays invalid) is not a change:
# quarantine.csv and the run page list it, with each failed rule.
ACTIONS = ("create", "update", "link", "restore", "archive", "failed")  # failed: a write a SCIM target refused
ENTRA_USER_URL = (
    "https://entra.microsoft.com/#view/Microsoft_AAD_UsersAndTenants/UserProfileMenuBlade/~/overview/userId/"
)
PAGE_SIZE = 100
SHOWN_ON_RUN_PAGE = 50
# The changes page submits its search form to itself (GET); everything else as on the other report pages.
CHANGES_POLICY = CONTENT_SECURITY_POLICY.replace("form-action 'none'", "form-action 'self'")
CHANGES_HEADER_POLICY = CONTENT_SECURITY_POLICY_HEADER.replace("form-action 'none'", "form-action 'self'")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Person:
    name: str | None
    upn: str | None

    def shown(self) -> str:
        if self.name and self.upn:
            return f"{self.name} <{self.upn}>"
        return self.name or self.upn or ""


def entra_url(object_id: Any) -> str:
    """The user's page in the Entra admin center ("" for a user without an object id)."""
    return f"{ENTRA_USER_URL}{object_id}" if isinstance(object_id, str) and object_id else ""


def referenced_ids(audit: pd.DataFrame) -> set[str]:
    """The object ids whose names an audit needs: its users (a create names its own) and changed managers."""
    if audit.empty:
        return set()
    named = audit["action"] != "create"
    ids = {i for i in audit.loc[named, "external_id"] if isinstance(i, str)}
    for details in audit.loc[audit["action"] == "update", "details"]:
        for before_after in (_as_dict(details).get("changes") or {}).get("manager") or []:
            if isinstance(before_after, str):
                ids.add(before_after)
    return ids


def change_rows(audit: pd.DataFrame, people: Mapping[str, Person]) -> pd.DataFrame:
    """One readable row per audit entry (`CHANGE_COLUMNS`), in the audit's order.

    `audit`: ``external_id``, ``email``, ``action``, ``details`` (a dict or its JSON);
    `people`: Frankli's name and UPN per object id, for the users and their managers.
    """
    rows = []
    every = [_as_dict(d) for d in audit["details"]]
    created = _described_creates(audit, every, people)
    for n, (external_id, email, action, details) in enumerate(
        zip(audit["external_id"], audit["email"], audit["action"], every, strict=True)
    ):
        if n in created:
            name, text = created[n]
            rows.append((action, email or "", name, external_id or "", text, entra_url(external_id)))
            continue
        person = people.get(external_id) if isinstance(external_id, str) else None
        if person is None and action == "create":
            fields = details.get("fields") or {}
            person = Person(" ".join(str(fields[n]) for n in ("first_name", "last_name") if fields.get(n)), email)
        rows.append(
            (
                action,
                email or (person.upn if person else None) or "",
                (person.name if person else None) or "",
                external_id or "",
                describe(str(action), details, people),
                entra_url(external_id),
            )
        )
    return pd.DataFrame(rows, columns=list(CHANGE_COLUMNS), dtype=object)


def _described_creates(
    audit: pd.DataFrame, details: list[dict[str, Any]], people: Mapping[str, Person]
) -> dict[int, tuple[str, str]]:
    """Position → (name, `describe` text) of the created users, a field at a time in Arrow.

    A first sync audits a million creates: described one by one that was most of the report's
    time. Only what `describe` would show as plain text is done here (every field a known one,
    every value text); any other create is left to the per-row path.
    """
    positions = [
        n
        for n, (action, external_id) in enumerate(zip(audit["action"], audit["external_id"], strict=True))
        if action == "create" and not (isinstance(external_id, str) and external_id in people)
    ]
    fields = [details[n].get("fields") or {} for n in positions]
    if not positions or not set().union(*fields) <= _CREATE_FIELDS:
        return {}
    if any(list(f) != [k for k in _CREATE_ORDER if k in f] for f in fields):
        return {}  # `describe` keeps each entry's own order (a dry run's plan may hold another)
    columns = {}
    for field in _CREATE_ORDER:
        try:
            columns[field] = pa.array([f.get(field) for f in fields], type=pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return {}  # a value that is not text: `describe` shows it
        if pc.any(pc.match_substring(columns[field], _NUL)).as_py():
            return {}  # NUL separates the parts below (staging stores none; a dry run's plan might)
    # Each present field as "label: value" ending in NUL, an absent one as "";
    # joined, the NULs are the separators.
    parts = [
        pc.fill_null(pc.binary_join_element_wise(f"{_LABELS[field]}: ", values, _NUL, ""), "")
        for field, values in columns.items()
    ]
    texts = _separated(pc.binary_join_element_wise(*parts, ""), "; ")
    first, last = (
        pc.fill_null(pc.binary_join_element_wise(columns[n], _NUL, ""), "") for n in ("first_name", "last_name")
    )
    names = _separated(pc.binary_join_element_wise(first, last, ""), " ")
    return dict(zip(positions, zip(names, texts, strict=True), strict=True))


def _separated(joined: pa.Array, separator: str) -> list[str]:
    return pc.replace_substring(pc.utf8_rtrim(joined, _NUL), _NUL, separator).to_pylist()


_NUL = "\x00"


_CREATE_ORDER = (*TEXT_FIELDS, *ENTITY_FIELDS)  # the order the sink writes a create's fields in
_CREATE_FIELDS = frozenset(_CREATE_ORDER)


def describe(action: str, details: Mapping[str, Any], people: Mapping[str, Person]) -> str:
    """What happened to the user, in words."""
    if action == "update":
        changes = details.get("changes") or {}
        return "; ".join(
            f"{_label(field)}: {_shown(field, before, people)} → {_shown(field, after, people)}"
            for field, (before, after) in changes.items()
        )
    if action == "create":  # the common case of a first sync (a million rows): kept to plain string work
        fields = details.get("fields") or {}
        return "; ".join(
            [
                f"{_LABELS.get(name) or _label(name)}: {value if type(value) is str else _shown(name, value, people)}"
                for name, value in fields.items()
            ]
        )
    if action == "archive":
        before = details.get("status_before")
        return f"reason: {details.get('reason')}" + (f" (was {before})" if before else "")
    if action == "restore":
        return f"restored to {details.get('status')}"
    if action == "link":
        old = details.get("old_external_id")
        return f"linked by {details.get('kind')}" + (f" (was object id {old})" if old else "")
    if action == "quarantine":
        return "; ".join(_reason(r) for r in details.get("reasons") or [])
    if action == "failed":
        status = f"HTTP {details.get('status')}" if details.get("status") else "no SCIM answer"
        refused = f"{details.get('action')} refused by Frankli's SCIM API ({status}): {details.get('detail')}"
        return f"{refused}; the next run tries again"
    return json.dumps(details, default=str, ensure_ascii=False, sort_keys=True) if details else ""


def planned_audit(actions: Mapping[str, list[Mapping[str, Any]]] | None) -> pd.DataFrame:
    """A dry run's plan as the audit entries the run would have written (what `change_rows` reads)."""
    rows: list[tuple[Any, Any, str, dict[str, Any]]] = []
    meta = {"user_id", "external_id", "email", "changes", "reason", "status", "kind", "old_external_id"}
    for action, entries in (actions or {}).items():
        for entry in entries or []:
            if action == "update":
                details: dict[str, Any] = {"changes": entry.get("changes") or {}}
            elif action == "create":
                details = {"fields": {k: v for k, v in entry.items() if k not in meta and v is not None}}
            elif action == "archive":
                details = {"reason": entry.get("reason"), "status_before": entry.get("status")}
            elif action == "restore":
                details = {"status": entry.get("status")}
            elif action == "link":
                details = {"kind": entry.get("kind"), "old_external_id": entry.get("old_external_id")}
            else:
                continue  # entity creates and conflicts are listed elsewhere on the run page
            rows.append((entry.get("external_id"), entry.get("email"), action, details))
    return pd.DataFrame(rows, columns=["external_id", "email", "action", "details"], dtype=object)


def quarantine_rows(quarantined: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per failed expectation of each quarantined user (`QUARANTINE_COLUMNS`)."""
    rows = []
    for entry in quarantined:
        for reason in entry.get("reasons") or [{}]:
            value = reason.get("value")
            rows.append(
                (
                    entry.get("user_principal_name") or "",
                    entry.get("object_id") or "",
                    reason.get("expectation") or "",
                    reason.get("column") or "",
                    "" if value is None else str(value),
                    entra_url(entry.get("object_id")),
                )
            )
    return pd.DataFrame(rows, columns=list(QUARANTINE_COLUMNS), dtype=object)


def csv_text(frame: pd.DataFrame) -> str:
    """The rows as CSV for a spreadsheet: a value that would start a formula is prefixed with '.

    Directory values are untrusted: ``=HYPERLINK(...)`` as a job title must stay text when an admin
    opens the download in Excel or LibreOffice (OWASP "CSV injection").
    """
    columns = []
    for column in frame.columns:
        values = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
        formula = values.str.startswith(_FORMULA_START)
        columns.append(values.where(~formula, "'" + values).tolist())
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(frame.columns)
    writer.writerows(zip(*columns, strict=True))
    return out.getvalue()


def read_changes(text: str) -> pd.DataFrame:
    """`csv_text` read back (the ' prefix of formula-like values kept: it is part of the download)."""
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    return frame.astype(object)


@dataclass(frozen=True)
class Page:
    rows: pd.DataFrame
    total: int  # rows matching the filter
    page: int
    pages: int
    counts: dict[str, int]  # every row of the run, per action


def select_page(frame: pd.DataFrame, query: str = "", action: str = "", page: int = 1, size: int = PAGE_SIZE) -> Page:
    """The rows with `action` (any when empty) that contain `query` (case-insensitive), page `page`."""
    counts = {str(k): int(v) for k, v in frame["action"].value_counts().items()} if len(frame) else {}
    chosen = frame
    if action:
        chosen = chosen[chosen["action"] == action]
    needle = query.strip().casefold()
    if needle:
        text = chosen[["user_principal_name", "name", "object_id", "details"]].astype(str)
        hit = pd.Series(False, index=chosen.index)
        for column in text.columns:
            hit |= text[column].str.casefold().str.contains(needle, regex=False)
        chosen = chosen[hit]
    pages = max(1, math.ceil(len(chosen) / size))
    page = min(max(1, page), pages)
    rows = chosen.iloc[(page - 1) * size : page * size].reset_index(drop=True)
    return Page(rows, len(chosen), page, pages, counts)


CHANGES_TEMPLATE = """{% extends "layout.html" %}
{% from "changes_macros.html" import changes_table %}
{% block title %}Frankli sync · {{ tenant }} · who changed{% endblock %}
{% block body %}
<nav class="crumbs"><a href="../../">All tenants</a> &rsaquo; <a href="../">{{ tenant }}</a> &rsaquo;
<a href="./">run</a> &rsaquo; who changed</nav>
<h1>Who changed · {{ tenant }}</h1>
<p class="muted">Run <code>{{ run_id }}</code>{% if dry_run %} · dry run: what the run would change{% endif %}.
{% for kind, n in page.counts.items() %}{{ kind }}: {{ n }}{% if not loop.last %} · {% endif %}{% endfor %}</p>
<form method="get" action="{{ changes }}" class="box">
<label>Search <input type="search" name="q" value="{{ query }}" placeholder="UPN, name, object id, value"></label>
<label>Action <select name="action"><option value="">all</option>
{% for kind in actions %}<option value="{{ kind }}"{% if kind == action %} selected{% endif %}>{{ kind }}</option>
{% endfor %}</select></label>
<button type="submit">Filter</button>
<a href="{{ csv }}" download>Download CSV (all {{ page.counts.values()|sum }})</a>
</form>
<p>{{ page.total }} matching{% if page.total %}, page {{ page.page }} of {{ page.pages }}{% endif %}.</p>
{{ changes_table(rows) }}
<nav class="links">
{% if page.page > 1 %}<a href="{{ link(page.page - 1) }}">&larr; previous</a>{% endif %}
{% if page.page < page.pages %}<a href="{{ link(page.page + 1) }}">next &rarr;</a>{% endif %}
</nav>
{% endblock %}
"""

CHANGES_MACROS = """{% macro changes_table(rows) -%}
{% if rows|length %}
<table>
<tr><th>Action</th><th>User</th><th>Name</th><th>What changed</th><th>Entra</th></tr>
{% for r in rows %}
<tr><td>{{ r.action }}</td><td class="value">{{ r.user_principal_name }}</td><td class="value">{{ r.name }}</td>
<td class="value">{{ r.details }}</td>
<td>{% if r.entra_url %}<a href="{{ r.entra_url }}" target="_blank" rel="noopener noreferrer"
title="{{ r.object_id }}">open</a>{% endif %}</td></tr>
{% endfor %}
</table>
{% else %}<p class="muted">none</p>{% endif %}
{%- endmacro %}
"""

_ENV = template_environment({"changes.html": CHANGES_TEMPLATE, "changes_macros.html": CHANGES_MACROS})


def render_changes_page(
    page: Page, *, tenant: str, run_id: str, dry_run: bool, query: str = "", action: str = ""
) -> str:
    """The paged, filtered list of a run's changes (no script; the form submits to the page itself)."""

    def link(number: int) -> str:
        return f"{CHANGES_PAGE}?" + urlencode({"q": query, "action": action, "page": number})

    return _ENV.get_template("changes.html").render(
        page=page,
        rows=page.rows.to_dict("records"),
        tenant=tenant,
        run_id=run_id,
        dry_run=dry_run,
        query=query,
        action=action,
        actions=ACTIONS,
        changes=CHANGES_PAGE,
        csv=CHANGES_CSV,
        link=link,
        csp=CHANGES_POLICY,
    )


def _as_dict(details: Any) -> dict[str, Any]:
    if isinstance(details, Mapping):
        return dict(details)
    if isinstance(details, str) and details:
        try:
            loaded = json.loads(details)
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}
    return {}


def _label(field: str) -> str:
    return field.replace("_", " ")


_LABELS = {f: _label(f) for f in (*TEXT_FIELDS, *ENTITY_FIELDS, "manager")}


def _shown(field: str, value: Any, people: Mapping[str, Person]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "(empty)"
    if field == "manager" and isinstance(value, str) and value in people:
        return people[value].shown() or value
    return str(value)


def _reason(reason: Mapping[str, Any]) -> str:
    text = str(reason.get("expectation") or "")
    if reason.get("column"):
        text += f" ({reason['column']})"
    if reason.get("value") is not None:
        text += f": {reason['value']}"
    return text
