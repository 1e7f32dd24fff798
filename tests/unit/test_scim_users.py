"""Frankli users as SCIM resources and back: the pure half of the SCIM target (`sinks.scim_users`)."""

from __future__ import annotations

import pytest
from frankli_sync.plan import SYNC
from frankli_sync.sinks.scim_users import (
    ENTERPRISE,
    create_body,
    listing_mark,
    newest_mark,
    part_of_state,
    patch_operations,
    state_of_listing,
    user_row,
)

pytestmark = pytest.mark.unit

JANE = {
    "id": "s-jane",
    "externalId": "obj-jane",
    "userName": "jane@contoso.example",
    "active": True,
    "name": {"givenName": "Jane", "familyName": "Doe"},
    "emails": [{"value": "jane@contoso.example", "type": "work", "primary": True}],
    "addresses": [{"type": "work", "streetAddress": "1 Main St", "locality": "Dublin", "formatted": "Dublin HQ"}],
    "phoneNumbers": [{"type": "work", "value": "+1"}, {"type": "mobile", "value": "+2"}],
    "title": "Engineer",
    ENTERPRISE: {"department": "R&D", "manager": {"value": "s-boss"}},
    "meta": {"version": 'W/"1"', "location": "http://a/v2/Users/s-jane"},
}
NAMES = {"role": {"engineer": "Engineer"}, "department": {"r&d": "R&D"}, "site": {}}


def test_a_scim_user_reads_as_a_frankli_row() -> None:
    row = user_row(JANE, {})
    assert (row["id"], row["external_id"], row["email"], row["status"]) == (
        "s-jane",
        "obj-jane",
        "jane@contoso.example",
        "active",
    )
    assert (row["city"], row["street_address"], row["postal_code"]) == ("Dublin", "1 Main St", None)
    assert (row["mobile_phone"], row["phone"]) == ("+2", "+1")
    assert (row["role_id"], row["department_id"], row["site_id"], row["manager_id"]) == (
        "Engineer",
        "R&D",
        "Dublin HQ",
        "s-boss",
    )


def test_an_inactive_user_is_the_syncs_to_restore_only_when_its_audit_says_so() -> None:
    inactive = {**JANE, "active": False}
    by_admin = user_row(inactive, {})
    assert (by_admin["status"], by_admin["archived_by"]) == ("archived", None)
    by_sync = user_row(inactive, {"obj-jane": "invited"})
    assert (by_sync["archived_by"], by_sync["status_before_archive"]) == (SYNC, "invited")


def test_entities_are_the_distinct_values_and_their_own_ids() -> None:
    other = {**JANE, "id": "s-joe", "externalId": "obj-joe", "userName": "joe@contoso.example", "title": "Designer"}
    state = state_of_listing([JANE, other], {})
    assert sorted(state.entities["roles"]["name"]) == ["Designer", "Engineer"]
    assert list(state.entities["departments"]["id"]) == ["R&D"]
    assert state.entities["sites"]["deleted_at"].isna().all()


def test_part_of_state_keeps_the_asked_users_and_their_managers() -> None:
    boss = {"id": "s-boss", "externalId": "obj-boss", "userName": "boss@contoso.example", "active": True}
    other = {"id": "s-x", "externalId": "obj-x", "userName": "x@contoso.example", "active": True}
    odd = {"id": "s-odd", "userName": "zoë@contoso.example", "active": True}  # not ASCII: always read
    state = state_of_listing([JANE, boss, other, odd], {})
    part = part_of_state(state, ["obj-jane"], [])
    assert sorted(part.users["id"]) == ["s-boss", "s-jane", "s-odd"]
    assert sorted(part_of_state(state, [], ["x@contoso.example"]).users["id"]) == ["s-odd", "s-x"]


