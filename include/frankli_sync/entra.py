"""The Entra user attributes the sync reads, and how they are named in staging.

Graph returns camelCase JSON; staging and every DataFrame downstream use the
snake_case column names below. Keeping the one table here means the source,
the staging schema, validation and the attribute mapping cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Entra (Graph) attribute name -> staging column name.
ENTRA_ATTRIBUTES: dict[str, str] = {
    "id": "object_id",
    "userPrincipalName": "user_principal_name",
    "mail": "mail",
    "displayName": "display_name",
    "givenName": "given_name",
    "surname": "surname",
    "jobTitle": "job_title",
    "department": "department",
    "officeLocation": "office_location",
    "companyName": "company_name",
    "employeeId": "employee_id",
    "streetAddress": "street_address",
    "city": "city",
    "state": "state",
    "postalCode": "postal_code",
    "country": "country",
    "usageLocation": "usage_location",
    "businessPhones": "business_phone",
    "mobilePhone": "mobile_phone",
    "employeeHireDate": "employee_hire_date",
    "accountEnabled": "account_enabled",
    "userType": "user_type",
    "manager": "manager_id",
    # Read only when a tenant's mapping, scoping filters or validation name them (`graph_select`).
    "employeeType": "employee_type",
    "preferredLanguage": "preferred_language",
    "faxNumber": "fax_number",
    "ageGroup": "age_group",
    "onPremisesSamAccountName": "on_premises_sam_account_name",
}
# Attributes Graph is asked for only when a tenant needs them: a tenant that does not has them empty.
OPTIONAL_ATTRIBUTES: tuple[str, ...] = (
    "employeeType",
    "preferredLanguage",
    "faxNumber",
    "ageGroup",
    "onPremisesSamAccountName",
)

STAGED_COLUMNS: tuple[str, ...] = tuple(ENTRA_ATTRIBUTES.values())

# PostgreSQL text cannot hold a NUL character, so staging records one as U+2400 (␀) on
# every backend; validation quarantines a mapped value containing either.
NUL = "\x00"
NUL_MARK = "\u2400"

# Attributes always requested with $select (manager comes through $expand).
GRAPH_SELECT: tuple[str, ...] = tuple(
    name for name in ENTRA_ATTRIBUTES if name != "manager" and name not in OPTIONAL_ATTRIBUTES
)


def graph_select(needed: Iterable[str]) -> tuple[str, ...]:
    """The `$select` of a tenant: the attributes always read, and the optional ones it needs."""
    wanted = set(needed)
    return (*GRAPH_SELECT, *(name for name in OPTIONAL_ATTRIBUTES if name in wanted))


def graph_user_to_row(user: dict[str, Any]) -> dict[str, Any]:
    """Flatten one Graph user object into a staging row (snake_case, scalar values)."""
    get = user.get
    row = {column: get(attribute) for attribute, column in ENTRA_ATTRIBUTES.items()}  # a million a sync: kept lean
    phones = row["business_phone"]
    row["business_phone"] = phones[0] if phones else None
    manager = row["manager_id"]
    row["manager_id"] = manager.get("id") if isinstance(manager, dict) else None
    enabled = row["account_enabled"]
    row["account_enabled"] = bool(enabled) if enabled is not None else None
    return row
