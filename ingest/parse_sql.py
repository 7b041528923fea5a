"""The SQL that turns DSS query-log lines into prediction rows, run by DuckDB over Arrow tables.

Two statements. `LINES_QUERY` reads `lines_in` (idx, s, n_bytes, line_bytes, source, source_position,
fallback_ts) and returns exactly one row per input line, in input order, with `kind`:
0 a single prediction record (all columns filled), 1 a quarantined line (`reason`), 2 a skipped
line, 3 a batch line (line-level columns filled; its records come from the second statement).
`BATCH_QUERY` reads `batch_in` (the kind-3 rows plus their text `s`) and returns one row per
record of each batch (kind 0, item order) or one quarantine row (kind 1) for a malformed batch.

Speed: each line is parsed three times (`json_valid`, one `json_keys` over a constant path list,
one `json_extract` over a constant path list chosen by envelope) and hashed once (`md5`); each
element of the extracted list is read once into its own column. Known-key checks compare key
counts instead of running lambdas; every rare case (unknown keys, flat
`proba_*` keys, bad values, `serviceGeneration`, a message timestamp) is a CASE branch that DuckDB
evaluates only for the rows that need it. No filter sits between the stages, so the optimiser
cannot push expressions down and evaluate them twice.
"""

from __future__ import annotations

import re

TS_RANGE = ("1900-01-01 00:00:00+00", "2199-12-31 23:59:59.999999+00")
"""Timestamps outside this range are quarantined: they are typos or unit mistakes, and would not
round-trip through every client (Python's datetime stops at year 9999)."""

QUERY_LOGGER = "dku.apinode.audit.queries"
QUERY_TOPIC = "apinode-query"
PREDICTION_MSG_TYPE = "prediction-query"

ENVELOPE_KEPT = ("logger", "topic", "severity", "mdc", "callTime")
"""Envelope A/B keys that are not columns; they are kept in `extra.envelope`."""

ENVELOPE_MAPPED = {"E": ("timestamp", "message"), "C": ("serverTimestamp", "clientEvent")}
MESSAGE_MAPPED = (
    "msgType",
    "serviceId",
    "endpointId",
    "serviceGenerationId",
    "serviceGeneration",
    "features",
    "context",
    "timing",
    "result",
)
"""Message keys of a single event that become columns; all other message keys go to `extra.message`."""

BATCH_MAPPED = ("msgType", "serviceId", "endpointId", "serviceGenerationId", "serviceGeneration", "timing")
RESULT_MAPPED = ("prediction", "probas", "probaPercentile", "ignored", "ignoreReason")
ITEM_MAPPED = ("features", "context")

_PREFIX = {"E": "$.message", "C": "$.clientEvent", "bare": "$"}
_ENV_TS = {"E": "$.timestamp", "C": "$.serverTimestamp", "bare": "$.timestamp"}
_NUMBER = "('BIGINT', 'UBIGINT', 'DOUBLE')"

A_FORMATS = ("%Y/%m/%d-%H:%M:%S.%gZ", "%Y/%m/%d-%H:%M:%SZ", "%Y/%m/%d-%H:%M:%S.%g", "%Y/%m/%d-%H:%M:%S")
"""Envelope A's `%d{yyyy/MM/dd-HH:mm:ss.SSS}Z`: local time of the JVM; the Z is a literal character."""

# Positions in the extracted list `f` (1-based, as DuckDB lists are).
_MSG_PATHS = ("msgType", "serviceId", "endpointId", "serviceGenerationId", "features", "context", "timing")
_RES_PATHS = RESULT_MAPPED
F_MSG = {k: i + 1 for i, k in enumerate(_MSG_PATHS)}
F_RES = {k: len(_MSG_PATHS) + 1 + i for i, k in enumerate(_RES_PATHS)}
F_TS = len(_MSG_PATHS) + len(_RES_PATHS) + 1
F_ENV = {k: F_TS + 1 + i for i, k in enumerate(ENVELOPE_KEPT)}

# Positions in the key lists `kk`.
_KEY_PATHS = ("$", "$.message", "$.message.result", "$.clientEvent", "$.clientEvent.result", "$.result")


def sql_list(values: tuple[str, ...] | list[str]) -> str:
    """A constant SQL list of string literals."""
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _extract_paths(env: str) -> list[str]:
    prefix = _PREFIX[env]
    paths = [f'{prefix}."{k}"' for k in _MSG_PATHS] + [f'{prefix}.result."{k}"' for k in _RES_PATHS]
    paths.append(_ENV_TS[env])
    if env == "E":
        paths += [f'$."{k}"' for k in ENVELOPE_KEPT]
    return paths


