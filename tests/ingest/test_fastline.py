"""The C line parser: for every line it takes, exactly the SQL parser's rows; every other line left to SQL."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ingest.parser as parser_module
from ingest import _fastline, fastline
from ingest.fastline import parse_fast
from ingest.parser import LineParser, ParseResult, _base
from service.loggen import iter_lines
from tests.ingest.lines import DROP, lines_table, make_batch_message, make_line, make_message, make_query_line

INGESTED = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FAST = LineParser()
SQL = LineParser(fast=False)
RECORD, SKIP, FALLBACK = _fastline.RECORD, _fastline.SKIP, _fastline.FALLBACK


def statuses(lines: list[bytes], *, a_is_utc: bool = True) -> list[int]:
    """What the C parser did with each line: RECORD, SKIP or FALLBACK."""
    fast = parse_fast(_base(lines_table(lines)), a_is_utc=a_is_utc)
    out = np.full(len(lines), RECORD)
    out[fast.fallback] = FALLBACK
    out[np.isin(np.arange(len(lines)), fast.skipped_idx.to_numpy())] = SKIP
    return out.tolist()


def assert_same(lines: list[bytes], **table_args: Any) -> ParseResult:
    """Both parsers give the same counts, prediction rows and quarantine rows (order aside)."""
    table = lines_table(lines, **table_args)
    fast = FAST.parse(table, ingested_at=INGESTED)
    sql = SQL.parse(table, ingested_at=INGESTED)
    assert (fast.records, fast.skipped, fast.quarantined) == (sql.records, sql.skipped, sql.quarantined)
    order = [("source_position", "ascending"), ("record_id", "ascending")]
    ours, theirs = fast.predictions.sort_by(order), sql.predictions.sort_by(order)
    for name in ours.column_names:
        if name != "ingested_at":
            assert _exact(ours.column(name).to_pylist()) == _exact(theirs.column(name).to_pylist()), name
    assert fast.quarantine.sort_by("source_position").equals(sql.quarantine.sort_by("source_position"))
    return fast


def _exact(value: Any) -> Any:
    """`value` with every float as its repr, so that -0.0 and 0.0 differ (== calls them equal)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple):
        return [_exact(v) for v in value]
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    return value


def test_exact_tells_negative_zero_apart() -> None:
    assert _exact([0.0, ("a", 1.5)]) != _exact([-0.0, ("a", 1.5)])


def test_generated_logs_give_the_sql_parsers_rows_and_nearly_all_go_through_c() -> None:
    lines = [line.text for line in itertools.islice(iter_lines(days=5, per_day=600), 3000)]
    result = assert_same(lines)
    assert result.records > 2900
    done = statuses(lines)
    # bad lines (about 0.4 %) are left to SQL; batches, both envelopes and other topics are taken
    assert done.count(FALLBACK) < 0.02 * len(lines)
    assert done.count(SKIP) > 0


def _features_line(features_text: str, envelope: str = "A") -> bytes:
    message = make_message(features={"x": 0})
    text = make_line(message, envelope).decode()
    return text.replace('{"x": 0}' if envelope == "A" else '{"x":0}', features_text).encode()


NUMBERS = [
    "1.50", "1e3", "1E-7", "-0.0", "-0", "0.0", "0.00", "0.0000001", "0.000001", "0.0000015", "1.5e-6",
    "123456789012345678901", "-9223372036854775809", "0.30000000000000004", "0.1", "1.7976931348623157e308",
    "2.5e20", "1e21", "9.999999999999999e20", "1234567890123456.0", "123456789012345.6", "1e16", "12.0e0",
    "0.5e-3", "4.35", "100.0", "231500.0", "1e300", "5e-324", "2.2250738585072014e-308", "9007199254740993.0",
    "0.1e1", "1e-6", "1.0E7", "1.0E-4", "-1.25e-10",
]  # fmt: skip


@pytest.mark.parametrize("number", NUMBERS)
def test_a_number_in_features_is_written_as_duckdb_writes_it(number: str) -> None:
    line = _features_line('{"v": ' + number + ', "w": [' + number + "]}")
    assert_same([line])


def test_most_numbers_are_taken_by_c() -> None:
    done = statuses([_features_line('{"v":' + number + "}") for number in NUMBERS])
    # only the subnormal and near-overflow forms go to SQL
    assert done.count(RECORD) >= len(NUMBERS) - 4


