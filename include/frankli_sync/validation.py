"""Data-quality gate for staged Entra users, as a Great Expectations (GX Core) suite.

Every staged user is checked before anything is sent to Frankli. A row that fails a
*critical* rule is quarantined (it would create a broken or duplicate employee in the HR
system); a row that fails a *warning* rule is still synced but reported, because HR can
live with e.g. a missing department for a while.

GX does the checking and, on request, renders Data Docs an HR admin can browse. This
module only prepares the frame (normalisation and helper columns GX needs), declares the
rules and maps GX's per-row results back to plain-language reasons.

GX is imported inside the functions that use it: importing it takes seconds, and DAG
files import this module while Airflow parses them.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from frankli_sync import text_columns
from frankli_sync.entra import NUL, NUL_MARK, STAGED_COLUMNS
from frankli_sync.transform import email_key

DEFAULT_REQUIRED_FIELDS: tuple[str, ...] = ("user_principal_name", "mail", "given_name", "surname")
DEFAULT_WARN_FIELDS: tuple[str, ...] = ("department", "manager_id")

CRITICAL = "critical"
WARNING = "warning"

SUITE_NAME = "frankli_staged_users"
DOCS_SITE_NAME = "frankli_validation"

# An address (UPN or mail), as GX sees it: HTML-escaped (see `_escaped`), so the two atext
# characters html.escape rewrites, & and ', arrive as "&amp;" and "&#x27;" and count as one
# character each. Python `re` (GX's pandas engine): \w is Unicode letters, digits and "_".
#   local part: a dot-atom of RFC 5322 atext (letters incl. Unicode, digits, !#$%&'*+/=?^_`{|}~-),
#               no leading, trailing or double dot, at most 64 characters;
#   domain:     dot-separated labels of letters (incl. Unicode, for IDN), digits and inner
#               hyphens, ending in a TLD of 2+ letters or punycode xn--…;
#   whole:      at most 254 characters. `is_address` applies it to a raw value.
_ESCAPED_CHAR = r"&amp;|&#x27;"
_ATEXT = rf"(?:[\w!#$%*+/=?^`{{|}}~-]|{_ESCAPED_CHAR})"
_ATOM = rf"{_ATEXT}+"
_LABEL = r"[^\W_](?:(?:[^\W_]|-)*[^\W_])?"
_TLD = r"(?:[^\W\d_]{2,}|[xX][nN]--[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*)"
EMAIL_REGEX = (
    rf"^(?=(?:{_ESCAPED_CHAR}|[^&@]){{1,64}}@)"  # local part length
    rf"(?=(?:{_ESCAPED_CHAR}|[^&]){{1,254}}\Z)"  # whole length
    rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+{_TLD}\Z"
)
_EMAIL = re.compile(EMAIL_REGEX)

# Helper columns added to the validated copy. Staged columns never start with "_".
ROW = "_row"
_UPN_LOWER = "_upn_lower"
_MAIL_LOWER = "_mail_lower"
_FITS = "_fits_"  # + staged column: True when the value can be stored in Frankli, None when missing

# How much of a too-long value a reason quotes (enough to find the user, not the whole value).
_REASON_PREFIX_CHARS = 40

# Columns every suite reads, whatever the settings say.
_ALWAYS_CHECKED: tuple[str, ...] = ("object_id", "user_principal_name", "mail", "account_enabled")

OUTCOME_COLUMNS: tuple[str, ...] = ("object_id", "user_principal_name", "reasons")


@dataclass(frozen=True)
class ValidationSettings:
    """Which staged columns must be present (quarantine) and which should be (warning).

    ``max_lengths``: staged column -> the most characters the Frankli column it feeds can
    hold. A value that is longer (after trimming) or contains a NUL character is
    quarantined: PostgreSQL rejects both (failing the whole load) while SQLite stores
    them, so only the gate can make both backends behave the same. Empty: no such checks.
    """

    required_fields: tuple[str, ...] = DEFAULT_REQUIRED_FIELDS
    warn_fields: tuple[str, ...] = DEFAULT_WARN_FIELDS
    # Not hashed: a dict is not hashable, and equal settings still hash equal without it.
    max_lengths: Mapping[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Settings usually come from tenant config files: accept lists, reject typos early
        # (a misspelt field would otherwise silently check nothing).
        for name in ("required_fields", "warn_fields"):
            value = getattr(self, name)
            fields_ = (value,) if isinstance(value, str) else tuple(value)
            _reject_unknown_columns(name, fields_)
            object.__setattr__(self, name, fields_)
        if not isinstance(self.max_lengths, Mapping):
            raise ValueError(f"max_lengths: must map staging columns to lengths, got {type(self.max_lengths).__name__}")
        lengths = dict(self.max_lengths)  # a copy: the caller's dict may change later
        _reject_unknown_columns("max_lengths", lengths)
        bad = {c: n for c, n in lengths.items() if isinstance(n, bool) or not isinstance(n, int) or n < 1}
        if bad:
            raise ValueError(
                "max_lengths: lengths must be positive whole numbers of characters, got "
                + ", ".join(f"{column}={length!r}" for column, length in bad.items())
            )
        object.__setattr__(self, "max_lengths", lengths)


def _reject_unknown_columns(name: str, columns: Iterable[Any]) -> None:
    unknown = [c for c in columns if c not in STAGED_COLUMNS]
    if unknown:
        raise ValueError(
            f"{name}: unknown staging column(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {', '.join(STAGED_COLUMNS)}"
        )


DEFAULT_SETTINGS = ValidationSettings()


@dataclass
class ValidationOutcome:
    """What the gate decided.

    ``quarantined`` and ``warnings`` have one row per affected user, indexed by the label
    the user had in the frame passed to :func:`validate_users` (so ``users.drop(
    outcome.quarantined.index)`` keeps the clean rows even when object ids are missing or
    duplicated), with columns ``object_id``, ``user_principal_name`` and ``reasons``.
    """

    checked: int
    quarantined: pd.DataFrame
    warnings: pd.DataFrame
    statistics: dict[str, dict[str, Any]] = field(default_factory=dict)
    docs_index: Path | None = None

    @property
    def failed_share(self) -> float:
        return len(self.quarantined) / self.checked if self.checked else 0.0


@dataclass(frozen=True)
class Check:
    """One rule of the suite, in the terms the reasons are reported in.

    ``kind`` picks the GX expectation; ``column`` is the (possibly helper) column GX
    checks; ``shown`` the column whose value a reason reports (None: the value is missing).
    ``max_length`` is the limit of a ``fits`` check.
    """

    name: str
    severity: str
    kind: str
    column: str
    shown: str | None
    description: str
    column_b: str | None = None
    max_length: int | None = None


def plan_checks(settings: ValidationSettings = DEFAULT_SETTINGS) -> list[Check]:
    """The suite's rules, in the order reasons are listed."""
    checks = [_required(column) for column in _required_columns(settings)]
    checks += [
        Check(
            "unique_object_id",
            CRITICAL,
            "unique",
            "object_id",
            "object_id",
            "Each user must have their own Entra object id; all users sharing one are held back.",
        ),
        Check(
            "unique_upn",
            CRITICAL,
            "unique",
            _UPN_LOWER,
            "user_principal_name",
            "Each user principal name (sign-in name) must be unique, ignoring the case of A-Z only.",
        ),
        Check(
            "upn_format",
            CRITICAL,
            "regex",
            "user_principal_name",
            "user_principal_name",
            "The user principal name must be a valid e-mail address (RFC 5322 dot-atom @ domain).",
        ),
        Check(
            "mail_format",
            CRITICAL,
            "regex",
            "mail",
            "mail",
            "The e-mail address must be a valid e-mail address (RFC 5322 dot-atom @ domain).",
        ),
        Check(
            "upn_equals_mail",
            CRITICAL,
            "pair_equal",
            _UPN_LOWER,
            None,
            "The e-mail address must be the same as the user principal name (ignoring the case of A-Z); "
            "guests and mismatched mailboxes are held back.",
            column_b=_MAIL_LOWER,
        ),
        Check(
            "account_enabled_boolean",
            CRITICAL,
            "in_set",
            "account_enabled",
            "account_enabled",
            "'Account enabled' must be true or false.",
        ),
    ]
    checks += [
        Check(
            f"fits_frankli:{column}",
            CRITICAL,
            "fits",
            _FITS + column,
            column,
            f"{column} must fit its Frankli field: at most {length} characters and no NUL character.",
            max_length=length,
        )
        for column, length in settings.max_lengths.items()
    ]
    required = set(_required_columns(settings))
    # A field that is both required and recommended is already covered by the critical rule.
    checks += [
        Check(
            f"recommended:{column}",
            WARNING,
            "not_null",
            column,
            None,
            f"{column} should be filled in; the user is still synced without it.",
        )
        for column in dict.fromkeys(settings.warn_fields)
        if column not in required
    ]
    return checks


