"""The tenant config contract (DESIGN §4): what parses, the defaults, and the errors naming the field."""

from __future__ import annotations

import copy
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from frankli_sync.config import (
    DEFAULT_MAPPING,
    MAX_CONFIG_BYTES,
    ConfigError,
    FieldMapping,
    SourceSettings,
    SyncConfig,
    Thresholds,
    load_config,
    parse_config,
)

pytestmark = pytest.mark.unit

# The example of DESIGN §4, verbatim (comments included): it must work as written.
DESIGN_EXAMPLE = """\
reports_dir: reports            # optional; run reports land under it
staging_conn_id: frankli_staging  # optional; default: a SQLite file under $AIRFLOW_HOME
tenants:
  - name: contoso               # DAG id: entra_to_frankli__contoso
    schedule: "@daily"          # any Airflow schedule
    source:
      kind: graph               # graph | csv
      conn_id: msgraph_contoso  # Airflow connection, conn type msgraph
      # path: exports/users.csv # for kind: csv
    target:
      kind: database            # database | scim
      conn_id: frankli_contoso  # Airflow connection holding a SQLAlchemy URL (database) or base URL + token (scim)
      organisation: Contoso Ltd
    scope:                      # optional; default: all users
      groups: []                # object ids; transitive membership
      exclude_guests: true
    mapping:                    # optional; defaults of §2. field: {from: <Entra attribute>, on: always|create}
      site: {from: officeLocation, on: always}
    thresholds:                 # optional
      max_invalid_share: 0.05
      max_archive_count: 500
      max_archive_share: 0.10
"""

# §2 defaults: Frankli field -> Entra attribute.
SECTION_2_SOURCES = {
    "first_name": "givenName",
    "last_name": "surname",
    "email": "userPrincipalName",
    "role": "jobTitle",
    "department": "department",
    "site": "officeLocation",
    "manager": "manager",
    "street_address": "streetAddress",
    "city": "city",
    "postal_code": "postalCode",
    "country": "country",
    "phone": "businessPhones",
    "mobile_phone": "mobilePhone",
    "start_date": "employeeHireDate",
}


def minimal_tenant(**overrides: Any) -> dict[str, Any]:
    tenant: dict[str, Any] = {
        "name": "contoso",
        "source": {"kind": "graph", "conn_id": "msgraph_contoso"},
        "target": {"kind": "database", "conn_id": "frankli_contoso", "organisation": "Contoso Ltd"},
    }
    tenant.update(overrides)
    return tenant