def test_the_mark_moves_with_any_attribute_and_ignores_the_location() -> None:
    mark = listing_mark([JANE])
    assert listing_mark([{**JANE, "meta": {**JANE["meta"], "location": "http://b/v2/Users/s-jane"}}]) == mark
    assert listing_mark([{**JANE, "title": "Lead"}]) != mark
    assert listing_mark([{**JANE, "active": False}]) != mark


def test_a_create_body_carries_every_mapped_value_and_the_manager_by_scim_id() -> None:
    record = {
        "external_id": "obj-new",
        "email": "new@contoso.example",
        "first_name": "New",
        "last_name": None,
        "city": "Cork",
        "mobile_phone": "+3",
        "role": "engineer",
        "department": None,
        "status": "uninvited",
    }
    body = create_body(record, NAMES, "s-boss")
    assert body["userName"] == "new@contoso.example" and body["active"] is True
    assert body["externalId"] == "obj-new"
    assert body["name"] == {"givenName": "New"}
    assert body["title"] == "Engineer", "an entity key is written as the name Frankli holds"
    assert body["addresses"] == [{"type": "work", "locality": "Cork"}]
    assert body["phoneNumbers"] == [{"type": "mobile", "value": "+3"}]
    assert body["emails"] == [{"type": "work", "value": "new@contoso.example", "primary": True}]
    assert body[ENTERPRISE] == {"manager": {"value": "s-boss"}}
    assert body["schemas"][1] == ENTERPRISE


def test_an_update_patches_only_what_changed_and_removes_what_was_cleared() -> None:
    changes = {"city": ["Dublin", None], "mobile_phone": ["+2", None], "role": ["engineer", None], "last_name": 1}
    after = {"city": None, "mobile_phone": None, "role": None, "last_name": "Smith"}
    operations = patch_operations(changes, after, JANE, NAMES, None)
    assert operations == [
        {"op": "remove", "path": 'addresses[type eq "work"].locality'},
        {"op": "remove", "path": 'phoneNumbers[type eq "mobile"]'},
        {"op": "remove", "path": "title"},
        {"op": "replace", "path": "name.familyName", "value": "Smith"},
    ]


def test_a_missing_typed_entry_is_added_whole_and_an_email_change_renames_the_user() -> None:
    bare = {"id": "s-bare", "userName": "old@contoso.example"}
    changes = {"email": 1, "street_address": 1, "postal_code": 1, "manager": 1}
    after = {"email": "new@contoso.example", "street_address": "2 Quay", "postal_code": "T12"}
    operations = patch_operations(changes, after, bare, NAMES, "s-boss")
    assert operations == [
        {"op": "replace", "path": "userName", "value": "new@contoso.example"},
        {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": {"value": "s-boss"}},
        {"op": "add", "path": "emails", "value": [{"type": "work", "value": "new@contoso.example"}]},
        {"op": "add", "path": "addresses", "value": [{"type": "work", "streetAddress": "2 Quay", "postalCode": "T12"}]},
    ]
    assert patch_operations({"manager": 1}, {}, JANE, NAMES, None) == [
        {"op": "remove", "path": f"{ENTERPRISE}:manager"}
    ]


def test_the_probed_mark_moves_with_a_write_a_deletion_and_a_tie() -> None:
    newest = [{"id": "a", "meta": {"lastModified": "2026-12-02T08:00:00Z", "version": 'W/"7"'}}]
    mark = newest_mark(10, newest)
    assert newest_mark(10, [dict(newest[0])]) == mark
    assert newest_mark(9, newest) != mark, "a deletion"
    written = [{"id": "b", "meta": {"lastModified": "2026-12-02T08:00:01Z", "version": 'W/"8"'}}]
    assert newest_mark(10, written) != mark, "a write makes another user the newest"
    tie = [*newest, {"id": "c", "meta": {"lastModified": "2026-12-02T08:00:00Z", "version": 'W/"9"'}}]
    assert newest_mark(10, tie) != mark, "a write in the same instant on a coarse clock"