def validate_users(
    users: pd.DataFrame,
    settings: ValidationSettings = DEFAULT_SETTINGS,
    docs_dir: Path | None = None,
    run_name: str | None = None,
    engine: str = "gx",
) -> ValidationOutcome:
    """Validate staged users with GX and split the failures into quarantine and warnings.

    ``docs_dir``: when given, Data Docs for this run are written there and the outcome
    carries the path of their ``index.html``. ``run_name`` labels the run in the docs.
    ``engine="pandas"``: the same suite evaluated by `evaluate_in_pandas` (no GX context,
    no Data Docs), for the few rows of an incremental run; its verdicts are GX's
    (tests/unit/test_validation_engines.py).
    """
    if not isinstance(users, pd.DataFrame):
        raise ValueError(f"users must be a pandas DataFrame, got {type(users).__name__}")
    checks = plan_checks(settings)
    columns = checked_columns(settings)
    missing = [column for column in columns if column not in users.columns]
    if missing:
        raise ValueError(f"users is missing staging column(s): {', '.join(missing)}")
    duplicated = [column for column in columns if list(users.columns).count(column) > 1]
    if duplicated:
        raise ValueError(f"users has duplicate column(s): {', '.join(duplicated)}")

    # An empty frame goes through GX too: one code path, and the docs record the empty run.
    frame = prepare(users, columns, settings.max_lengths)
    if engine == "pandas":
        failures, docs_index = evaluate_in_pandas(_escaped(frame), checks), None
    else:
        failures, docs_index = _run_gx(_escaped(frame), checks, docs_dir, run_name)
    return ValidationOutcome(
        checked=len(frame),
        quarantined=_collect(frame, users.index, checks, failures, CRITICAL),
        warnings=_collect(frame, users.index, checks, failures, WARNING),
        statistics={check.name: _statistic(check, len(failures[check.name])) for check in checks},
        docs_index=docs_index,
    )