def other_tenant(name: str, organisation: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A tenant with its own Graph connection and Frankli organisation (one organisation, one tenant)."""
    target = {"kind": "database", "conn_id": f"frankli_{name}", "organisation": organisation or name.title()}
    defaults = {"source": {"kind": "graph", "conn_id": f"msgraph_{name}"}, "target": target}
    return minimal_tenant(name=name, **{**defaults, **overrides})


def minimal(**tenant_overrides: Any) -> dict[str, Any]:
    return {"tenants": [minimal_tenant(**tenant_overrides)]}


def write(tmp_path: Path, text: str, name: str = "tenants.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def fails_naming(raw: Any, field: str) -> str:
    """Parse `raw`; expect an error naming the dotted path `field` and return its message.

    A problem of the file raises ConfigError; a problem of a tenant breaks that tenant only: its error
    (``tenant 'name': <field>: ...``, or ``<field>: ...`` when its name is unusable) is in ``errors``.
    """
    try:
        config = parse_config(raw)
    except ConfigError as error:
        message = str(error)
        assert message.startswith(f"{field}:"), f"expected the error to name {field!r}, got: {message}"
        return message
    assert len(config.errors) == 1, f"expected one broken tenant, got {dict(config.errors)}"
    (message,) = config.errors.values()
    assert re.match(rf"(tenant '[a-z0-9_]+': )?{re.escape(field)}:", message), f"expected {field!r}, got: {message}"
    return message


# --- the example and the defaults ------------------------------------------------------------


def test_design_example_loads_from_yaml_as_written(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DESIGN_EXAMPLE))
    assert isinstance(config, SyncConfig)
    assert config.staging_conn_id == "frankli_staging"
    (tenant,) = config.tenants
    assert tenant.name == "contoso"
    assert tenant.dag_id == "entra_to_frankli__contoso"
    assert tenant.schedule == "@daily"
    assert (tenant.source.kind, tenant.source.conn_id) == ("graph", "msgraph_contoso")
    assert (tenant.target.kind, tenant.target.conn_id, tenant.target.organisation) == (
        "database",
        "frankli_contoso",
        "Contoso Ltd",
    )
    assert tenant.scope.groups == ()
    assert tenant.scope.exclude_guests is True
    assert tenant.mapping["site"] == FieldMapping(source="officeLocation", on="always")
    assert tenant.thresholds == Thresholds(max_invalid_share=0.05, max_archive_count=500, max_archive_share=0.10)


def test_mapping_on_create_is_honoured_from_yaml(tmp_path: Path) -> None:
    # `on` is a YAML 1.1 boolean word: the key must still be read as the string "on".
    text = DESIGN_EXAMPLE.replace("site: {from: officeLocation, on: always}", "site: {from: city, on: create}")
    tenant = load_config(write(tmp_path, text)).tenants[0]
    assert tenant.mapping["site"] == FieldMapping(source="city", on="create")
    assert tenant.mapping["site"].column == "city"


def test_mapping_block_style_with_on_key_is_honoured_from_yaml(tmp_path: Path) -> None:
    text = DESIGN_EXAMPLE.replace(
        "      site: {from: officeLocation, on: always}\n",
        "      role:\n        from: jobTitle\n        on: create\n",
    )
    tenant = load_config(write(tmp_path, text)).tenants[0]
    assert tenant.mapping["role"] == FieldMapping(source="jobTitle", on="create")


def test_mapping_defaults_are_the_section_2_attributes_synced_always() -> None:
    tenant = parse_config(minimal()).tenants[0]
    assert {f: m.source for f, m in tenant.mapping.items()} == SECTION_2_SOURCES
    assert {m.on for m in tenant.mapping.values()} == {"always"}
    assert {f: s for f, (s, _) in DEFAULT_MAPPING.items()} == SECTION_2_SOURCES


def test_mapping_staging_columns_follow_the_entra_attribute() -> None:
    mapping = parse_config(minimal()).tenants[0].mapping
    assert mapping["phone"].column == "business_phone"
    assert mapping["site"].column == "office_location"
    assert mapping["start_date"].column == "employee_hire_date"
    assert mapping["manager"].column == "manager_id"


def test_mapping_override_changes_only_that_field() -> None:
    tenant = parse_config(minimal(mapping={"site": {"from": "city", "on": "create"}})).tenants[0]
    assert tenant.mapping["site"] == FieldMapping(source="city", on="create")
    assert tenant.mapping["city"] == FieldMapping(source="city", on="always")
    assert tenant.mapping["role"] == FieldMapping(source="jobTitle", on="always")


def test_mapping_on_alone_keeps_default_source() -> None:
    tenant = parse_config(minimal(mapping={"start_date": {"on": "create"}})).tenants[0]
    assert tenant.mapping["start_date"] == FieldMapping(source="employeeHireDate", on="create")


def test_thresholds_default_to_5_percent_invalid_500_or_10_percent_archived() -> None:
    thresholds = parse_config(minimal()).tenants[0].thresholds
    assert thresholds.max_invalid_share == 0.05
    assert thresholds.max_archive_count == 500
    assert thresholds.max_archive_share == 0.10


def test_thresholds_partial_override_keeps_other_defaults() -> None:
    thresholds = parse_config(minimal(thresholds={"max_archive_count": 20})).tenants[0].thresholds
    assert thresholds.max_archive_count == 20
    assert thresholds.max_archive_share == 0.10
    assert thresholds.max_invalid_share == 0.05


def test_optional_sections_default_to_all_users_and_daily_schedule() -> None:
    config = parse_config(minimal())
    tenant = config.tenants[0]
    assert tenant.schedule == "@daily"
    assert tenant.scope.groups == ()
    assert tenant.scope.exclude_guests is False
    assert config.staging_conn_id is None


def test_schedule_may_be_null_for_manual_runs() -> None:
    assert parse_config(minimal(schedule=None)).tenants[0].schedule is None


def test_tenant_lookup_by_name_and_unknown_tenant_is_a_config_error() -> None:
    config = parse_config({"tenants": [minimal_tenant(), other_tenant("fabrikam")]})
    assert config.tenant("fabrikam").name == "fabrikam"
    with pytest.raises(ConfigError, match="nope"):
        config.tenant("nope")


# --- reports_dir -------------------------------------------------------------------------------


def test_reports_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", DESIGN_EXAMPLE.replace("reports_dir: reports", "reports_dir: ../out/reports"))
    reports_dir = load_config(path).reports_dir
    assert reports_dir.is_absolute()
    assert reports_dir.resolve() == (tmp_path / "out" / "reports").resolve()


def test_reports_dir_defaults_to_reports_next_to_the_config_file(tmp_path: Path) -> None:
    text = "\n".join(line for line in DESIGN_EXAMPLE.splitlines() if not line.startswith("reports_dir"))
    assert load_config(write(tmp_path, text)).reports_dir.resolve() == (tmp_path / "reports").resolve()


def test_reports_dir_absolute_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    raw = {**minimal(), "reports_dir": str(target)}
    assert parse_config(raw, base_dir=tmp_path / "conf").reports_dir.resolve() == target.resolve()


# --- file errors ---------------------------------------------------------------------------------


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "tenants: [\n"))


def test_yaml_booleans_still_parse_as_booleans(tmp_path: Path) -> None:
    text = DESIGN_EXAMPLE.replace("exclude_guests: true", "exclude_guests: false")
    assert load_config(write(tmp_path, text)).tenants[0].scope.exclude_guests is False


# --- unknown keys at each level ------------------------------------------------------------------

UNKNOWN_KEY_CASES = [
    pytest.param(lambda raw: raw.update(report_dir="x"), "config", id="top-level"),
    pytest.param(lambda raw: raw["tenants"][0].update(schedual="@daily"), "tenants[0]", id="tenant"),
    pytest.param(lambda raw: raw["tenants"][0]["source"].update(conn="x"), "tenants[0].source", id="source"),
    pytest.param(lambda raw: raw["tenants"][0]["target"].update(org="x"), "tenants[0].target", id="target"),
    pytest.param(lambda raw: raw["tenants"][0].update(scope={"exclude_guest": True}), "tenants[0].scope", id="scope"),
    pytest.param(
        lambda raw: raw["tenants"][0].update(mapping={"office": {"from": "city"}}), "tenants[0].mapping", id="mapping"
    ),
    pytest.param(
        lambda raw: raw["tenants"][0].update(mapping={"site": {"form": "city"}}),
        "tenants[0].mapping.site",
        id="mapping-field",
    ),
    pytest.param(
        lambda raw: raw["tenants"][0].update(thresholds={"max_archive": 3}), "tenants[0].thresholds", id="thresholds"
    ),
    pytest.param(
        lambda raw: raw["tenants"][0].update(validation={"required": []}), "tenants[0].validation", id="validation"
    ),
]


@pytest.mark.parametrize(("mutate", "field"), UNKNOWN_KEY_CASES)
def test_unknown_key_fails_naming_its_level(mutate: Any, field: str) -> None:
    raw = copy.deepcopy(minimal())
    mutate(raw)
    assert "unknown key" in fails_naming(raw, field)


def test_unknown_key_in_second_tenant_names_its_index() -> None:
    raw = {"tenants": [minimal_tenant(), other_tenant("fabrikam", colour="blue")]}
    assert "colour" in fails_naming(raw, "tenants[1]")


# --- bad values ----------------------------------------------------------------------------------

BAD_VALUE_CASES = [
    pytest.param({"mapping": {"site": {"from": "office"}}}, "tenants[0].mapping.site.from", id="unknown-attribute"),
    pytest.param({"mapping": {"site": {"from": 3}}}, "tenants[0].mapping.site.from", id="from-not-string"),
    pytest.param({"mapping": {"site": {"on": "sometimes"}}}, "tenants[0].mapping.site.on", id="bad-on"),
    pytest.param({"mapping": {"site": "city"}}, "tenants[0].mapping.site", id="field-not-mapping"),
    pytest.param({"mapping": {"manager": {"from": "department"}}}, "tenants[0].mapping.manager.from", id="manager"),
    pytest.param({"thresholds": {"max_archive_share": 1.5}}, "tenants[0].thresholds.max_archive_share", id="share>1"),
    pytest.param({"thresholds": {"max_archive_share": "10%"}}, "tenants[0].thresholds.max_archive_share", id="share"),
    pytest.param({"thresholds": {"max_invalid_share": -0.1}}, "tenants[0].thresholds.max_invalid_share", id="neg"),
    pytest.param({"thresholds": {"max_archive_count": -1}}, "tenants[0].thresholds.max_archive_count", id="count<0"),
    pytest.param({"thresholds": {"max_archive_count": 2.5}}, "tenants[0].thresholds.max_archive_count", id="float"),
    pytest.param({"thresholds": {"max_archive_count": True}}, "tenants[0].thresholds.max_archive_count", id="bool"),
    pytest.param({"source": {"kind": "graph"}}, "tenants[0].source.conn_id", id="graph-needs-conn"),
    pytest.param({"source": {"kind": "graph", "conn_id": 42}}, "tenants[0].source.conn_id", id="conn-not-string"),
    pytest.param({"source": {"kind": "ldap", "conn_id": "x"}}, "tenants[0].source.kind", id="source-kind"),
    pytest.param({"source": {"kind": "csv"}}, "tenants[0].source.path", id="csv-needs-path"),
    pytest.param({"source": {"conn_id": "x", "page_size": 1000}}, "tenants[0].source.page_size", id="page-size"),
    pytest.param({"source": None}, "tenants[0].source.conn_id", id="source-missing"),
    pytest.param({"target": {"kind": "ftp", "conn_id": "x", "organisation": "O"}}, "tenants[0].target.kind", id="tk"),
    pytest.param({"target": {"conn_id": "x"}}, "tenants[0].target.organisation", id="target-organisation"),
    pytest.param({"target": {"organisation": "O"}}, "tenants[0].target.conn_id", id="target-conn"),
    pytest.param({"target": "frankli"}, "tenants[0].target", id="target-not-mapping"),
    pytest.param({"scope": {"exclude_guests": "yes"}}, "tenants[0].scope.exclude_guests", id="guests-not-bool"),
    pytest.param({"scope": {"groups": "g1"}}, "tenants[0].scope.groups", id="groups-not-list"),
    pytest.param({"scope": {"groups": [""]}}, "tenants[0].scope.groups", id="empty-group"),
    pytest.param({"schedule": 5}, "tenants[0].schedule", id="schedule"),
    pytest.param({"validation": {"required_fields": ["mail", "nope"]}}, "tenants[0].validation.required_fields[1]"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_VALUE_CASES)
def test_bad_value_fails_naming_the_dotted_path(overrides: dict[str, Any], field: str) -> None:
    fails_naming(minimal(**overrides), field)


def test_manager_cannot_come_from_another_attribute() -> None:
    error = fails_naming(minimal(mapping={"manager": {"from": "employeeId"}}), "tenants[0].mapping.manager.from")
    assert "manager" in str(error)


def test_manager_may_be_set_on_create_only() -> None:
    tenant = parse_config(minimal(mapping={"manager": {"from": "manager", "on": "create"}})).tenants[0]
    assert tenant.mapping["manager"] == FieldMapping(source="manager", on="create")


@pytest.mark.parametrize("name", ["Contoso", "contoso-ltd", "_contoso", "con toso", "", "x" * 64])
def test_tenant_name_must_be_lowercase_letters_digits_underscores(name: str) -> None:
    fails_naming(minimal(name=name), "tenants[0].name")


@pytest.mark.parametrize("name", ["contoso", "contoso_eu", "c2", "x" * 63])
def test_tenant_name_valid_formats_are_accepted(name: str) -> None:
    tenant = parse_config(minimal(name=name)).tenants[0]
    assert tenant.name == name
    assert re.fullmatch(r"entra_to_frankli__[a-z0-9_]+", tenant.dag_id)


def test_duplicate_tenant_name_breaks_the_later_entry_only() -> None:
    raw = {"tenants": [minimal_tenant(), other_tenant("fabrikam"), other_tenant("contoso", organisation="Other")]}
    config = parse_config(raw)
    assert [t.name for t in config.tenants] == ["contoso", "fabrikam"]
    assert config.errors == {
        "tenants[2]": "tenants[2].name: 'contoso' is already the name of tenants[0]; names must be unique"
    }
    assert config.tenant("contoso").target.organisation == "Contoso Ltd"


@pytest.mark.parametrize("tenants", [None, [], {"name": "contoso"}])
def test_tenants_must_be_a_non_empty_list(tenants: Any) -> None:
    fails_naming({"tenants": tenants}, "tenants")


@pytest.mark.parametrize("raw", [None, [], "tenants"])
def test_config_must_be_a_mapping_with_tenants(raw: Any) -> None:
    with pytest.raises(ConfigError):
        parse_config(raw)


def test_tenant_entry_must_be_a_mapping() -> None:
    fails_naming({"tenants": ["contoso"]}, "tenants[0]")


def _scim_tenant(**target: Any) -> dict[str, Any]:
    return {
        "tenants": [
            {
                "name": "contoso",
                "source": {"kind": "graph", "conn_id": "g"},
                "target": {"kind": "scim", "conn_id": "s", "organisation": "Contoso", **target},
            }
        ]
    }


def test_scim_target_takes_its_settings_and_drops_what_scim_cannot_hold() -> None:
    tenant = parse_config(_scim_tenant(concurrency=4, max_failure_share=0.1)).tenant("contoso")
    assert (tenant.target.kind, tenant.target.concurrency, tenant.target.max_failure_share) == ("scim", 4, 0.1)
    assert tenant.target.max_retry_after_seconds == 300  # Graph's cap
    assert "start_date" not in tenant.mapping and "department" in tenant.mapping


def test_scim_target_refuses_a_mapped_start_date_and_wild_settings() -> None:
    raw = _scim_tenant()
    raw["tenants"][0]["mapping"] = {"start_date": {"from": "employeeHireDate"}}
    message = fails_naming(raw, "tenants[0].mapping.start_date")
    assert "no attribute for start_date" in message and "tenants[0].target.start_date_attribute" in message
    fails_naming(_scim_tenant(concurrency=0), "tenants[0].target.concurrency")
    fails_naming(_scim_tenant(concurrency=65), "tenants[0].target.concurrency")
    database = _scim_tenant(concurrency=4)
    database["tenants"][0]["target"]["kind"] = "database"
    fails_naming(database, "tenants[0].target")  # SCIM settings mean nothing to a database


def test_scim_start_date_is_synced_only_into_a_named_extension_attribute() -> None:
    attribute = "urn:ietf:params:scim:schemas:extension:frankli:2.0:User:startDate"
    raw = _scim_tenant(start_date_attribute=attribute)
    raw["tenants"][0]["mapping"] = {"start_date": {"from": "employeeHireDate", "on": "create"}}
    tenant = parse_config(raw).tenant("contoso")
    assert tenant.target.start_date_attribute == attribute
    assert tenant.mapping["start_date"].on == "create"
    assert "start_date" in parse_config(_scim_tenant(start_date_attribute=attribute)).tenant("contoso").mapping
    for wrong in ("startDate", "urn:x", 'urn:ietf:params:scim "x":startDate', 7):
        message = fails_naming(_scim_tenant(start_date_attribute=wrong), "tenants[0].target.start_date_attribute")
        assert "/Schemas" in message


def test_csv_source_path_is_relative_to_the_config_file(tmp_path) -> None:
    raw = {
        "tenants": [
            {
                "name": "contoso",
                "source": {"kind": "csv", "path": "exports/users.csv"},
                "target": {"kind": "database", "conn_id": "f", "organisation": "Contoso"},
            }
        ]
    }
    config = parse_config(raw, base_dir=tmp_path)
    assert config.tenants[0].source.path == str(tmp_path / "exports" / "users.csv")
    assert config.tenants[0].source.full_resync_days == 7


# --- defect 7: a broken tenant breaks only itself -------------------------------------------------


def test_defect7_broken_tenant_is_left_out_and_the_others_load() -> None:
    raw = {"tenants": [minimal_tenant(), other_tenant("fabrikam", colour="blue"), other_tenant("tailspin")]}
    config = parse_config(raw)
    assert [t.name for t in config.tenants] == ["contoso", "tailspin"]
    assert list(config.errors) == ["fabrikam"]
    assert config.errors["fabrikam"].startswith("tenant 'fabrikam': tenants[1]: unknown key(s) ['colour']")
    assert config.names == ["contoso", "tailspin", "fabrikam"]


def test_defect7_broken_tenant_lookup_raises_its_error() -> None:
    config = parse_config(
        {"tenants": [minimal_tenant(), other_tenant("fabrikam", thresholds={"max_archive_share": 3})]}
    )
    with pytest.raises(ConfigError) as caught:
        config.tenant("fabrikam")
    assert str(caught.value) == config.errors["fabrikam"]
    assert "tenants[1].thresholds.max_archive_share" in str(caught.value)


def test_defect7_tenant_without_a_usable_name_is_keyed_by_its_index() -> None:
    raw = {"tenants": [other_tenant("Fabrikam EU"), minimal_tenant(), {"source": {"conn_id": "x"}}, "tailspin"]}
    config = parse_config(raw)
    assert [t.name for t in config.tenants] == ["contoso"]
    assert list(config.errors) == ["tenants[0]", "tenants[2]", "tenants[3]"]
    assert config.errors["tenants[0]"].startswith("tenants[0].name: 'Fabrikam EU' must be lower-case")
    assert config.errors["tenants[2]"].startswith("tenants[2].name: must be a non-empty string")
    assert config.errors["tenants[3]"] == "tenants[3]: must be a mapping, got str"
    assert config.names == ["contoso"]


def test_defect7_every_broken_tenant_is_in_one_message() -> None:
    raw = {
        "tenants": [
            minimal_tenant(),
            other_tenant("fabrikam", schedule="@daliy"),
            other_tenant("Tailspin"),
            other_tenant("wingtip", scope={"groups": "g1"}),
        ]
    }
    message = parse_config(raw, path=Path("/etc/frankli/tenants.yaml")).errors_message()
    assert message.splitlines()[0] == (
        "3 broken tenant(s) in /etc/frankli/tenants.yaml have no DAG until fixed (the 1 valid tenant(s) load):"
    )
    assert "- tenant 'fabrikam': tenants[1].schedule: '@daliy'" in message
    assert "- tenants[2].name: 'Tailspin'" in message
    assert "- tenant 'wingtip': tenants[3].scope.groups:" in message
    assert parse_config(minimal()).errors_message() == ""


def test_defect7_all_tenants_broken_is_still_a_config() -> None:
    config = parse_config(minimal(schedule="@hourl"))
    assert config.tenants == ()
    assert list(config.errors) == ["contoso"]


DUPLICATE_KEY_YAML = """\
tenants:
  - name: contoso
    source:
      kind: graph
      conn_id: msgraph_contoso
    target:
      kind: database
      conn_id: frankli_contoso
      organisation: Contoso Ltd
    scope:
      exclude_guests: true
      exclude_guests: false
"""


def test_defect7_duplicate_key_rejected_with_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, DUPLICATE_KEY_YAML))
    message = str(caught.value)
    assert "line 12: duplicate key 'exclude_guests' (first at line 11)" in message
    assert str(tmp_path / "tenants.yaml") in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "tenants: []\nreports_dir: a\ntenants: []\n", "line 3: duplicate key 'tenants' (first at line 1)", id="top"
        ),
        pytest.param(
            DESIGN_EXAMPLE.replace("{from: officeLocation, on: always}", "{from: officeLocation, from: city}"),
            "line 18: duplicate key 'from' (first at line 18)",
            id="flow-mapping",
        ),
        pytest.param(
            DESIGN_EXAMPLE.replace("  - name: contoso  ", "  - name: fabrikam\n    name: contoso"),
            "line 5: duplicate key 'name' (first at line 4)",
            id="tenant-name",
        ),
    ],
)
def test_defect7_duplicate_key_anywhere_fails_the_file(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("schedule", ["@daliy", "61 * * * *", "@reboot", "0 0 * * 8", "every day", "0 0 30 2 *"])
def test_defect7_schedule_typo_names_tenant(schedule: str) -> None:
    config = parse_config({"tenants": [minimal_tenant(), other_tenant("fabrikam", schedule=schedule)]})
    assert [t.name for t in config.tenants] == ["contoso"]
    message = config.errors["fabrikam"]
    assert message.startswith(f"tenant 'fabrikam': tenants[1].schedule: {schedule!r} is not an Airflow schedule")
    assert "null for manual runs only" in message


@pytest.mark.parametrize(
    "schedule",
    [
        "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@once", "@continuous",
        "@midnight", "0 3 * * *", "*/15 6-18 * * MON-FRI", "0 0 29 2 *", "0 0 L * *", "30 2 * * * 0", None,
    ],
)  # fmt: skip
def test_defect7_airflow_schedules_are_accepted(schedule: str | None) -> None:
    assert parse_config(minimal(schedule=schedule)).tenants[0].schedule == schedule


def billion_laughs() -> str:
    """A real billion-laughs document: nine levels of ten aliases, hidden in an allowed key (scope.groups)."""
    levels = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    groups = "\n".join(f"        - {level}" for level in levels)
    return DESIGN_EXAMPLE.replace("      groups: []", f"      groups:\n{groups}")


def test_defect7_alias_bomb_refused_fast(tmp_path: Path) -> None:
    text = billion_laughs()
    assert len(text) < 4000 and text.count("*l") == 90, "10**9 'lol's if expanded"
    with pytest.raises(ConfigError, match=r"line 16: YAML anchors and aliases .* are not allowed"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    "text",
    [
        DESIGN_EXAMPLE.replace("exclude_guests: true", "exclude_guests: &yes true\n      only_enabled: *yes"),
        DESIGN_EXAMPLE.replace("  - name: contoso ", "  - &t name: contoso "),
    ],
    ids=["alias", "anchor-alone"],
)
def test_defect7_any_anchor_or_alias_is_refused_naming_the_line(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"config file .*: line \d+: YAML anchors and aliases"):
        load_config(write(tmp_path, text))


def test_defect7_oversized_file_refused(tmp_path: Path) -> None:
    padding = "#" * 99 + "\n"
    text = DESIGN_EXAMPLE + padding * (MAX_CONFIG_BYTES // len(padding) + 1)
    assert len(text.encode()) > MAX_CONFIG_BYTES
    with pytest.raises(ConfigError, match=rf"bytes; the limit is {MAX_CONFIG_BYTES}"):
        load_config(write(tmp_path, text))
    assert load_config(write(tmp_path, DESIGN_EXAMPLE + padding * 100)).tenants[0].name == "contoso"


def test_defect7_deeply_nested_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(write(tmp_path, "tenants: " + "[" * 50_000))


def test_config_file_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path)


# --- defect 3: one Frankli organisation, one tenant -------------------------------------------------


def test_defect3_two_tenants_one_organisation_refused_naming_both() -> None:
    later = other_tenant("contoso_eu", source={"kind": "csv", "path": "eu.csv"})
    later["target"] = {"kind": "database", "conn_id": "frankli_contoso", "organisation": "  contoso LTD "}
    config = parse_config({"tenants": [minimal_tenant(), other_tenant("fabrikam"), later]})
    assert [t.name for t in config.tenants] == ["contoso", "fabrikam"]
    message = config.errors["contoso_eu"]
    assert message.startswith("tenant 'contoso_eu': tenants[2].target.organisation:")
    assert "tenant 'contoso' (tenants[0])" in message
    assert "'frankli_contoso'" in message and "'contoso LTD'" in message
    assert "each archive the other's users" in message and "its own organisation" in message


@pytest.mark.parametrize(
    "target",
    [
        {"kind": "database", "conn_id": "frankli_contoso", "organisation": "Contoso GmbH"},
        {"kind": "database", "conn_id": "frankli_contoso_eu", "organisation": "Contoso Ltd"},
    ],
    ids=["other-organisation", "other-connection"],
)
def test_defect3_other_organisation_or_connection_is_fine(target: dict[str, str]) -> None:
    config = parse_config({"tenants": [minimal_tenant(), other_tenant("contoso_eu", target=target)]})
    assert [t.name for t in config.tenants] == ["contoso", "contoso_eu"]
    assert config.errors == {}


def test_defect3_connection_ids_compare_case_insensitively() -> None:
    later = other_tenant("contoso_eu")
    later["target"] = {"kind": "database", "conn_id": "FRANKLI_CONTOSO", "organisation": "Contoso Ltd"}
    assert list(parse_config({"tenants": [minimal_tenant(), later]}).errors) == ["contoso_eu"]


def test_defect3_a_broken_earlier_tenant_keeps_its_organisation() -> None:
    # Fixing the earlier tenant must not move the organisation (and its users) to the other one.
    raw = {"tenants": [minimal_tenant(schedule="@daliy"), other_tenant("contoso_eu", organisation="Contoso Ltd")]}
    raw["tenants"][1]["target"]["conn_id"] = "frankli_contoso"
    config = parse_config(raw)
    assert config.tenants == ()
    assert "already synced by tenant 'contoso' (tenants[0])" in config.errors["contoso_eu"]


# --- source settings: retries and read completeness --------------------------------------------


def test_source_defaults_are_written_once() -> None:
    source = parse_config(minimal()).tenants[0].source
    assert source == SourceSettings(kind="graph", conn_id="msgraph_contoso")
    assert (source.page_size, source.full_resync_days) == (999, 7)
    assert (source.max_retry_after_seconds, source.max_retry_seconds) == (300, 1800)
    assert (source.count_tolerance_share, source.count_tolerance_users) == (0.01, 5)


def test_source_retry_and_count_settings_are_read() -> None:
    source = {
        "conn_id": "g",
        "max_retry_after_seconds": 60,
        "max_retry_seconds": 600,
        "count_tolerance_share": 0,
        "count_tolerance_users": 0,
    }
    parsed = parse_config(minimal(source=source)).tenants[0].source
    assert (parsed.max_retry_after_seconds, parsed.max_retry_seconds) == (60, 600)
    assert (parsed.count_tolerance_share, parsed.count_tolerance_users) == (0.0, 0)


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"max_retry_after_seconds": 0}, "max_retry_after_seconds"),
        ({"max_retry_after_seconds": "300"}, "max_retry_after_seconds"),
        ({"max_retry_after_seconds": 2.5}, "max_retry_after_seconds"),
        ({"max_retry_after_seconds": True}, "max_retry_after_seconds"),
        ({"max_retry_seconds": 0}, "max_retry_seconds"),
        ({"max_retry_seconds": None}, "max_retry_seconds"),
        ({"max_retry_after_seconds": 900, "max_retry_seconds": 600}, "max_retry_after_seconds"),
        ({"count_tolerance_share": 1.5}, "count_tolerance_share"),
        ({"count_tolerance_share": -0.01}, "count_tolerance_share"),
        ({"count_tolerance_share": "1%"}, "count_tolerance_share"),
        ({"count_tolerance_users": -1}, "count_tolerance_users"),
        ({"count_tolerance_users": 0.5}, "count_tolerance_users"),
        ({"max_retries": 3}, ""),
    ],
)
def test_source_retry_and_count_settings_are_checked(source: dict[str, Any], field: str) -> None:
    path = f"tenants[0].source.{field}" if field else "tenants[0].source"
    fails_naming(minimal(source={"conn_id": "g", **source}), path)


@pytest.mark.parametrize(
    ("share", "users", "reported", "tolerance"),
    [(0.01, 5, 100, 5), (0.01, 5, 10_000, 100), (0.29, 0, 100, 29), (0.0, 0, 10, 0), (1.0, 0, 7, 7)],
)
def test_source_count_tolerance(share: float, users: int, reported: int, tolerance: int) -> None:
    source = SourceSettings(conn_id="g", count_tolerance_share=share, count_tolerance_users=users)
    assert source.count_tolerance(reported) == tolerance


# --- Entra expressions and scoping filters (issue 14) ---------------------------------------------


def test_an_expression_mapping_is_read_beside_from_with_its_on() -> None:
    text = 'Join(" ", [givenName], [surname])'
    tenant = parse_config(minimal(mapping={"first_name": {"expression": text, "on": "create"}})).tenants[0]
    assert tenant.mapping["first_name"] == FieldMapping(source=None, on="create", expression=text)
    assert tenant.mapping["first_name"].column is None
    assert tenant.mapping["first_name"].attributes == {"givenName", "surname"}
    assert tenant.mapping["last_name"] == FieldMapping(source="surname", on="always")


@pytest.mark.parametrize(
    ("item", "field", "message"),
    [
        ({"expression": 'Join(" ", [givenName], [surnam])'}, "tenants[0].mapping.first_name.expression",
         "[surnam] is not an Entra attribute the sync reads"),
        ({"expression": 'Jion(" ", [givenName])'}, "tenants[0].mapping.first_name.expression",
         "Jion is not an Entra expression function (at character 1)"),
        ({"expression": "Left([givenName])"}, "tenants[0].mapping.first_name.expression",
         "Left takes 2 arguments, not 1"),
        ({"expression": "Guid()"}, "tenants[0].mapping.first_name.expression",
         "Guid is not supported here: it makes a new random value on every run"),
        ({"expression": 'Join(" ", [givenName]'}, "tenants[0].mapping.first_name.expression", "ends early"),
        ({"expression": "[givenName]", "from": "givenName"}, "tenants[0].mapping.first_name",
         "either 'from' (one attribute) or 'expression'"),
        ({"expression": 3}, "tenants[0].mapping.first_name.expression", "must be a non-empty string"),
    ],
)  # fmt: skip
def test_an_expression_entra_would_refuse_breaks_the_tenant_naming_field_and_position(
    item: dict[str, Any], field: str, message: str
) -> None:
    error = fails_naming(minimal(mapping={"first_name": item}), field)
    assert message in error, error


def test_the_manager_cannot_come_from_an_expression() -> None:
    error = fails_naming(
        minimal(mapping={"manager": {"expression": "[manager]"}}), "tenants[0].mapping.manager.expression"
    )
    assert "can only come from 'manager'" in error


def test_scoping_filters_are_read_and_their_mistakes_name_the_clause() -> None:
    filters = [[{"attribute": "department", "operator": "EQUALS", "value": "Sales"}]]
    tenant = parse_config(minimal(scope={"filters": filters})).tenants[0]
    assert len(tenant.scope.filters) == 1 and tenant.scope.filters[0].clauses[0].attribute == "department"
    bad = [[{"attribute": "department", "operator": "LIKE", "value": "Sales"}]]
    error = fails_naming(minimal(scope={"filters": bad}), "tenants[0].scope.filters[0][0].operator")
    assert "EQUALS" in error
