"""Bulk import from CSV, JSONL and Parquet: same validation, same idempotency, flushed to Delta."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage
from service.errors import InvalidOutcome
from storage.outcome_import import import_outcomes


def _rows(root: Path) -> list[tuple[object, ...]]:
    con = storage.connect(root)
    try:
        return con.execute(
            "SELECT outcome_id, record_id, key, value, value_json, attributes, key_id "
            "FROM outcomes ORDER BY outcome_id"
        ).fetchall()
    finally:
        con.close()


EXPECTED = [
    ("o1", "r1", None, "fraud", '"fraud"', None, None),
    ("o2", None, '{"context.tx":"00123"}', "1", "1", '{"src":"crm"}', None),
]


def test_csv_with_key_columns(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "outcome_id,record_id,key.context.tx,value,attributes\n"
        "o1,r1,,fraud,\n"
        'o2,,00123,1,"{""src"": ""crm""}"\n'
    )
    report = import_outcomes(tmp_path / "root", path)
    assert (report.created, report.duplicate, report.flushed) == (2, 0, 2)
    assert _rows(tmp_path / "root") == EXPECTED
    again = import_outcomes(tmp_path / "root", path)
    assert (again.created, again.duplicate, again.flushed) == (0, 2, 0)


def test_jsonl_and_parquet_give_the_same_rows(tmp_path: Path) -> None:
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text(
        '{"outcome_id": "o1", "record_id": "r1", "value": "fraud"}\n\n'
        '{"outcome_id": "o2", "key": {"context.tx": "00123"}, "value": 1, "attributes": {"src": "crm"}}\n'
    )
    assert import_outcomes(tmp_path / "a", jsonl).created == 2
    parquet = tmp_path / "labels.parquet"
    pq.write_table(
        pa.table(
            {
                "outcome_id": ["o1", "o2"],
                "record_id": ["r1", None],
                "key": [None, '{"context.tx": "00123"}'],
                "value": ["fraud", "1"],
                "attributes": [None, '{"src": "crm"}'],
            }
        ),
        parquet,
    )
    assert import_outcomes(tmp_path / "b", parquet).created == 2
    assert _rows(tmp_path / "a") == EXPECTED
    assert _rows(tmp_path / "b") == [
        EXPECTED[0],
        ("o2", None, '{"context.tx":"00123"}', "1", '"1"', '{"src":"crm"}', None),
    ]


def test_one_bad_record_rejects_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"record_id": "r1", "value": 1}\n{"record_id": "r2"}\n')
    with pytest.raises(InvalidOutcome) as caught:
        import_outcomes(tmp_path / "root", path)
    assert caught.value.details[0]["index"] == 1
    assert _rows(tmp_path / "root") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # DictReader kept the last of two cells of one column: value,value with fraud,ok stored ok
        ("outcome_id,record_id,value,value\no1,r1,fraud,ok\n", "names column(s) ['value'] more than once"),
        (
            "outcome_id,key.context.tx,key.context.tx,value\no1,T-1,T-2,1\n",
            "names column(s) ['key.context.tx'] more than once",
        ),
        # a short row read its missing cells as absent fields (occurred_at defaulted to now)
        (
            "outcome_id,record_id,value,occurred_at\no1,r1,1\n",
            "line 2: row: fewer cells than header columns",
        ),
        ("outcome_id,record_id,value\no1,r1,1,extra\n", "line 2: row: more cells than header columns"),
    ],
)
def test_a_csv_whose_cells_do_not_fit_its_header_is_rejected(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidOutcome, match=re.escape(message)):
        import_outcomes(tmp_path / "root", path)
    assert _rows(tmp_path / "root") == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("excel.csv", "\ufeffoutcome_id,record_id,value\no1,r1,fraud\n"),  # Excel's "CSV UTF-8"
        ("editor.jsonl", '\ufeff{"outcome_id": "o1", "record_id": "r1", "value": "fraud"}\n'),
    ],
)
def test_a_byte_order_mark_is_not_part_of_the_data(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    import_outcomes(tmp_path / "root", path)
    assert [r[:4] for r in _rows(tmp_path / "root")] == [("o1", "r1", None, "fraud")]


def test_an_id_twice_in_one_file_with_different_contents_names_both_items(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text(
        '{"outcome_id": "a", "record_id": "r1", "value": 1}\n'
        '{"outcome_id": "b", "record_id": "r2", "value": 1}\n'
        '{"outcome_id": "a", "record_id": "r1", "value": 0}\n'
    )
    with pytest.raises(InvalidOutcome, match=r"outcome_id 'a' comes twice in the file .*lines 1 and 3"):
        import_outcomes(tmp_path / "root", path)
    assert _rows(tmp_path / "root") == []
    path.write_text('{"outcome_id": "a", "record_id": "r1", "value": 1}\n' * 2)  # the same twice is fine
    import_outcomes(tmp_path / "root", path)
    assert [r[0] for r in _rows(tmp_path / "root")] == ["a"]


@pytest.mark.parametrize(
    ("name", "text", "message", "where"),
    [
        # blank lines are counted: the bad record is on line 4, the third record
        (
            "l.jsonl",
            '{"record_id": "r1", "value": 1}\n\n{"record_id": "r2", "value": 1}\n'
            '{"record_id": "r3", "value": []}\n',
            "line 4: value: must be a string, number or boolean",
            {"index": 2, "line": 4},
        ),
        (
            "j.jsonl",
            '{"record_id": "r1", "value": 1}\n\n{"record_id": "r2", "value": 1\n',
            "line 3: line: not valid JSON: unexpected end of data at column 31",
            {"index": 1, "line": 3},
        ),
        # a blank line counts too (csv's DictReader skipped it unseen: "line 3")
        ("b.csv", "record_id,value\nr1,1\n\nr2,\n", "line 4: value: Field required", {"index": 1, "line": 4}),
        # the header is line 1, and a quoted cell over two lines moves the next record down
        (
            "c.csv",
            'record_id,value,attributes\nr1,1,"{""a"":\n1}"\nr2,,\n',
            "line 4: value: Field required",
            {"index": 1, "line": 4},
        ),
    ],
)
def test_errors_name_the_line_of_the_bad_record(
    tmp_path: Path, name: str, text: str, message: str, where: dict[str, int]
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidOutcome) as caught:
        import_outcomes(tmp_path / "root", path)
    assert str(caught.value.message) == message
    assert {k: caught.value.details[0][k] for k in where} == where
    assert _rows(tmp_path / "root") == []


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"record_id": ["r1", "r2", "r3"], "value": ["a", "b", None]}), path)
    with pytest.raises(InvalidOutcome, match=r"^row 3: value: Field required$"):
        import_outcomes(tmp_path / "root", path)


def test_importing_a_file_again_stores_nothing_twice_even_without_ids(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    same = '{"record_id": "r1", "value": "fraud"}\n'
    path.write_text(same + same + '{"outcome_id": "o9", "record_id": "r2", "value": "ok"}\n')
    calls: list[tuple[int, int]] = []
    first = import_outcomes(tmp_path / "root", path, stored=lambda c, d: calls.append((c, d)))
    assert (first.created, first.duplicate, calls) == (3, 0, [(3, 0)])  # two equal rows are two records
    # as after a Ctrl-C during the flush: the same file again adds nothing
    again = import_outcomes(tmp_path / "root", path)
    assert (again.created, again.duplicate) == (0, 3)
    ids = [r[0] for r in _rows(tmp_path / "root")]
    assert len(ids) == 3 and "o9" in ids
    # another file (here one more record) gives its records other ids
    path.write_text(same + same + same)
    assert import_outcomes(tmp_path / "root", path).created == 3
    assert len(_rows(tmp_path / "root")) == 6