def checked_columns(settings: ValidationSettings = DEFAULT_SETTINGS) -> list[str]:
    """The staged columns the suite reads (and therefore requires in its input)."""
    return list(
        dict.fromkeys((*_ALWAYS_CHECKED, *settings.required_fields, *settings.warn_fields, *settings.max_lengths))
    )


def prepare(users: pd.DataFrame, columns: Iterable[str], max_lengths: Mapping[str, int] | None = None) -> pd.DataFrame:
    """The normalised copy GX validates: only the checked columns plus helper columns.

    Text is stripped and blank text becomes missing, so "  " fails a required-field rule
    like an absent value does. The copy has a positional index and a ``_row`` column that
    GX reports failing rows by. For each column of ``max_lengths`` (which must be among
    ``columns``) a ``_fits_<column>`` column says whether the value can be stored.
    """
    frame = pd.DataFrame(index=pd.RangeIndex(len(users)))
    for column in columns:
        values = users[column].reset_index(drop=True)
        frame[column] = _strict_bool(values) if column == "account_enabled" else _clean_text(values)
    for column in ("user_principal_name", "mail"):
        # Addresses compare in NFC (DESIGN §2): a decomposed é is the same address, and a valid one.
        frame[column] = _nfc(frame[column])
    frame[ROW] = np.arange(len(frame), dtype="int64")
    # GX's uniqueness and pair-equality checks compare exactly; addresses are equal by their email key
    # (A-Z lower-cased only: ß ≠ ss), the key the plan matches Frankli users by.
    frame[_UPN_LOWER] = _as_text(email_key(frame["user_principal_name"]))
    frame[_MAIL_LOWER] = _as_text(email_key(frame["mail"]))
    # Measured here, on the unescaped values: the copy GX sees is HTML-escaped ("&" -> "&amp;").
    for column, length in (max_lengths or {}).items():
        frame[_FITS + column] = text_columns.fits(
            frame[column], length, (NUL, NUL_MARK), lambda v, n=length: None if _is_missing(v) else _fits(str(v), n)
        )
    return frame