TAKEN = {
    "whitespace in features": _features_line('{ "a" : [ 1 , 2.50 ] ,\t"b" : { } }'),
    "envelope B": make_query_line("B"),
    "B offset -0530": make_query_line("B", timestamp="2026-03-02T04:15:04.112-0530"),
    "B offset +1530": make_query_line("B", timestamp="2026-03-02T04:15:04.112+1530"),
    "numeric prediction": make_query_line(result={"prediction": 231500.0}),
    "integer -0 everywhere": make_query_line(
        result={"prediction": 12345, "probas": {"a": 12345}, "probaPercentile": 12345}
    ).replace(b"12345", b"-0"),
    "flat probas -0": make_query_line(result={"proba_a": 12345}).replace(b"12345", b"-0"),
    "double -0.0": make_query_line(result={"prediction": -0.0, "probas": {"a": -0.0}}),
    "big integer prediction": make_query_line(result={"prediction": 123456789012345678901}),
    "boolean prediction": make_query_line(result={"prediction": True}),
    "empty probas": make_query_line(result={"prediction": "a", "probas": {}}),
    "flat probas": make_query_line(result={"prediction": "a", "proba_a": 0.25, "proba_b": 0.75}),
    "flat probas, probas null": make_query_line(result={"probas": None, "proba_a": 1}),
    "percentile half": make_query_line(result={"prediction": "a", "probaPercentile": 88.5}),
    "percentile negative half": make_query_line(result={"prediction": "a", "probaPercentile": -2.5}),
    "percentile too big": make_query_line(result={"prediction": "a", "probaPercentile": 3e9}),
    "ignored": make_query_line(result={"ignored": True, "ignoreReason": "IGNORED_BY_MODEL"}),
    "ignored false, null reason": make_query_line(result={"ignored": False, "ignoreReason": None}),
    "no result": make_query_line(result=DROP),
    "empty result": make_query_line(result={}),
    "context is text": make_query_line(context="C-1"),
    "context null, timing null": make_query_line(context=None, timing=None),
    "features null": make_query_line(features=None),
    "no msgType, has features": make_query_line(msgType=DROP),
    "msgType null": make_query_line(msgType=None),
    "ids null": make_query_line(serviceId=None, endpointId=DROP, serviceGenerationId=None),
    "unicode text": make_query_line(features={"city": "CITY"}, serviceId="SERVICE")
    .replace(b"CITY", "Zürich ✓ \u2028".encode())
    .replace(b"SERVICE", "sérvice".encode()),
    "batch": make_line(make_batch_message(3)),
    "batch in B": make_line(make_batch_message(2), "B"),
    "batch, null features": make_line(make_batch_message(1, items=[{"features": None}], results=[{}])),
    "batch, flat probas": make_line(
        make_batch_message(1, results=[{"prediction": "a", "proba_a": 0.5, "proba_b": 0.5}])
    ),
    "batch, no timing": make_line(make_batch_message(2, timing=DROP)),
    "timing a number": make_query_line(timing=12),
    "envelope A, null topic": make_line(make_message(), "B", topic=None, logger="x.apinode-query"),
    "kept envelope keys": make_line(make_message(), "B", mdc={"k": [1, {"z": None}]}, callTime=1.50),
    "leap day": make_query_line(timestamp="2028/02/29-23:59:59.999Z"),
    "first instant kept": make_query_line(timestamp="1900/01/01-00:00:00.000Z"),
}


@pytest.mark.parametrize("name", list(TAKEN))
def test_lines_the_c_parser_takes(name: str) -> None:
    line = TAKEN[name]
    assert statuses([line]) == [RECORD], "this line was meant for the C parser"
    assert_same([line, line + b"\r\n"])


SKIPPED = {
    "other logger": make_query_line("B", logger="dku.audit.generic", topic=DROP),
    "other topic": make_query_line("B", topic="generic"),
    "other msgType": make_query_line(msgType="application-open"),
    "no msgType, nothing": make_line({"serviceId": "x"}),
    "empty batch": make_line(make_batch_message(0)),
    "other logger, message not JSON object": make_line("[1, 2]", logger="dku.other"),
}


@pytest.mark.parametrize("name", list(SKIPPED))
def test_lines_the_c_parser_skips(name: str) -> None:
    assert statuses([SKIPPED[name]]) == [SKIP]
    assert_same([SKIPPED[name]])