def _by_env(expr: str) -> str:
    """`expr` (with {prefix}) for each envelope, as a CASE on env with constant paths."""
    parts = " ".join(f"WHEN '{env}' THEN {expr.format(prefix=prefix)}" for env, prefix in _PREFIX.items())
    return f"CASE env {parts} END"


MACROS = f"""
CREATE OR REPLACE MACRO hs_str(j) AS CASE
    WHEN j IS NULL OR j = 'null' THEN NULL
    WHEN left(j, 1) = '"' THEN CASE WHEN contains(j, '\\') THEN j ->> '$' ELSE trim(j, '"') END
    ELSE CAST(j AS VARCHAR) END;
CREATE OR REPLACE MACRO hs_present(j) AS j IS NOT NULL AND j <> 'null';
CREATE OR REPLACE MACRO hs_kind(j) AS CASE WHEN j IS NULL THEN 'missing' ELSE lower(json_type(j)) END;
CREATE OR REPLACE MACRO hs_cut(t) AS CASE WHEN length(t) > 100 THEN left(t, 100) || '...' ELSE t END;
CREATE OR REPLACE MACRO hs_rest(obj, excluded) AS to_json(map_from_entries(list_filter(
    map_entries(json_transform(obj, '"MAP(VARCHAR, JSON)"')), lambda e: NOT list_contains(excluded, e.key))));
CREATE OR REPLACE MACRO hs_has_flat(rk) AS contains(',' || array_to_string(rk, ','), ',proba_');
CREATE OR REPLACE MACRO hs_flat_probas(r) AS map_from_entries(list_transform(
    list_filter(map_entries(json_transform(r, '"MAP(VARCHAR, JSON)"')),
                lambda e: starts_with(e.key, 'proba_')),
    lambda e: {{'key': substr(e.key, 7), 'value': TRY_CAST(e.value AS DOUBLE)}}));
CREATE OR REPLACE MACRO hs_numeric(j) AS left(j, 1) BETWEEN '0' AND '9' OR left(j, 1) = '-';
CREATE OR REPLACE MACRO hs_num(j) AS CASE WHEN hs_numeric(j) THEN TRY_CAST(j AS DOUBLE) END;
CREATE OR REPLACE MACRO hs_ts(tsj) AS CASE
    WHEN substr(tsj, 6, 1) = '/' THEN coalesce(
        try_strptime(tsj, '"%Y/%m/%d-%H:%M:%S.%gZ"'),
        try_strptime(tsj, {sql_list([f'"{fmt}"' for fmt in A_FORMATS])}))::TIMESTAMPTZ
    WHEN left(tsj, 1) = '"' THEN coalesce(
        try_strptime(tsj, '"%Y-%m-%dT%H:%M:%S.%g%z"'),
        TRY_CAST(hs_str(tsj) AS TIMESTAMPTZ))
    WHEN hs_numeric(tsj) THEN
        CASE WHEN abs(TRY_CAST(tsj AS DOUBLE)) >= 1e11 THEN try(to_timestamp(TRY_CAST(tsj AS DOUBLE) / 1000))
             ELSE try(to_timestamp(TRY_CAST(tsj AS DOUBLE))) END
    END;
CREATE OR REPLACE MACRO hs_result_problem(
    has_result, result_is_object, result_kind, probas, pm, pct, ign, flat_bad)
    AS CASE
    WHEN has_result AND NOT result_is_object THEN 'result is not a JSON object but ' || result_kind
    WHEN hs_present(probas) AND left(probas, 1) <> '{{'
        THEN 'result.probas is not a JSON object but ' || hs_kind(probas)
    WHEN hs_present(probas) AND (pm IS NULL OR list_count(map_values(pm)) < cardinality(pm))
        THEN 'result.probas has a value that is not a number: ' || hs_cut(probas)
    WHEN flat_bad THEN 'a result.proba_<class> value is not a number'
    WHEN hs_present(pct) AND json_type(pct) NOT IN {_NUMBER}
        THEN 'result.probaPercentile is not a number but ' || hs_kind(pct)
    WHEN hs_present(ign) AND ign NOT IN ('true', 'false')
        THEN 'result.ignored is not a boolean but ' || hs_kind(ign)
    END;
"""
"""Helper macros, created once per parser connection."""