def is_address(value: str) -> bool:
    """Whether `value` (trimmed, NFC) passes the ``upn_format`` / ``mail_format`` rule."""
    return _EMAIL.search(html.escape(value)) is not None


def _as_text(values: pd.Series) -> pd.Series:
    # The str dtype of the other text columns (missing: NaN), so GX treats the helpers alike.
    return values.astype("str")


def _fits(text: str, max_length: int) -> bool:
    return len(text) <= max_length and NUL not in text and NUL_MARK not in text


def _escaped(frame: pd.DataFrame) -> pd.DataFrame:
    """The copy GX sees, with every text value HTML-escaped.

    GX writes unexpected values into Data Docs without escaping them, and the values come
    from Entra (untrusted). Escaping is injective and never adds "@", "." or white space,
    so equality, uniqueness and the address formats give the same verdicts; the reasons
    this module reports are read from the unescaped frame.
    """
    escaped = frame.copy()
    for column in escaped.columns:
        if column not in (ROW, "account_enabled"):
            escaped[column] = text_columns.html_escaped(escaped[column])
    return escaped


def _nfc(values: pd.Series) -> pd.Series:
    """Text in NFC (ASCII text already is, and is returned as it was); other values unchanged."""
    return text_columns.normalized_nfc(values, lambda v: unicodedata.normalize("NFC", v) if isinstance(v, str) else v)


def _clean_text(values: pd.Series) -> pd.Series:
    text = values.astype("str").str.strip()  # missing values stay missing
    return text.mask(text == "")


def _strict_bool(values: pd.Series) -> pd.Series:
    """True/False stay booleans, blanks become None, anything else becomes its text.

    GX's value-set check uses ``isin``, which treats 1 and 0 as True and False; turning
    non-booleans into text makes them fail the check instead of slipping through.
    """
    if pd.api.types.is_bool_dtype(values.dtype) and not values.hasnans:
        return values.astype(object)

    def coerce(value: Any) -> Any:
        if isinstance(value, bool | np.bool_):
            return bool(value)
        if _is_missing(value):
            return None
        text = str(value).strip()
        return text or None

    return values.astype(object).map(coerce).astype(object)


def _is_missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _required(column: str) -> Check:
    return Check(
        f"required:{column}",
        CRITICAL,
        "not_null",
        column,
        None,
        f"{column} must be filled in.",
    )


def _required_columns(settings: ValidationSettings) -> list[str]:
    # object_id, UPN and account_enabled are needed to create a Frankli user at all, so
    # they are required whatever the tenant configures.
    return list(dict.fromkeys(("object_id", "user_principal_name", *settings.required_fields, "account_enabled")))


def _statistic(check: Check, unexpected_count: int) -> dict[str, Any]:
    return {"expectation": check.name, "severity": check.severity, "unexpected_count": unexpected_count}


# --- the suite without GX ----------------------------------------------------------------