LEFT = {
    "escape in features": make_query_line(features={"q": 'say "hi"\n'}),
    "escape in an id": make_query_line(serviceId="a\\b"),
    "repeated key": make_query_line().replace(b'"serviceId": "churn"', b'"serviceId": "a", "serviceId": "b"'),
    "unknown message key": make_query_line(extraKey=1),
    "unknown result key": make_query_line(result={"prediction": "a", "score": 1}),
    "probas and flat probas": make_query_line(result={"probas": {"a": 1}, "proba_a": 1}),
    "probas value text": make_query_line(result={"probas": {"a": "0.3"}}),
    "probas value null": make_query_line(result={"probas": {"a": None}}),
    "probas with 257 classes": make_query_line(result={"probas": {f"c{i}": 0.5 for i in range(257)}}),
    "features not an object": make_query_line(features=[1]),
    "result not an object": make_query_line(result="x"),
    "percentile text": make_query_line(result={"probaPercentile": "9"}),
    "ignored text": make_query_line(result={"ignored": "yes"}),
    "prediction object": make_query_line(result={"prediction": {"a": 1}}),
    "serviceGeneration": make_query_line(serviceGeneration=4),
    "bad date": make_query_line(timestamp="2026/02/30-10:00:00.000Z"),
    "millis in two digits": make_query_line(timestamp="2026/02/03-10:00:00.00Z"),
    "before 1900": make_query_line(timestamp="1899/12/31-23:59:59.999Z"),
    "B with Z": make_query_line("B", timestamp="2026-03-02T04:15:04.112Z"),
    "numeric timestamp": make_query_line("B", timestamp=1772442904112),
    "no timestamp": make_query_line("B", timestamp=DROP),
    "envelope C": make_query_line("C"),
    "bare message": make_query_line("bare"),
    "trailing comma": make_query_line().replace(b'"INFO", ', b'"INFO", ,'),
    "NaN": _features_line('{"v": NaN}'),
    "lone surrogate": _features_line('{"v": "\\ud800"}'),
    "deep nesting": _features_line("[" * 70 + "]" * 70),
    "not JSON": make_line("x"),
    "blank": b"   ",
    "batch length mismatch": make_line(make_batch_message(2, results=[{}])),
    "batch item not an object": make_line(make_batch_message(1, items=[1])),
    "batch with features": make_line(make_batch_message(1, features={"a": 1})),
    "message not an object": make_line("[1]"),
    "message timestamp": make_query_line(stamp=1).replace(b'"stamp"', b'"timestamp"'),
}  # fmt: skip


@pytest.mark.parametrize("name", list(LEFT))
def test_lines_left_to_sql_give_its_rows(name: str) -> None:
    assert statuses([LEFT[name]]) == [FALLBACK]
    assert_same([LEFT[name], make_query_line()])


def test_envelope_a_in_another_zone_is_left_to_sql() -> None:
    line = make_query_line(tz="Europe/Paris")
    assert statuses([line], a_is_utc=False) == [FALLBACK]
    assert statuses([make_query_line("B")], a_is_utc=False) == [RECORD]
    fast = LineParser("Europe/Paris").parse(lines_table([line]), ingested_at=INGESTED)
    sql = LineParser("Europe/Paris", fast=False).parse(lines_table([line]), ingested_at=INGESTED)
    assert fast.predictions.column("ts").equals(sql.predictions.column("ts"))


def test_without_the_c_extension_every_line_goes_through_sql(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fastline, "AVAILABLE", False)
    parser = LineParser()
    assert parser.fast is False
    assert "not built" in caplog.text
    lines = [line.text for line in itertools.islice(iter_lines(days=1, per_day=300), 200)]
    table = lines_table(lines)
    ours, reference = parser.parse(table, ingested_at=INGESTED), SQL.parse(table, ingested_at=INGESTED)
    assert ours.predictions.equals(reference.predictions)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_parses_after_its_parent_did() -> None:
    lines = [line.text for line in itertools.islice(iter_lines(days=1, per_day=3000), 3000)]
    table = lines_table(lines)
    expected = FAST.parse(table).records  # the parent's pool threads are running now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: parse (two pieces, so the pool is used), report, leave at once
        signal.alarm(20)
        try:
            os.write(write, str(LineParser().parse(table).records).encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), "the child was killed: its parse hung"
    assert int(os.read(read, 64) or b"-1") == expected