def _record_columns(
    pred: str, probas: str, pm: str, flat: str, r_json: str, pct: str, ign: str, ign_reason: str
) -> str:
    """The result columns of one record, from SQL expressions for the result's parts."""
    return f"""
    hs_str({pred}) AS prediction,
    hs_num({pred}) AS prediction_value,
    CASE WHEN hs_present({probas}) THEN {pm} WHEN {flat} THEN hs_flat_probas({r_json}) END AS probas,
    CASE WHEN hs_present({pct}) THEN TRY_CAST(round(TRY_CAST({pct} AS DOUBLE)) AS INTEGER)
         END AS proba_percentile,
    coalesce({ign} = 'true', false) AS ignored,
    hs_str({ign_reason}) AS ignore_reason"""


def _result_extra(rk: str, known_count: str, flat: str, r_json: str) -> str:
    """`,"result":{...}` for unknown result keys, or '' (checked by counting known keys)."""
    return f"""CASE WHEN {rk} IS NULL OR len({rk}) = {known_count} + CASE WHEN {flat}
                 THEN len(list_filter({rk}, lambda k: starts_with(k, 'proba_'))) ELSE 0 END THEN ''
            ELSE coalesce(',"result":' || nullif(hs_rest({r_json}, {sql_list(RESULT_MAPPED)}
                 || CASE WHEN {flat} THEN list_filter({rk}, lambda k: starts_with(k, 'proba_')) ELSE [] END),
                 '{{}}'), '')
            END"""