def evaluate_in_pandas(frame: pd.DataFrame, checks: list[Check]) -> dict[str, np.ndarray]:
    """The failing ``_row`` numbers per check, as GX's pandas engine finds them, in vectorised pandas.

    GX's column-map expectations skip missing values (the required-field rules own them);
    uniqueness fails every row of a repeated value; the regex is searched (it is anchored);
    the value set compares with ``isin`` after `_strict_bool`; pairs with a missing side are
    ignored.
    """
    failures: dict[str, np.ndarray] = {}
    rows = frame[ROW].to_numpy()
    for check in checks:
        values = frame[check.column]
        present = values.notna().to_numpy()
        if check.kind == "not_null":
            bad = ~present
        elif check.kind == "unique":
            bad = present & values.duplicated(keep=False).to_numpy()
        elif check.kind == "regex":
            bad = present & ~values.astype(str).str.contains(_EMAIL, regex=True).to_numpy(dtype=bool)
        elif check.kind == "in_set":
            bad = present & ~values.map(lambda v: isinstance(v, bool)).to_numpy(dtype=bool)
        elif check.kind == "fits":
            bad = present & ~values.map(lambda v: v is True).to_numpy(dtype=bool)
        elif check.kind == "pair_equal":
            other = frame[check.column_b]
            both = present & other.notna().to_numpy()
            bad = both & (values.astype(object).to_numpy() != other.astype(object).to_numpy())
        else:
            raise ValueError(f"unknown check kind {check.kind!r}")
        failures[check.name] = np.unique(rows[bad]).astype("int64")
    return failures


# --- GX -------------------------------------------------------------------------------


def _run_gx(
    frame: pd.DataFrame, checks: list[Check], docs_dir: Path | None, run_name: str | None
) -> tuple[dict[str, np.ndarray], Path | None]:
    """Run the suite over ``frame``; return the failing ``_row`` numbers per check name."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    context = _ephemeral_context()
    batch_definition = (
        context.data_sources.add_pandas("staging")
        .add_dataframe_asset("staged_users")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME))
    for check in checks:
        suite.add_expectation(_expectation(check))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{SUITE_NAME}_definition", data=batch_definition, suite=suite)
    )

    actions = []
    if docs_dir is not None:
        docs_dir = Path(docs_dir)
        context.add_data_docs_site(
            site_name=DOCS_SITE_NAME,
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
            },
        )
        # The action renders this run's validation result and rebuilds the site index.
        actions.append(UpdateDataDocsAction(name="update_data_docs", site_names=[DOCS_SITE_NAME]))

    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{SUITE_NAME}_checkpoint",
            validation_definitions=[definition],
            actions=actions,
            # COMPLETE + an index column: GX lists every failing row by its `_row` number.
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [ROW]},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name))

    by_name = {check.name: check for check in checks}
    failures: dict[str, np.ndarray] = {}
    for validation in result.run_results.values():
        for expectation_result in validation.results:
            name = expectation_result.expectation_config.meta["check"]
            failures[name] = _failing_rows(name, expectation_result)
    missing = set(by_name) - set(failures)
    if missing:
        raise RuntimeError(f"GX returned no result for check(s): {', '.join(sorted(missing))}")

    docs_index = docs_dir / "index.html" if docs_dir is not None else None
    return failures, docs_index


def _ephemeral_context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # In-memory stores, no default temp docs site (the action would build it too), no
    # analytics and no progress bars: tqdm output would flood the Airflow task log.
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _expectation(check: Check) -> Any:
    import great_expectations.expectations as gxe

    common: dict[str, Any] = {
        "severity": check.severity,
        "meta": {"check": check.name},
        "description": f"{check.name}: {check.description}",
    }
    if check.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=check.column, **common)
    if check.kind == "unique":
        return gxe.ExpectColumnValuesToBeUnique(column=check.column, **common)
    if check.kind == "regex":
        return gxe.ExpectColumnValuesToMatchRegex(column=check.column, regex=EMAIL_REGEX, **common)
    if check.kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(column=check.column, value_set=[True, False], **common)
    if check.kind == "fits":
        # Missing values (None in the helper column) are skipped: required-field rules own them.
        return gxe.ExpectColumnValuesToBeInSet(column=check.column, value_set=[True], **common)
    if check.kind == "pair_equal":
        # Rows with a missing side are left to the required-field rules, so a missing
        # mail is reported once, as "required:mail", not also as a mismatch.
        return gxe.ExpectColumnPairValuesToBeEqual(
            column_A=check.column,
            column_B=check.column_b,
            ignore_row_if="either_value_is_missing",
            **common,
        )
    raise ValueError(f"unknown check kind {check.kind!r}")


def _failing_rows(name: str, expectation_result: Any) -> np.ndarray:
    # A metric that crashed makes the expectation "fail" without listing rows; treating
    # that as "no bad rows" would let everything through, so stop instead.
    errors = list(_raised_exceptions(expectation_result.exception_info))
    if errors:
        raise RuntimeError(f"GX could not evaluate {name}: {errors[0]}")
    result = expectation_result.result
    rows = np.array([item[ROW] for item in result.get("unexpected_index_list") or []], dtype="int64")
    expected = int(result.get("unexpected_count") or 0)
    if len(rows) != expected:
        raise RuntimeError(f"GX listed {len(rows)} failing rows for {name} but counted {expected}")
    return np.unique(rows)


def _raised_exceptions(info: dict | None) -> Iterator[str]:
    """Exception messages in GX's exception_info (flat, or keyed by metric id)."""
    if not info:
        return
    if info.get("raised_exception"):
        yield str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            yield str(value.get("exception_message"))


