"""Property tests of the DSS log parser: generated events round-trip, arbitrary bytes never raise."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.parser import LineParser
from ingest.record_id import record_id
from tests.ingest.lines import lines_table, make_batch_message, make_line, make_message

PARSER = LineParser("Europe/Paris")

names = st.text(min_size=1, max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(max_size=20),
)
feature_dicts = st.dictionaries(names, st.one_of(scalars, st.lists(scalars, max_size=3)), max_size=8)
predictions = st.one_of(st.text(min_size=1, max_size=20), st.floats(allow_nan=False, allow_infinity=False))
envelopes = st.sampled_from(["A", "B", "C", "bare"])
quick = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@quick
@given(envelope=envelopes, features=feature_dicts, prediction=predictions, context=feature_dicts)
def test_any_valid_event_round_trips(
    envelope: Any, features: dict[str, Any], prediction: Any, context: dict[str, Any]
) -> None:
    message = make_message(features=features, context=context, result={"prediction": prediction})
    line = make_line(message, envelope)
    result = PARSER.parse(lines_table([line]))
    assert (result.records, result.quarantined, result.skipped) == (1, 0, 0)
    row = result.predictions.to_pylist()[0]
    assert json.loads(row["features"]) == features
    assert json.loads(row["context"]) == context
    assert row["record_id"] == record_id(line)
    if isinstance(prediction, str):
        assert (row["prediction"], row["prediction_value"]) == (prediction, None)
    else:
        assert row["prediction_value"] == prediction
        assert float(row["prediction"]) == prediction


@quick
@given(envelope=envelopes, n=st.integers(min_value=1, max_value=30))
def test_any_batch_explodes_in_order(envelope: Any, n: int) -> None:
    line = make_line(make_batch_message(n), envelope)
    rows = PARSER.parse(lines_table([line])).predictions.to_pylist()
    assert [r["record_id"] for r in rows] == [record_id(line, i) for i in range(n)]
    assert [json.loads(r["features"])["customer_id"] for r in rows] == [f"C-{i}" for i in range(n)]


json_texts = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=8,
).map(lambda v: json.dumps(v).encode())
odd_lines = st.one_of(
    st.binary(max_size=200),
    json_texts,
    st.builds(lambda m, e: make_line(m, e), st.dictionaries(names, scalars, max_size=5), envelopes),
    st.builds(
        lambda key, value, e: make_line(make_message(**{key: value}), e),
        st.sampled_from(
            ["features", "context", "result", "timing", "items", "results", "msgType", "timestamp"]
        ),
        st.one_of(scalars, feature_dicts, st.lists(feature_dicts, max_size=3)),
        envelopes,
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(odd_lines, max_size=12), newline=st.sampled_from([b"", b"\n", b"\r\n"]))
def test_any_bytes_never_raise_and_every_line_is_accounted_for(lines: list[bytes], newline: bytes) -> None:
    data = [x + newline for x in lines]
    result = PARSER.parse(lines_table(data, positions=list(range(len(data)))))
    with_rows = {r["source_position"] for r in result.predictions.to_pylist()}
    quarantined = {r["source_position"] for r in result.quarantine.to_pylist()}
    assert with_rows | quarantined <= set(range(len(data)))
    assert not with_rows & quarantined
    assert result.lines == len(data)
    assert result.skipped + result.quarantined + len(with_rows) == result.lines
    assert len(quarantined) == result.quarantined
    assert result.quarantine.column("reason").null_count == 0
