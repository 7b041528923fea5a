"""The DSS log parser: envelopes, mapping, skipping, batches, quarantine and record ids."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ingest.parser import RAW_LIMIT, LineParser, ParseResult
from ingest.record_id import record_id
from service.errors import ConfigError, InputError
from storage.schemas import PREDICTIONS, QUARANTINE
from tests.ingest.lines import (
    DEFAULT_TS,
    DROP,
    lines_table,
    make_batch_message,
    make_line,
    make_message,
    make_query_line,
)

SAMPLES = Path("/work/shared/samples")
INGESTED = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PARSER = LineParser()


def parse(lines: list[bytes], parser: LineParser = PARSER, **table_args: Any) -> ParseResult:
    result = parser.parse(lines_table(lines, **table_args), ingested_at=INGESTED)
    assert result.predictions.schema == PREDICTIONS
    assert result.quarantine.schema == QUARANTINE
    assert result.predictions.num_rows == result.records
    assert result.quarantine.num_rows == result.quarantined
    return result


def only_row(result: ParseResult) -> dict[str, Any]:
    assert result.records == 1, result.quarantine.to_pylist()
    row: dict[str, Any] = result.predictions.to_pylist()[0]
    return row


def reasons(result: ParseResult) -> list[str]:
    return [r["reason"] for r in result.quarantine.to_pylist()]


def extra(row: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(row["extra"])
    return value


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- the sample files -------------------------------------------------------------------------


def test_sample_queries_log_path_a() -> None:
    data = (SAMPLES / "queries.log").read_bytes().splitlines(keepends=True)
    result = parse(data, source="run/api-queries/queries.log")
    assert (result.lines, result.records, result.skipped, result.quarantined) == (3, 2, 0, 1)
    first, second = result.predictions.to_pylist()
    assert first == {
        "record_id": record_id(data[0]),
        "ts": utc(2026, 3, 2, 9, 15, 4, 112000),
        "day": date(2026, 3, 2),
        "service_id": "churn",
        "endpoint_id": "predict",
        "generation": "v4",
        "msg_type": "prediction-query",
        "features": '{"customer_id":"C-1001","tenure_months":14,"plan":"pro","monthly_spend":49.9}',
        "context": '{"customer_id":"C-1001"}',
        "prediction": "churn",
        "prediction_value": None,
        "probas": [("churn", 0.71), ("stay", 0.29)],
        "proba_percentile": 88,
        "ignored": False,
        "ignore_reason": None,
        "timing": '{"preProcessing":91,"wait":12,"enrich":0,"preparation":5,'
        '"prediction":18211,"postProcessing":14}',
        "extra": '{"format":"A","envelope":{"logger":"dku.apinode.audit.queries","severity":"INFO"}}',
        "source": "run/api-queries/queries.log",
        "source_position": 0,
        "ingested_at": INGESTED,
    }
    assert second == {
        **first,
        "record_id": record_id(data[1]),
        "ts": utc(2026, 3, 2, 9, 15, 5, 20000),
        "features": '{"customer_id":"C-1002","tenure_months":2,"plan":"free","monthly_spend":0}',
        "context": '{"customer_id":"C-1002"}',
        "prediction": None,
        "probas": None,
        "proba_percentile": None,
        "ignored": True,
        "ignore_reason": "IGNORED_BY_MODEL",
        "timing": '{"prediction":901}',
        "source_position": len(data[0]),
    }
    assert result.quarantine.to_pylist() == [
        {
            "source": "run/api-queries/queries.log",
            "source_position": len(data[0]) + len(data[1]),
            "reason": "not valid JSON (envelope A whose message is not JSON)",
            "raw": data[2].decode().rstrip("\n"),
            "raw_bytes": len(data[2]),
            "ingested_at": INGESTED,
            "day": date(2026, 11, 26),
        }
    ]


def test_sample_audit_log_path_b() -> None:
    data = (SAMPLES / "audit.log").read_bytes().splitlines(keepends=True)
    result = parse(data, source="run/audit/audit.log")
    assert (result.lines, result.records, result.skipped, result.quarantined) == (3, 3, 1, 0)
    regression, stay, churn = result.predictions.to_pylist()
    assert regression == {
        "record_id": record_id(data[0]),
        "ts": utc(2026, 3, 2, 9, 15, 4, 112000),
        "day": date(2026, 3, 2),
        "service_id": "price",
        "endpoint_id": "estimate",
        "generation": "v1",
        "msg_type": "prediction-query",
        "features": '{"sqft":820,"rooms":3,"city":"Lyon"}',
        "context": '{"listing_id":"L-77"}',
        "prediction": "231500.0",
        "prediction_value": 231500.0,
        "probas": None,
        "proba_percentile": None,
        "ignored": False,
        "ignore_reason": None,
        "timing": '{"prediction":4120}',
        "extra": '{"format":"B","envelope":{"logger":"dku.audit.apinode-query","topic":"apinode-query",'
        '"severity":"INFO","mdc":{},"callTime":6}}',
        "source": "run/audit/audit.log",
        "source_position": 0,
        "ingested_at": INGESTED,
    }
    batch_common = {
        "ts": utc(2026, 3, 2, 9, 16, 0, 500000),
        "day": date(2026, 3, 2),
        "service_id": "churn",
        "endpoint_id": "predict",
        "generation": "v5",
        "msg_type": "prediction-query",
        "prediction_value": None,
        "ignored": False,
        "ignore_reason": None,
        "timing": '{"prediction":30211}',
        "extra": '{"format":"B","envelope":{"logger":"dku.audit.apinode-query","topic":"apinode-query",'
        '"severity":"INFO","mdc":{},"callTime":31}}',
        "source": "run/audit/audit.log",
        "source_position": len(data[0]) + len(data[1]),
        "ingested_at": INGESTED,
    }
    assert stay == {
        **batch_common,
        "record_id": record_id(data[2], 0),
        "features": '{"customer_id":"C-1003","tenure_months":30,"plan":"pro","monthly_spend":49.9}',
        "context": '{"customer_id":"C-1003"}',
        "prediction": "stay",
        "probas": [("churn", 0.12), ("stay", 0.88)],
        "proba_percentile": 20,
    }
    assert churn == {
        **batch_common,
        "record_id": record_id(data[2], 1),
        "features": '{"customer_id":"C-1004","tenure_months":7,"plan":"team","monthly_spend":99}',
        "context": '{"customer_id":"C-1004"}',
        "prediction": "churn",
        "probas": [("churn", 0.55), ("stay", 0.45)],
        "proba_percentile": 71,
    }


def test_sample_event_server_path_c_with_flat_probas() -> None:
    (path,) = SAMPLES.glob("eventserver/**/*.log")
    data = path.read_bytes().splitlines(keepends=True)
    result = parse(data, source=str(path))
    assert result.predictions.to_pylist() == [
        {
            "record_id": record_id(data[0]),
            "ts": utc(2026, 3, 2, 9, 20),
            "day": date(2026, 3, 2),
            "service_id": "churn",
            "endpoint_id": "predict",
            "generation": "v5",
            "msg_type": "prediction-query",
            "features": '{"customer_id":"C-1005","tenure_months":1,"plan":"free","monthly_spend":0}',
            "context": '{"customer_id":"C-1005"}',
            "prediction": "stay",
            "prediction_value": None,
            "probas": [("churn", 0.31), ("stay", 0.69)],
            "proba_percentile": None,
            "ignored": False,
            "ignore_reason": None,
            "timing": None,
            "extra": '{"format":"C","envelope":{"origAddress":"10.1.0.12"}}',
            "source": str(path),
            "source_position": 0,
            "ingested_at": INGESTED,
        }
    ]


# --- envelopes and timestamps -----------------------------------------------------------------


@pytest.mark.parametrize("envelope", ["A", "B", "C", "bare"])
def test_every_envelope_gives_the_same_record(envelope: Any) -> None:
    row = only_row(parse([make_query_line(envelope)]))
    message = make_message()
    assert row["ts"] == DEFAULT_TS
    assert json.loads(row["features"]) == message["features"]
    assert json.loads(row["context"]) == message["context"]
    assert json.loads(row["timing"]) == message["timing"]
    assert (row["service_id"], row["endpoint_id"], row["generation"]) == ("churn", "predict", "v4")
    assert (row["prediction"], row["probas"], row["proba_percentile"]) == (
        "churn",
        [("churn", 0.71), ("stay", 0.29)],
        88,
    )
    assert extra(row)["format"] == envelope


def test_envelope_extras_are_kept_per_envelope() -> None:
    b = only_row(parse([make_query_line("B")]))
    assert extra(b) == {
        "format": "B",
        "envelope": {
            "logger": "dku.audit.apinode-query",
            "topic": "apinode-query",
            "severity": "INFO",
            "mdc": {"apiKey": "k-1"},
            "callTime": 28,
        },
    }
    c = only_row(parse([make_query_line("C")]))
    assert extra(c) == {"format": "C", "envelope": {"origAddress": "10.1.0.12"}}
    bare = only_row(parse([make_query_line("bare")]))
    assert extra(bare) == {"format": "bare"}


def test_source_tz_applies_to_envelope_a_only_across_dst() -> None:
    paris = LineParser("Europe/Paris")
    winter = datetime(2026, 3, 2, 9, 15, 4, 112000, tzinfo=UTC)
    summer = datetime(2026, 7, 14, 9, 15, 4, 112000, tzinfo=UTC)
    lines = [
        make_query_line("A", ts=winter, tz="Europe/Paris"),  # written as 10:15 local, literal Z
        make_query_line("A", ts=summer, tz="Europe/Paris"),  # written as 11:15 local
        make_query_line("B", ts=summer, tz="America/New_York"),  # explicit -0400 wins
        make_query_line("C", ts=summer, tz="Asia/Tokyo"),
        make_query_line("bare", ts=winter, tz="Asia/Kolkata"),
    ]
    result = parse(lines, parser=paris)
    # rows come in no set order (the C parser's first, then the SQL parser's): read them in line order
    rows = result.predictions.sort_by("source_position").to_pylist()
    assert [r["ts"] for r in rows] == [winter, summer, summer, summer, winter]
    # the same A lines read as UTC are off by the zone offset
    as_utc = parse(lines[:2])
    assert [r["ts"] for r in as_utc.predictions.to_pylist()] == [
        winter + timedelta(hours=1),
        summer + timedelta(hours=2),
    ]


def test_naive_iso_timestamp_of_a_bare_message_is_in_source_tz() -> None:
    line = make_query_line("bare", timestamp="2026-07-14T11:15:04.112")
    assert only_row(parse([line], parser=LineParser("Europe/Paris")))["ts"] == utc(
        2026, 7, 14, 9, 15, 4, 112000
    )
    assert only_row(parse([line]))["ts"] == utc(2026, 7, 14, 11, 15, 4, 112000)


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-03-02T10:15:04.112+0100", utc(2026, 3, 2, 9, 15, 4, 112000)),
        ("2026-03-02T10:15:04.112+01:00", utc(2026, 3, 2, 9, 15, 4, 112000)),
        ("2026-03-02T09:15:04Z", utc(2026, 3, 2, 9, 15, 4)),
        (1772442904112, utc(2026, 3, 2, 9, 15, 4, 112000)),
        (1772442904, utc(2026, 3, 2, 9, 15, 4)),
    ],
)
def test_timestamp_forms_of_bare_messages(stamp: Any, expected: datetime) -> None:
    assert only_row(parse([make_query_line("bare", timestamp=stamp)]))["ts"] == expected


def test_day_is_the_utc_date_of_ts() -> None:
    late = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    row = only_row(parse([make_query_line("B", ts=late, tz="Europe/Paris")]))
    assert (row["ts"], row["day"]) == (late, date(2026, 3, 2))


def test_fallback_ts_is_used_only_without_a_timestamp() -> None:
    fallback = utc(2026, 5, 1, 8, 0)
    lines = [make_query_line("bare", timestamp=DROP), make_query_line("bare")]
    result = parse(lines, fallback_ts=[fallback, fallback])
    assert [r["ts"] for r in result.predictions.to_pylist()] == [fallback, DEFAULT_TS]


def test_message_timestamp_is_used_when_the_envelope_has_none() -> None:
    message = make_message(timestamp="2026-03-02T09:15:04.112Z")
    line = make_line(message, "C", timestamp=DROP)
    row = only_row(parse([line]))
    assert row["ts"] == DEFAULT_TS
    assert "message" not in extra(row)


def test_unknown_zone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        LineParser("Mars/Olympus")


# --- what is kept and what is skipped ---------------------------------------------------------


def test_other_loggers_topics_and_msg_types_are_skipped_and_counted() -> None:
    lines = [
        make_query_line("A"),
        make_query_line("B", logger="dku.audit.generic", topic="generic"),
        make_line({"msgType": "application-open"}, "B", logger="dku.audit.generic", topic="generic"),
        make_line({"msgType": "sql-query", "query": "select 1"}, "B"),
        make_line({"msgType": "function-query", "timing": {"execution": 3}}, "A"),
        make_line({"msgType": "dataset-lookup-query"}, "C"),
        make_line({"level": "info", "msg": "hello"}, "bare"),
        make_line(
            "A plain text message that is JSON-quoted", "B", logger="dku.audit.generic", topic="generic"
        ),
        b"",
        b"   \r\n",
        make_query_line("B"),
    ]
    result = parse(lines)
    assert (result.lines, result.records, result.skipped, result.quarantined) == (11, 2, 9, 0)
    assert [r["source_position"] for r in result.predictions.to_pylist()] == [0, sum(map(len, lines[:-1]))]


def test_topic_absent_means_the_logger_suffix_names_it() -> None:
    kept = make_query_line("B", topic=DROP)
    skipped = make_query_line("B", topic=DROP, logger="dku.audit.generic")
    result = parse([kept, skipped])
    assert (result.records, result.skipped) == (1, 1)
    assert "topic" not in extra(result.predictions.to_pylist()[0])["envelope"]


def test_query_logger_without_msg_type_is_a_prediction_when_it_has_features() -> None:
    row = only_row(parse([make_query_line("A", msgType=DROP)]))
    assert row["msg_type"] is None
    assert row["prediction"] == "churn"


def test_service_generation_alias() -> None:
    row = only_row(parse([make_query_line("B", serviceGenerationId=DROP, serviceGeneration="v9")]))
    assert row["generation"] == "v9"
    assert "message" not in extra(row)


def test_regression_prediction_keeps_the_number_as_logged() -> None:
    result = {"prediction": 1234.5}
    row = only_row(parse([make_query_line("bare", result=result)]))
    assert (row["prediction"], row["prediction_value"], row["probas"]) == ("1234.5", 1234.5, None)
    integer = only_row(parse([make_query_line("bare", result={"prediction": 3})]))
    assert (integer["prediction"], integer["prediction_value"]) == ("3", 3.0)


def test_flat_proba_keys_become_probas_and_leave_extra() -> None:
    result = {"prediction": "b", "proba_a": 0.25, "proba_b": 0.75, "probaPercentile": 42.6}
    row = only_row(parse([make_query_line("A", result=result)]))
    assert row["probas"] == [("a", 0.25), ("b", 0.75)]
    assert row["proba_percentile"] == 43
    assert "result" not in extra(row)


def test_probas_win_over_flat_keys_which_stay_in_extra() -> None:
    result = {"prediction": "a", "probas": {"a": 0.6, "b": 0.4}, "proba_a": 0.1}
    row = only_row(parse([make_query_line("B", result=result)]))
    assert row["probas"] == [("a", 0.6), ("b", 0.4)]
    assert extra(row)["result"] == {"proba_a": 0.1}


def test_ignored_prediction() -> None:
    result = {"ignored": True, "ignoreReason": "MULTIPLE_LOOKUP_MATCHES"}
    row = only_row(parse([make_query_line("B", result=result)]))
    assert (row["ignored"], row["ignore_reason"], row["prediction"], row["probas"]) == (
        True,
        "MULTIPLE_LOOKUP_MATCHES",
        None,
        None,
    )


def test_unknown_fields_are_kept_in_extra() -> None:
    result = {
        "prediction": "churn",
        "probas": {"churn": 0.7, "stay": 0.3},
        "explanations": {"tenure_months": -0.2},
        "conditionals": None,
        "customKeys": {"k": [1, 2]},
    }
    message = make_message(result=result, projectKey="CHURN", savedModelId="abc", features={"x": 1})
    line = make_line(message, "B", hostname="node-1")
    row = only_row(parse([line]))
    assert extra(row) == {
        "format": "B",
        "envelope": {
            "severity": "INFO",
            "logger": "dku.audit.apinode-query",
            "mdc": {"apiKey": "k-1"},
            "callTime": 28,
            "topic": "apinode-query",
            "hostname": "node-1",
        },
        "message": {"projectKey": "CHURN", "savedModelId": "abc"},
        "result": {
            "explanations": {"tenure_months": -0.2},
            "conditionals": None,
            "customKeys": {"k": [1, 2]},
        },
    }
    assert row["features"] == '{"x":1}'


def test_unknown_fields_of_bare_messages_exclude_their_timestamp() -> None:
    row = only_row(parse([make_query_line("bare", apiKeyId="key-7")]))
    assert extra(row) == {"format": "bare", "message": {"apiKeyId": "key-7"}}


def test_unicode_is_preserved() -> None:
    features = {"ville": "Besançon", "名前": "太郎", "emoji": "🙂"}
    row = only_row(parse([make_query_line("A", features=features, result={"prediction": "oui ✓"})]))
    assert json.loads(row["features"]) == features
    assert row["prediction"] == "oui ✓"


def test_empty_input() -> None:
    result = parse([])
    assert (result.lines, result.records, result.skipped, result.quarantined) == (0, 0, 0, 0)
    assert result.predictions.num_rows == result.quarantine.num_rows == 0


# --- batches ----------------------------------------------------------------------------------


def test_batch_is_exploded_in_order_with_distinct_ids() -> None:
    line = make_line(make_batch_message(12), "B")
    result = parse([make_query_line("A"), line])
    rows = result.predictions.to_pylist()
    assert result.records == 13
    batch_rows = [r for r in rows if r["source_position"] > 0]
    assert [json.loads(r["features"])["customer_id"] for r in batch_rows] == [f"C-{i}" for i in range(12)]
    assert [r["record_id"] for r in batch_rows] == [record_id(line, i) for i in range(12)]
    assert [r["prediction"] for r in batch_rows] == ["churn", "stay"] * 6
    assert len({r["record_id"] for r in rows}) == 13


def test_batch_item_unknown_keys_go_to_extra_item() -> None:
    message = make_batch_message(1)
    message["items"][0]["requestId"] = "r-1"
    message["results"][0]["explanations"] = {"a": 1}
    row = only_row(parse([make_line(message, "bare")]))
    assert extra(row) == {
        "format": "bare",
        "result": {"explanations": {"a": 1}},
        "item": {"requestId": "r-1"},
    }


def test_empty_batch_is_skipped() -> None:
    result = parse([make_line(make_batch_message(0), "B")])
    assert (result.records, result.skipped, result.quarantined) == (0, 1, 0)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (make_batch_message(2, results=make_batch_message(3)["results"]), "batch: 2 items but 3 results"),
        (make_batch_message(2, items={"a": 1}), "batch: items is not an array but object"),
        (make_batch_message(2, results="oops"), "batch: results is not an array but varchar"),
        (make_batch_message(2, items=[{"features": {}}, 7]), "batch: item 1 is not a JSON object"),
        (
            make_batch_message(2, items=[{"features": [1]}, {}]),
            "batch: features of item 0 is not a JSON object",
        ),
        (
            make_batch_message(2, results=[{"prediction": "a"}, {"probas": {"a": "x"}}]),
            'batch: item 1: result.probas has a value that is not a number: {"a":"x"}',
        ),
        (
            make_batch_message(2, results=[{"prediction": "a"}, "b"]),
            "batch: item 1: result is not a JSON object but varchar",
        ),
    ],
)
def test_malformed_batches_are_quarantined_whole(message: dict[str, Any], reason: str) -> None:
    result = parse([make_line(message, "B")])
    assert (result.records, result.quarantined) == (0, 1)
    assert reasons(result) == [reason]


# --- quarantine -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"timestamp" : "x", "message" : oops}', "not valid JSON (envelope A whose message is not JSON)"),
        (b"not json at all", "not valid JSON"),
        (b'{"a": 1', "not valid JSON"),
        (b"[1, 2]", "not a JSON object but array"),
        (b'"just a string"', "not a JSON object but varchar"),
        (make_line("Could not serialize", "B"), "message of a query event is not a JSON object but varchar"),
        (make_line([1], "C"), "clientEvent of a query event is not a JSON object but array"),
        (
            make_query_line("bare", timestamp=DROP),
            "missing timestamp: the event has none and no fallback timestamp was given",
        ),
        (make_query_line("B", timestamp="yesterday"), 'bad timestamp: "yesterday"'),
        (make_query_line("bare", timestamp=10**14), "timestamp out of range (1900 to 2199): 100000000000000"),
        (make_query_line("bare", timestamp=10**17), "bad timestamp: 100000000000000000"),
        (
            make_query_line("B", timestamp="1212-03-02T10:15:04.112+0100"),
            'timestamp out of range (1900 to 2199): "1212-03-02T10:15:04.112+0100"',
        ),
        (
            make_query_line("A", timestamp="2026/13/45-99:00:00.000Z"),
            'bad timestamp: "2026/13/45-99:00:00.000Z"',
        ),
        (make_query_line("B", timestamp=None, features="f"), "features is not a JSON object but varchar"),
        (make_query_line("B", result=[1]), "result is not a JSON object but array"),
        (make_query_line("B", result={"probas": [0.1]}), "result.probas is not a JSON object but array"),
        (
            make_query_line("B", result={"probas": {"a": "high"}}),
            'result.probas has a value that is not a number: {"a":"high"}',
        ),
        (make_query_line("B", result={"proba_a": "high"}), "a result.proba_<class> value is not a number"),
        (
            make_query_line("B", result={"probaPercentile": "top"}),
            "result.probaPercentile is not a number but varchar",
        ),
        (make_query_line("B", result={"ignored": "yes"}), "result.ignored is not a boolean but varchar"),
    ],
)
def test_quarantine_reasons(line: bytes, reason: str) -> None:
    result = parse([line], source="s.log")
    assert (result.records, result.skipped, result.quarantined) == (0, 0, 1)
    assert result.quarantine.to_pylist() == [
        {
            "source": "s.log",
            "source_position": 0,
            "reason": reason,
            "raw": line.decode(),
            "raw_bytes": len(line),
            "ingested_at": INGESTED,
            "day": date(2026, 11, 26),
        }
    ]


def test_invalid_utf8_is_quarantined_with_replacement_characters() -> None:
    good = make_query_line("A")
    bad = b'{"a": "caf\xe9"}\n'
    result = parse([good, bad, good])
    assert result.records == 2
    (row,) = result.quarantine.to_pylist()
    assert (row["reason"], row["raw"], row["raw_bytes"]) == (
        "not valid UTF-8",
        '{"a": "caf\ufffd"}',
        len(bad),
    )


def test_a_duckdb_message_cut_inside_a_character_quarantines_the_line() -> None:
    # DuckDB quotes the start of a malformed JSON value in its error and cuts it by bytes: with
    # "x" + "é" * 100 the cut falls inside an "é", and the Python binding raised UnicodeDecodeError,
    # not duckdb.Error, which crashed the parse (and every ingest run of the file): review finding
    good = make_query_line("A")
    bad = make_line(make_message(timestamp="x" + "é" * 100), "bare")  # a bare message's own timestamp
    result = parse([good, bad, good])
    assert (result.records, result.quarantined) == (2, 1)
    assert reasons(result) == [
        "could not be parsed: DuckDB rejected it with an error message that is not valid UTF-8"
    ]


def test_over_long_line_is_quarantined_with_its_size() -> None:
    cut = make_query_line("B")[:100]
    result = parse([cut], line_bytes=[2_000_000])
    (row,) = result.quarantine.to_pylist()
    assert row["reason"] == (
        "line of 2000000 bytes exceeds the reader's line size limit (only 100 bytes were read)"
    )
    assert (row["raw"], row["raw_bytes"]) == (cut.decode(), 2_000_000)


def test_raw_is_cut_at_64_kib_on_a_character_boundary() -> None:
    line = b"x" * (RAW_LIMIT - 1) + "é".encode() * 10
    (row,) = parse([line]).quarantine.to_pylist()
    assert row["raw"] == "x" * (RAW_LIMIT - 1)
    assert row["raw_bytes"] == len(line)


def test_null_line_is_quarantined() -> None:
    table = lines_table([make_query_line("A"), b""]).set_column(
        0, "line", pa.array([make_query_line("A"), None])
    )
    result = PARSER.parse(table, ingested_at=INGESTED)
    assert (result.records, result.quarantined) == (1, 1)
    assert result.quarantine.to_pylist()[0]["reason"] == "no line: the input row holds NULL"
    assert (result.quarantine.to_pylist()[0]["raw"], result.quarantine.to_pylist()[0]["raw_bytes"]) == ("", 0)


def test_bad_lines_do_not_disturb_their_neighbours() -> None:
    lines = [
        make_query_line("A"),
        b"\xff\xfe",
        b"{",
        make_query_line("B", result={"ignored": 3}),
        make_query_line("C"),
    ]
    result = parse(lines)
    assert (result.records, result.quarantined) == (2, 3)
    assert [r["source_position"] for r in result.predictions.to_pylist()] == [0, sum(map(len, lines[:4]))]


# --- record ids -------------------------------------------------------------------------------


def test_record_id_ignores_trailing_newlines_and_source() -> None:
    line = make_query_line("B")
    variants = [line, line + b"\n", line + b"\r\n", line + b"\r"]
    from_file = parse(variants, source="audit.log")
    from_kafka = parse([line], source="dku-apinode-audit/0", positions=[42])
    ids = {r["record_id"] for r in from_file.predictions.to_pylist()} | {
        r["record_id"] for r in from_kafka.predictions.to_pylist()
    }
    assert ids == {record_id(line)}


def test_record_id_is_deterministic_and_distinct_for_different_lines() -> None:
    lines = [make_query_line("A", features={"i": i}) for i in range(50)] + [make_query_line("B")]
    first = [r["record_id"] for r in parse(lines).predictions.to_pylist()]
    again = [r["record_id"] for r in LineParser().parse(lines_table(lines)).predictions.to_pylist()]
    assert first == again == [record_id(x) for x in lines]
    assert len(set(first)) == len(lines)


def test_byte_identical_lines_are_the_same_event() -> None:
    line = make_query_line("A")
    rows = parse([line, line]).predictions.to_pylist()
    assert rows[0]["record_id"] == rows[1]["record_id"]


def test_ingested_at_defaults_to_now() -> None:
    before = datetime.now(UTC)
    result = PARSER.parse(lines_table([make_query_line("A"), b"{"]))
    after = datetime.now(UTC)
    (stamp,) = set(result.predictions.column("ingested_at").to_pylist())
    assert before - timedelta(milliseconds=1) <= stamp <= after
    assert result.quarantine.column("ingested_at").to_pylist() == [stamp]


def test_input_may_be_a_string_column_with_several_chunks() -> None:
    lines = [make_query_line("A").decode(), make_query_line("B").decode()]
    base = lines_table([x.encode() for x in lines])
    table = pa.Table.from_batches(
        [
            pa.record_batch(
                [
                    pa.array([x], pa.string()),
                    *(base.column(c).chunk(0).slice(i, 1) for c in base.column_names[1:]),
                ],
                names=base.column_names,
            )
            for i, x in enumerate(lines)
        ]
    )
    assert PARSER.parse(table).records == 2


def test_a_table_without_the_required_columns_is_an_input_error() -> None:
    table = lines_table([make_query_line("A")]).drop_columns(["line_bytes"])
    with pytest.raises(InputError, match="line_bytes"):
        PARSER.parse(table)


def test_a_large_input_parses_as_its_small_pieces_do() -> None:
    # Inputs of more than one scan batch run as a plain (parallel) query, smaller ones as the prepared
    # statement: both must give the same rows and counts. (Row order is not compared: a call returns
    # its single records before its batch items.)
    from ingest.parser import _SCAN_BATCH_ROWS
    from service.loggen import DEFAULT_START, _Simulator

    simulator = _Simulator(7, bad_rate=0.02, other_topic_rate=0.03)
    lines: list[bytes] = []
    for line in simulator.lines(days=2, per_day=11_000, start=DEFAULT_START):
        lines.append(line.text.rstrip(b"\n") + b"\n")
    assert len(lines) > 2 * _SCAN_BATCH_ROWS
    whole = parse(lines)
    table = lines_table(lines)
    pieces = [
        PARSER.parse(table.slice(at, _SCAN_BATCH_ROWS), ingested_at=INGESTED)
        for at in range(0, len(lines), _SCAN_BATCH_ROWS)
    ]
    assert whole.quarantined > 0 and whole.skipped > 0 and whole.records > len(lines) * 0.9
    by_id = [("record_id", "ascending")]
    assert whole.predictions.sort_by(by_id).equals(
        pa.concat_tables([p.predictions for p in pieces]).sort_by(by_id)
    )
    by_position = [("source_position", "ascending")]
    assert whole.quarantine.sort_by(by_position).equals(
        pa.concat_tables([p.quarantine for p in pieces]).sort_by(by_position)
    )
    assert (whole.records, whole.skipped, whole.quarantined) == (
        sum(p.records for p in pieces),
        sum(p.skipped for p in pieces),
        sum(p.quarantined for p in pieces),
    )