# --- results -> outcome frames --------------------------------------------------------


def _collect(
    frame: pd.DataFrame,
    labels: pd.Index,
    checks: list[Check],
    failures: dict[str, np.ndarray],
    severity: str,
) -> pd.DataFrame:
    """One row per user failing a check of ``severity``, reasons in suite order."""
    reasons: dict[int, list[dict[str, Any]]] = {}
    for check in checks:
        if check.severity != severity:
            continue
        rows = failures[check.name]
        for row, value in zip(rows.tolist(), _reason_values(frame, check, rows), strict=True):
            reasons.setdefault(row, []).append(
                {"expectation": check.name, "column": _reported_column(check), "value": value, "severity": severity}
            )
    if not reasons:
        return _empty_outcome_frame()
    rows = np.array(sorted(reasons), dtype="int64")
    index = labels[rows]
    # object dtype keeps missing ids as None (pandas would infer str dtype and use NaN).
    return pd.DataFrame(
        {
            "object_id": pd.Series(_texts(frame["object_id"].to_numpy(dtype=object)[rows]), index, object),
            "user_principal_name": pd.Series(
                _texts(frame["user_principal_name"].to_numpy(dtype=object)[rows]), index, object
            ),
            "reasons": pd.Series([reasons[row] for row in rows.tolist()], index, object),
        }
    )


def _reason_values(frame: pd.DataFrame, check: Check, rows: np.ndarray) -> list[str | None]:
    if check.kind == "pair_equal":
        upns = frame["user_principal_name"].to_numpy(dtype=object)[rows]
        mails = frame["mail"].to_numpy(dtype=object)[rows]
        return [f"UPN {upn} ≠ mail {mail}" for upn, mail in zip(upns, mails, strict=True)]
    if check.kind == "fits":
        values = frame[check.shown].to_numpy(dtype=object)[rows]
        return [_unfit_reason(str(value), check.max_length or 0) for value in values]
    if check.shown is None:
        return [None] * len(rows)
    return _texts(frame[check.shown].to_numpy(dtype=object)[rows])


def _unfit_reason(text: str, max_length: int) -> str:
    """Why a value cannot be stored, with the start of it (NULs shown as ␀), not all of it."""
    problems = []
    if len(text) > max_length:
        problems.append(f"{len(text)} characters; Frankli holds at most {max_length}")
    if NUL in text or NUL_MARK in text:  # staging records NUL as ␀
        problems.append("contains a NUL character")
    start = text[:_REASON_PREFIX_CHARS].replace(NUL, NUL_MARK)
    ellipsis = "…" if len(text) > _REASON_PREFIX_CHARS else ""
    return f'{"; ".join(problems)}: "{start}{ellipsis}"'


def _reported_column(check: Check) -> str:
    """The staged column a reason is about (helper columns are an implementation detail)."""
    if check.kind == "pair_equal":
        return "mail"  # the mailbox attribute is what HR asks IT to correct
    if check.kind == "fits":
        return check.shown or check.column
    return {
        _UPN_LOWER: "user_principal_name",
        _MAIL_LOWER: "mail",
    }.get(check.column, check.column)


def _texts(values: Iterable[Any]) -> list[str | None]:
    # Reasons end up in JSON (XCom, the quarantine table): plain str or None only.
    return [None if _is_missing(value) else str(value) for value in values]


def _empty_outcome_frame() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in OUTCOME_COLUMNS})