def test_a_parse_after_interpreter_shutdown_began_still_parses() -> None:
    script = (
        "import threading, time\n"
        "from ingest.parser import LineParser\n"
        "from tests.ingest.lines import lines_table, make_query_line\n"
        "table = lines_table([make_query_line()] * 40000)\n"
        "def late():\n"
        "    time.sleep(1)\n"
        "    print('records', LineParser().parse(table).records, flush=True)\n"
        "threading.Thread(target=late).start()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "records 40000" in done.stdout, done.stderr


def test_quarantine_rows_come_in_line_order_after_a_duckdb_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    run = parser_module._Session.run

    def failing(self: Any, name: str, view: str, table: pa.Table, query: str) -> pa.Table:
        if name == "hs_lines" and any("BOOM" in (s or "") for s in table.column("s").to_pylist()):
            raise duckdb.InvalidInputException("Invalid Input Error: boom")
        return run(self, name, view, table, query)

    monkeypatch.setattr(parser_module._Session, "run", failing)
    mismatch = make_line(make_batch_message(2, results=[{"prediction": 1}]), "C")
    lines = [
        make_query_line(),
        mismatch,
        b"bad",
        make_query_line("C"),
        make_query_line("C", serviceId="BOOM"),
    ]
    table = lines_table(lines)
    fast = FAST.parse(table, ingested_at=INGESTED)
    sql = SQL.parse(table, ingested_at=INGESTED)
    assert fast.quarantine.equals(sql.quarantine)  # not re-sorted: the same order from both
    assert fast.quarantine.column("source_position").to_pylist() == sorted(
        fast.quarantine.column("source_position").to_pylist()
    )
    assert [r.split(":")[0] for r in fast.quarantine.column("reason").to_pylist()] == [
        "batch",
        "not valid JSON",
        "could not be parsed",
    ]


def test_lines_too_long_or_not_utf8_are_left_to_sql() -> None:
    line = make_query_line()
    assert_same([line, line], line_bytes=[len(line) + 10, len(line)])
    assert_same([b"\xff" + line, line])


# --- generated variations ----------------------------------------------------------------------------

_FORMATS = ("repr", ".17g", ".15g", "e", ".3E", ".1f", ".20f")


@st.composite
def numbers(draw: st.DrawFn) -> str:
    value = draw(st.floats(allow_nan=False, allow_infinity=False, width=64))
    form = draw(st.sampled_from(_FORMATS))
    text = repr(value) if form == "repr" else format(value, form)
    return text if text[-1].isdigit() else repr(value)


names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)
scalars = st.one_of(
    numbers(),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["true", "false", "null"]),
    names.map(lambda s: json.dumps(s, ensure_ascii=False)),
)
spaces = st.sampled_from(["", " ", "\t", " \n "])


@st.composite
def objects(draw: st.DrawFn) -> str:
    members = draw(st.dictionaries(names, scalars, max_size=5))
    gap = draw(spaces)
    inner = f",{gap}".join(f"{json.dumps(k, ensure_ascii=False)}{gap}:{gap}{v}" for k, v in members.items())
    return "{" + gap + inner + gap + "}"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(objects(), objects(), numbers(), st.sampled_from("AB")), min_size=1, max_size=12))
def test_generated_lines_give_the_same_rows_whichever_parser_reads_them(
    parts: list[tuple[str, str, str, str]],
) -> None:
    lines = []
    for features, context, proba, envelope in parts:
        text = make_line(make_message(features={"x": 0}, context={"y": 0}), envelope).decode()
        sep = ": " if envelope == "A" else ":"
        text = text.replace('{"x"' + sep + "0}", features).replace('{"y"' + sep + "0}", context)
        text = text.replace("0.71", proba)
        lines.append(text.encode())
    assert_same(lines)


_MUTATIONS = [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"1e5", b"-", b".", b"null", b"true"]
_MUTATIONS += [b"\\u00e9", b" ", b'"proba_x":1', b'"items":[]', b'"results":[{}]', b"-0", b"1.50", b"1E-7"]
_MUTATIONS += [b"123456789012345678901", b'"probas":{}', b'"ignored":true', b"\xc3\xa9", b'"topic":null']


def test_mutated_lines_give_the_same_rows_whichever_parser_reads_them() -> None:
    # generated lines with a few random edits each (deleted bytes, inserted JSON pieces, changed
    # characters): most become lines that one path or the other must refuse, quarantine or skip
    rng = random.Random(2026)
    base = [line.text for line in itertools.islice(iter_lines(days=3, per_day=400), 600)]
    lines = []
    for _ in range(3000):
        line = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(line) + 1)
            roll = rng.random()
            if roll < 0.25 and line:
                del line[at % len(line) : at % len(line) + rng.randint(1, 6)]
            elif roll < 0.75:
                line[at:at] = rng.choice(_MUTATIONS)
            elif line:
                line[at % len(line)] = rng.choice(b'0123456789.-+eE"{}[],: ')
        lines.append(bytes(line))
    assert_same(lines)
    done = statuses(lines)
    assert done.count(RECORD) > 200 and done.count(FALLBACK) > 1000  # both paths did real work


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_record_ids_are_md5_of_the_line(data: bytes) -> None:
    assert _fastline.md5_hex(data) == hashlib.md5(data).hexdigest()


def test_probas_of_256_classes_are_still_taken() -> None:
    line = make_query_line(result={"probas": {f"c{i}": 0.5 for i in range(256)}})
    assert statuses([line]) == [RECORD]
    assert_same([line])


def test_the_c_parser_checks_its_buffers() -> None:
    text = pa.array(["{}"])
    _, offsets, data = text.buffers()
    with pytest.raises(ValueError, match="too short"):
        _fastline.parse(data, offsets, 0, 5, b"\x01", True)
    # a first row so large that first + n overflows a product of sizes
    with pytest.raises(ValueError, match="too short"):
        _fastline.parse(data, offsets, (1 << 62) - (1 << 40), 1, b"\x01", True)
