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
    ConfigError,
    FieldMapping,
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


def minimal(**tenant_overrides: Any) -> dict[str, Any]:
    return {"tenants": [minimal_tenant(**tenant_overrides)]}


def write(tmp_path: Path, text: str, name: str = "tenants.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def fails_naming(raw: Any, field: str) -> ConfigError:
    """Parse `raw`, expect a ConfigError whose message starts with the dotted path `field`."""
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    message = str(caught.value)
    assert message.startswith(f"{field}:"), f"expected the error to name {field!r}, got: {message}"
    return caught.value


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
    config = parse_config({"tenants": [minimal_tenant(), minimal_tenant(name="fabrikam")]})
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
    error = fails_naming(raw, field)
    assert "unknown key" in str(error)


def test_unknown_key_in_second_tenant_names_its_index() -> None:
    raw = {"tenants": [minimal_tenant(), minimal_tenant(name="fabrikam", colour="blue")]}
    assert "colour" in str(fails_naming(raw, "tenants[1]"))


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


def test_duplicate_tenant_names_fail() -> None:
    raw = {"tenants": [minimal_tenant(), minimal_tenant(name="fabrikam"), minimal_tenant()]}
    with pytest.raises(ConfigError, match=r"^tenants: duplicate tenant names \['contoso'\]"):
        parse_config(raw)


@pytest.mark.parametrize("tenants", [None, [], {"name": "contoso"}])
def test_tenants_must_be_a_non_empty_list(tenants: Any) -> None:
    fails_naming({"tenants": tenants}, "tenants")


@pytest.mark.parametrize("raw", [None, [], "tenants"])
def test_config_must_be_a_mapping_with_tenants(raw: Any) -> None:
    with pytest.raises(ConfigError):
        parse_config(raw)


def test_tenant_entry_must_be_a_mapping() -> None:
    fails_naming({"tenants": ["contoso"]}, "tenants[0]")


def test_scim_target_is_refused_until_it_exists() -> None:
    raw = {
        "tenants": [
            {
                "name": "contoso",
                "source": {"kind": "graph", "conn_id": "g"},
                "target": {"kind": "scim", "conn_id": "s", "organisation": "Contoso"},
            }
        ]
    }
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.target\.kind: 'scim'.*not implemented"):
        parse_config(raw)


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