def build_lines_query() -> str:
    """The per-line statement (see the module docstring)."""
    m, r, env = F_MSG, F_RES, F_ENV
    extract = " ".join(f"WHEN '{e}' THEN json_extract(s, {sql_list(_extract_paths(e))})" for e in _PREFIX)
    env_pairs = ", ".join(
        f"""CASE WHEN f[{env[k]}] IS NOT NULL THEN '"{k}":' || f[{env[k]}] END""" for k in ENVELOPE_KEPT
    )
    env_known_count = f"1 + (f[{F_TS}] IS NOT NULL)::INT + " + " + ".join(
        f"(f[{env[k]}] IS NOT NULL)::INT" for k in ENVELOPE_KEPT
    )
    msg_known_count = (
        " + ".join(f"(f[{m[k]}] IS NOT NULL)::INT" for k in _MSG_PATHS) + " + (rk IS NOT NULL)::INT"
    )
    res_known_count = " + ".join(f"(f[{r[k]}] IS NOT NULL)::INT" for k in _RES_PATHS)
    is_pred = f"""coalesce(msg_type = '{PREDICTION_MSG_TYPE}' OR (msg_type IS NULL
                  AND (list_contains(mk, 'features') OR list_contains(mk, 'result') OR is_batch)), false)"""
    msg_json = _by_env("json_extract(s, '{prefix}')")
    result_json = _by_env("json_extract(s, '{prefix}.result')")
    query = f"""
WITH
l AS (
    SELECT idx, source, source_position, line_bytes, n_bytes, fallback_ts, s,
        CASE WHEN n_bytes IS NULL THEN 'null'
             WHEN line_bytes > n_bytes THEN 'long'
             WHEN s IS NULL THEN 'utf8'
             WHEN json_valid(s) THEN 'ok'
             WHEN regexp_full_match(s, '\\s*') THEN 'blank'
             ELSE 'json' END AS st
    FROM lines_in
),
k AS (
    SELECT *, CASE WHEN st = 'ok' THEN json_keys(s, {sql_list(_KEY_PATHS)}) END AS kk FROM l
),
kr AS (
    SELECT *, kk[1] AS root_keys FROM k
),
e AS (
    SELECT *,
        CASE WHEN st <> 'ok' THEN NULL
             WHEN len(root_keys) = 0 AND json_type(s) <> 'OBJECT' THEN 'notobj'
             WHEN list_contains(root_keys, 'clientEvent') THEN 'C'
             WHEN list_contains(root_keys, 'message')
                  AND (list_contains(root_keys, 'logger') OR list_contains(root_keys, 'severity')) THEN 'E'
             ELSE 'bare' END AS env
    FROM kr
),
x AS (
    SELECT *,
        CASE env {extract} END AS f,
        CASE env WHEN 'E' THEN kk[2] WHEN 'C' THEN kk[4] WHEN 'bare' THEN root_keys END AS mk,
        CASE env WHEN 'E' THEN kk[3] WHEN 'C' THEN kk[5] WHEN 'bare' THEN kk[6] END AS rk
    FROM e
),
y AS (
    SELECT *,
        hs_str(f[{env["logger"]}]) AS logger,
        hs_str(f[{env["topic"]}]) AS topic,
        hs_str(f[{m["msgType"]}]) AS msg_type,
        CASE WHEN env IS NULL OR env = 'notobj' THEN NULL
             WHEN len(mk) > 0 OR env = 'bare' THEN true
             ELSE {_by_env("json_type(s, '{prefix}')")} = 'OBJECT' END AS msg_obj,
        list_contains(mk, 'items') OR list_contains(mk, 'results') AS is_batch,
        CASE WHEN hs_present(f[{F_TS}]) THEN f[{F_TS}]
             WHEN env <> 'bare' AND list_contains(mk, 'timestamp')
                  THEN nullif({_by_env("json_extract(s, '{prefix}.timestamp')")}, 'null') END AS tsj,
        CASE WHEN rk IS NULL THEN NULL WHEN len(rk) > 0 THEN 'object'
             ELSE hs_kind({result_json}) END AS result_kind,
        CASE WHEN hs_present(f[{r["probas"]}]) AND left(f[{r["probas"]}], 1) = '{{'
             THEN json_transform(f[{r["probas"]}], '"MAP(VARCHAR, DOUBLE)"') END AS pm
    FROM x
),
z AS (
    SELECT *,
        env = 'E' AND NOT (logger IS NOT DISTINCT FROM '{QUERY_LOGGER}'
            OR coalesce(topic, regexp_extract(logger, '[^.]*$')) IS NOT DISTINCT FROM '{
        QUERY_TOPIC
    }') AS other_source,
        CASE WHEN tsj IS NULL THEN fallback_ts ELSE hs_ts(tsj) END AS ts,
        NOT hs_present(f[{r["probas"]}]) AND rk IS NOT NULL AND hs_has_flat(rk) AS flat
    FROM y
),
c AS (
    SELECT *,
        CASE st
            WHEN 'long' THEN 'line of ' || line_bytes || ' bytes exceeds the reader''s line size limit (only '
                             || n_bytes || ' bytes were read)'
            WHEN 'null' THEN 'no line: the input row holds NULL'
            WHEN 'utf8' THEN 'not valid UTF-8'
            WHEN 'json' THEN CASE WHEN starts_with(s, '{{"timestamp" : "')
                                  THEN 'not valid JSON (envelope A whose message is not JSON)'
                                  ELSE 'not valid JSON' END
            WHEN 'ok' THEN CASE
                WHEN env = 'notobj' THEN 'not a JSON object but ' || lower(json_type(s))
                WHEN other_source THEN NULL
                WHEN NOT msg_obj THEN
                    (CASE env WHEN 'C' THEN 'clientEvent' ELSE 'message' END)
                    || ' of a query event is not a JSON object but '
                    || lower({_by_env("json_type(s, '{prefix}')")})
                WHEN NOT {is_pred} THEN NULL
                WHEN tsj IS NULL AND fallback_ts IS NULL
                    THEN 'missing timestamp: the event has none and no fallback timestamp was given'
                WHEN ts IS NULL THEN 'bad timestamp: ' || hs_cut(tsj)
                WHEN NOT ts BETWEEN TIMESTAMPTZ '{TS_RANGE[0]}' AND TIMESTAMPTZ '{TS_RANGE[1]}'
                    THEN 'timestamp out of range ({TS_RANGE[0][:4]} to {TS_RANGE[1][:4]}): '
                         || coalesce(hs_cut(tsj)::VARCHAR, 'fallback ' || fallback_ts::VARCHAR)
                WHEN is_batch THEN NULL
                WHEN hs_present(f[{m["features"]}]) AND left(f[{m["features"]}], 1) <> '{{'
                    THEN 'features is not a JSON object but ' || hs_kind(f[{m["features"]}])
                ELSE hs_result_problem(
                    result_kind IS NOT NULL AND result_kind <> 'null', result_kind = 'object',
                    result_kind, f[{r["probas"]}], pm, f[{r["probaPercentile"]}], f[{r["ignored"]}],
                    flat AND list_bool_or(list_transform(map_values(hs_flat_probas({result_json})),
                                                         lambda v: v IS NULL)))
                END
            END AS reason
    FROM z
),
o AS (
    SELECT *,
        CASE WHEN reason IS NOT NULL THEN 1
             WHEN st = 'blank' OR other_source OR NOT {is_pred} THEN 2
             WHEN is_batch THEN 3
             ELSE 0 END AS kind
    FROM c
)
SELECT kind, idx,
    CASE WHEN kind IN (0, 3) THEN md5(s) END AS record_id,
    ts,
    NULL::DATE AS day,  -- filled in by the parser from ts (an Arrow cast is cheaper than ICU here)
    hs_str(f[{m["serviceId"]}]) AS service_id,
    hs_str(f[{m["endpointId"]}]) AS endpoint_id,
    coalesce(hs_str(f[{m["serviceGenerationId"]}]), CASE WHEN list_contains(mk, 'serviceGeneration')
        THEN hs_str({_by_env("json_extract(s, '{prefix}.serviceGeneration')")}) END) AS generation,
    msg_type,
    CASE WHEN hs_present(f[{m["features"]}]) THEN f[{m["features"]}] END AS features,
    CASE WHEN hs_present(f[{m["context"]}]) THEN f[{m["context"]}] END AS context,
    {
        _record_columns(
            f"f[{r['prediction']}]",
            f"f[{r['probas']}]",
            "pm",
            "flat",
            result_json,
            f"f[{r['probaPercentile']}]",
            f"f[{r['ignored']}]",
            f"f[{r['ignoreReason']}]",
        )
    },
    CASE WHEN hs_present(f[{m["timing"]}]) THEN f[{m["timing"]}] END AS timing,
    CASE WHEN kind IN (0, 3) THEN
        '{{"format":"' || CASE env WHEN 'E' THEN CASE WHEN substr(f[{F_TS}], 6, 1) = '/' THEN 'A' ELSE 'B' END
                                  WHEN 'C' THEN 'C' ELSE 'bare' END || '"'
        || CASE WHEN env = 'E' AND len(root_keys) = {env_known_count}
                    THEN CASE WHEN len(root_keys) = 1 + (f[{F_TS}] IS NOT NULL)::INT THEN ''
                              ELSE ',"envelope":{{' || concat_ws(',', {env_pairs}) || '}}' END
                WHEN env = 'E' THEN coalesce(',"envelope":' || nullif(hs_rest(s, {
        sql_list(ENVELOPE_MAPPED["E"])
    }), '{{}}'), '')
                WHEN env = 'C' THEN coalesce(',"envelope":' || nullif(hs_rest(s, {
        sql_list(ENVELOPE_MAPPED["C"])
    }), '{{}}'), '')
                ELSE '' END
        || CASE WHEN NOT is_batch AND len(mk) = {
        msg_known_count
    } + CASE WHEN env = 'bare' THEN (tsj IS NOT NULL)::INT ELSE 0 END
                THEN ''
                ELSE coalesce(',"message":' || nullif(hs_rest({msg_json},
                    CASE WHEN is_batch THEN {sql_list((*BATCH_MAPPED, "items", "results"))}
                         ELSE {sql_list(MESSAGE_MAPPED)} END
                    || CASE WHEN env = 'bare' OR NOT hs_present(f[{
        F_TS
    }]) THEN ['timestamp'] ELSE [] END), '{{}}'), '')
                END
        || CASE WHEN is_batch THEN '' ELSE {_result_extra("rk", res_known_count, "flat", result_json)} END
        || '}}'
    END AS extra,
    source, source_position, reason, env
FROM o
"""
    return _unpack_f(query)


def _f_name(position: int) -> str:
    """The column that holds element `position` of the extracted list `f`."""
    for key, pos in F_MSG.items():
        if pos == position:
            return f"m_{key}"
    for key, pos in F_RES.items():
        if pos == position:
            return f"r_{key}"
    for key, pos in F_ENV.items():
        if pos == position:
            return f"e_{key}"
    return "env_ts"


def _unpack_f(query: str) -> str:
    """Read each element of `f` once, into its own column (a list element read costs as much as a
    JSON value; the query refers to some elements a dozen times)."""
    positions = range(1, F_ENV[ENVELOPE_KEPT[-1]] + 1)
    unpack = ", ".join(f"f[{i}] AS {_f_name(i)}" for i in positions)
    query = re.sub(r"\bf\[(\d+)\]", lambda m: _f_name(int(m.group(1))), query)
    query = query.replace("\ny AS (", f"\nu AS (\n    SELECT *, {unpack} FROM x\n),\ny AS (", 1)
    return query.replace("    FROM x\n),\nz AS (", "    FROM u\n),\nz AS (", 1)


def build_batch_query() -> str:
    """The statement that explodes batch lines (`batch_in`) into one record per item."""
    items = _by_env("json_extract(s, '{prefix}.items')")
    results = _by_env("json_extract(s, '{prefix}.results')")
    res_paths = sql_list([f'$."{k}"' for k in RESULT_MAPPED])
    res_known_count = " + ".join(f"(rf[{i + 1}] IS NOT NULL)::INT" for i in range(len(RESULT_MAPPED)))
    return f"""
WITH
a AS (
    SELECT idx, s, env, record_id, ts, day, service_id, endpoint_id, generation, msg_type, timing, extra,
        source, source_position, {items} AS items_json, {results} AS results_json
    FROM batch_in
),
b AS (
    SELECT *, from_json(items_json, '["JSON"]') AS items, from_json(results_json, '["JSON"]') AS results
    FROM a
),
c AS MATERIALIZED (
    SELECT *,
        CASE WHEN items IS NULL THEN 'batch: items is not an array but ' || hs_kind(items_json)
             WHEN results IS NULL THEN 'batch: results is not an array but ' || hs_kind(results_json)
             WHEN len(items) <> len(results)
                 THEN 'batch: ' || len(items) || ' items but ' || len(results) || ' results'
             END AS shape_reason
    FROM b
),
x AS (
    SELECT *, unnest(range(len(items))) AS k FROM c WHERE shape_reason IS NULL
),
y AS (
    SELECT *, items[k + 1] AS item, results[k + 1] AS res FROM x
),
z AS (
    SELECT *,
        json_extract(item, ['$.features', '$.context']) AS itf,
        json_extract(res, {res_paths}) AS rf,
        CASE WHEN left(res, 1) = '{{' THEN json_keys(res) END AS rk
    FROM y
),
w AS MATERIALIZED (
    SELECT *,
        CASE WHEN hs_present(rf[2]) AND left(rf[2], 1) = '{{'
             THEN json_transform(rf[2], '"MAP(VARCHAR, DOUBLE)"') END AS pm,
        NOT hs_present(rf[2]) AND rk IS NOT NULL AND hs_has_flat(rk) AS flat
    FROM z
),
v AS MATERIALIZED (
    SELECT *,
        CASE WHEN left(item, 1) <> '{{' THEN 'batch: item ' || k || ' is not a JSON object'
             WHEN hs_present(itf[1]) AND left(itf[1], 1) <> '{{'
                 THEN 'batch: features of item ' || k || ' is not a JSON object'
             ELSE 'batch: item ' || k || ': ' || hs_result_problem(
                 hs_present(res), left(res, 1) = '{{', hs_kind(res), rf[2], pm, rf[3], rf[4],
                 flat AND list_bool_or(list_transform(map_values(hs_flat_probas(res)), lambda v: v IS NULL)))
             END AS item_reason
    FROM w
),
bad AS (
    SELECT idx, arg_min(item_reason, k) AS reason FROM v WHERE item_reason IS NOT NULL GROUP BY idx
)
SELECT * EXCLUDE (k) FROM (
SELECT 0 AS kind, idx, k, record_id || '-' || k AS record_id,
    ts, day, service_id, endpoint_id, generation, msg_type,
    CASE WHEN hs_present(itf[1]) THEN itf[1] END AS features,
    CASE WHEN hs_present(itf[2]) THEN itf[2] END AS context,
    {_record_columns("rf[1]", "rf[2]", "pm", "flat", "res", "rf[3]", "rf[4]", "rf[5]")},
    timing,
    left(extra, -1)
    || {_result_extra("rk", res_known_count, "flat", "res")}
    || CASE WHEN len(json_keys(item)) = (itf[1] IS NOT NULL)::INT + (itf[2] IS NOT NULL)::INT THEN ''
            ELSE coalesce(',"item":' || nullif(hs_rest(item, {sql_list(ITEM_MAPPED)}), '{{}}'), '') END
    || '}}' AS extra,
    source, source_position, NULL AS reason
FROM v ANTI JOIN bad USING (idx)
UNION ALL
SELECT 1, idx, -1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, source, source_position, shape_reason
FROM c WHERE shape_reason IS NOT NULL
UNION ALL
SELECT 1, bad.idx, -1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, c.source, c.source_position, bad.reason
FROM bad JOIN c USING (idx)
) ORDER BY idx, k
"""


LINES_QUERY = build_lines_query()
BATCH_QUERY = build_batch_query()
