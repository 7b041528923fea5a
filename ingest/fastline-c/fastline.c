/* hindsight._fastline: one-pass parse of the common DSS query-log line into column buffers.

The common line is an envelope A or B event (root keys among timestamp, message, logger, topic, severity,
mdc, callTime) holding one prediction query whose keys are all known. Such a line is parsed here in one
pass; a line of another logger, topic or msgType is reported as skipped; every other line (bad JSON,
batches, unknown keys, escapes in copied text, unusual numbers or timestamps, ...) is marked for the
DuckDB SQL parser, which stays the reference: for each line it accepts, this parser must give exactly the
columns the SQL parser gives (tests/ingest/test_fastline.py compares both).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "json_scan.h"
#include "md5.h"

static locale_t C_NUMBERS; /* the "C" locale, for the numbers in JSON */

#define STATUS_RECORD 0
#define STATUS_SKIP 2
#define STATUS_FALLBACK 255
#define MAX_FLAT 64
#define MAX_PROBAS 256 /* classes in one probas object; more are left to SQL (the duplicate check is quadratic) */

static const char QUERY_LOGGER[] = "dku.apinode.audit.queries";
static const char QUERY_TOPIC[] = "apinode-query";
static const char PREDICTION_MSG_TYPE[] = "prediction-query";

/* ---- output columns ------------------------------------------------------------------------------ */

enum {
    S_RECORD_ID,
    S_SERVICE_ID,
    S_ENDPOINT_ID,
    S_GENERATION,
    S_MSG_TYPE,
    S_FEATURES,
    S_CONTEXT,
    S_PREDICTION,
    S_IGNORE_REASON,
    S_TIMING,
    S_EXTRA,
    S_PROBA_KEYS,
    N_STRINGS
};
static const char *const STRING_NAMES[N_STRINGS] = {
    "record_id", "service_id", "endpoint_id", "generation", "msg_type", "features",
    "context", "prediction", "ignore_reason", "timing", "extra", "proba_keys",
};

enum {
    F_ROW,          /* int64: the line's index in the input */
    F_TS,           /* int64: microseconds since the epoch, UTC */
    F_PRED_VALUE,   /* double */
    F_PRED_VALID,   /* uint8 */
    F_PROBAS_OFF,   /* int32: offsets into the proba keys/values, one more than rows */
    F_PROBAS_VALID, /* uint8 */
    F_PROBA_VALUES, /* double */
    F_PCT,          /* int32 */
    F_PCT_VALID,    /* uint8 */
    F_IGNORED,      /* uint8 */
    N_FIXED
};
static const char *const FIXED_NAMES[N_FIXED] = {
    "row", "ts", "prediction_value", "prediction_value_valid", "probas_offsets", "probas_valid",
    "proba_values", "proba_percentile", "proba_percentile_valid", "ignored",
};

typedef struct {
    Buf offsets; /* int32, rows + 1 */
    Buf data;
    Buf valid; /* uint8 per row */
} StrCol;

typedef struct {
    StrCol str[N_STRINGS];
    Buf fixed[N_FIXED];
    Buf status; /* uint8 per input line */
    int64_t rows;
    int64_t proba_entries;
} Out;

/* Every buffer's length when a line starts, to drop what it wrote if it falls back after all. */
typedef struct {
    size_t str[N_STRINGS][3];
    size_t fixed[N_FIXED];
    int64_t rows;
    int64_t proba_entries;
} Mark;

static void mark(const Out *o, Mark *m) {
    for (int i = 0; i < N_STRINGS; i++) {
        m->str[i][0] = o->str[i].offsets.len;
        m->str[i][1] = o->str[i].data.len;
        m->str[i][2] = o->str[i].valid.len;
    }
    for (int i = 0; i < N_FIXED; i++) m->fixed[i] = o->fixed[i].len;
    m->rows = o->rows;
    m->proba_entries = o->proba_entries;
}

static void rollback(Out *o, const Mark *m) {
    for (int i = 0; i < N_STRINGS; i++) {
        o->str[i].offsets.len = m->str[i][0];
        o->str[i].data.len = m->str[i][1];
        o->str[i].valid.len = m->str[i][2];
    }
    for (int i = 0; i < N_FIXED; i++) o->fixed[i].len = m->fixed[i];
    o->rows = m->rows;
    o->proba_entries = m->proba_entries;
}

static int out_failed(const Out *o) {
    for (int i = 0; i < N_STRINGS; i++) {
        if (o->str[i].offsets.failed || o->str[i].data.failed || o->str[i].valid.failed) return 1;
    }
    for (int i = 0; i < N_FIXED; i++) {
        if (o->fixed[i].failed) return 1;
    }
    return o->status.failed;
}

static void out_free(Out *o) {
    for (int i = 0; i < N_STRINGS; i++) {
        buf_free(&o->str[i].offsets);
        buf_free(&o->str[i].data);
        buf_free(&o->str[i].valid);
    }
    for (int i = 0; i < N_FIXED; i++) buf_free(&o->fixed[i]);
    buf_free(&o->status);
}

static void put_i32(Buf *b, int32_t v) { buf_put(b, &v, sizeof v); }
static void put_i64(Buf *b, int64_t v) { buf_put(b, &v, sizeof v); }
static void put_f64(Buf *b, double v) { buf_put(b, &v, sizeof v); }

/* Ends the current value of a string column (its bytes already appended to data). */
static int str_end(StrCol *c, int valid) {
    if (c->data.len > INT32_MAX) return 0;
    put_i32(&c->offsets, (int32_t)c->data.len);
    buf_byte(&c->valid, (char)valid);
    return 1;
}

/* ---- the line's structure ------------------------------------------------------------------------ */

typedef struct {
    const char *s; /* first byte of the value; NULL when the key is absent */
    const char *e; /* byte after the value */
} Span;

static inline int present(Span v) { return v.s != NULL && *v.s != 'n'; } /* neither absent nor null */

typedef struct {
    const char *name;
    size_t len;
} Key;

#define KEY(text) {text, sizeof(text) - 1}

static const Key ROOT_KEYS[] = {KEY("timestamp"), KEY("message"), KEY("logger"), KEY("topic"),
                                KEY("severity"),  KEY("mdc"),     KEY("callTime")};
enum { R_TIMESTAMP, R_MESSAGE, R_LOGGER, R_TOPIC, R_SEVERITY, R_MDC, R_CALLTIME, N_ROOT };
/* The envelope keys that go to extra.envelope, in the SQL parser's order (ENVELOPE_KEPT). */
static const int ENVELOPE_KEPT[] = {R_LOGGER, R_TOPIC, R_SEVERITY, R_MDC, R_CALLTIME};

static const Key MESSAGE_KEYS[] = {KEY("msgType"), KEY("serviceId"), KEY("endpointId"),
                                   KEY("serviceGenerationId"), KEY("features"), KEY("context"),
                                   KEY("timing"), KEY("result"), KEY("items"), KEY("results")};
enum { M_MSG_TYPE, M_SERVICE, M_ENDPOINT, M_GENERATION, M_FEATURES, M_CONTEXT, M_TIMING, M_RESULT,
       M_ITEMS, M_RESULTS, N_MESSAGE };

static const Key RESULT_KEYS[] = {KEY("prediction"), KEY("probas"), KEY("probaPercentile"), KEY("ignored"),
                                  KEY("ignoreReason")};
enum { X_PREDICTION, X_PROBAS, X_PERCENTILE, X_IGNORED, X_IGNORE_REASON, N_RESULT };

static const Key ITEM_KEYS[] = {KEY("features"), KEY("context")};
enum { I_FEATURES, I_CONTEXT, N_ITEM };

typedef struct {
    Span key;
    Span value;
} Member;

/* One line's walk: the spans of the values read and what the value handlers did. The handlers parse
   some values in place during the single pass (the message, the result, probas) and copy the JSON
   columns straight into their column buffers; whatever they wrote is dropped if the line is not a
   record after all. */
typedef struct {
    Out *o;
    Span root[N_ROOT];
    Span msg[N_MESSAGE];
    Span res[N_RESULT];
    Member flat[MAX_FLAT]; /* result keys other than the known ones: flat proba_<class> keys, we hope */
    int n_flat;
    int msg_unknown; /* message keys not known */
    int res_unknown; /* result keys beyond MAX_FLAT */
    int msg_walked;  /* the message was an object, walked member by member */
    int probas_walked;
    int64_t probas_first; /* proba_entries when the probas object began */
    size_t timing_start;  /* where the message's timing text starts in its column's data */
    int64_t n_items;      /* batch: items walked (their features and context columns complete) */
    int64_t n_results;    /* batch: results walked (their result columns complete) */
} Walk;

typedef const char *(*Handler)(Walk *w, int key, const char *p, const char *end, int depth);

/* The key at p (a string without escape) into [*ks, *ke), then its colon: returns the first byte of
   the value, or NULL. */
static const char *member_key(const char *p, const char *end, const char **ks, const char **ke) {
    if (p >= end || *p != '"') return NULL;
    const char *q = p + 1;
    while (q < end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20) q++;
    if (q >= end || *q != '"') return NULL;
    *ks = p + 1;
    *ke = q;
    p = json_ws(q + 1, end);
    if (p >= end || *p != ':') return NULL;
    return json_ws(p + 1, end);
}

/* After a value inside an object or array: 1 with *p at the next member or element (past the comma),
   0 with *p past `close`, -1 on anything else. */
static int next_item(const char **p, const char *end, char close) {
    const char *q = json_ws(*p, end);
    if (q >= end) return -1;
    if (*q == ',') {
        *p = json_ws(q + 1, end);
        return 1;
    }
    if (*q != close) return -1;
    *p = q + 1;
    return 0;
}

/* Reads an object's members at p ('{'). Keys found in `keys` fill `spans` (a repeated known key fails);
   the values of the keys in `handled` (a bit per key) are read by `handler`, every other value is
   validated. Other keys are kept in `others` (up to `max_others`) then counted in *n_unknown. A key
   holding an escape fails. Returns the byte after the object, or NULL. */
static const char *members(Walk *w, const char *p, const char *end, int depth, const Key *keys, int n_keys,
                           Span *spans, uint32_t handled, Handler handler, Member *others, int max_others,
                           int *n_others, int *n_unknown) {
    for (int i = 0; i < n_keys; i++) spans[i].s = spans[i].e = NULL;
    if (p >= end || *p != '{') return NULL;
    p = json_ws(p + 1, end);
    if (p < end && *p == '}') return p + 1;
    for (;;) {
        const char *ks, *ke;
        const char *vs = member_key(p, end, &ks, &ke);
        if (!vs) return NULL;
        size_t klen = (size_t)(ke - ks);
        int found = -1;
        for (int i = 0; i < n_keys; i++) {
            if (keys[i].len == klen && memcmp(keys[i].name, ks, klen) == 0) {
                found = i;
                break;
            }
        }
        const char *ve;
        if (found >= 0) {
            if (spans[found].s) return NULL; /* repeated key: which value counts is DuckDB's choice */
            ve = (handled >> found) & 1 ? handler(w, found, vs, end, depth + 1) : json_skip(vs, end, depth + 1);
            if (!ve) return NULL;
            spans[found].s = vs;
            spans[found].e = ve;
        } else {
            ve = json_skip(vs, end, depth + 1);
            if (!ve) return NULL;
            if (others && *n_others < max_others) {
                others[*n_others].key.s = ks;
                others[*n_others].key.e = ke;
                others[*n_others].value.s = vs;
                others[*n_others].value.e = ve;
                (*n_others)++;
            } else {
                (*n_unknown)++;
            }
        }
        p = ve;
        int more = next_item(&p, end, '}');
        if (more <= 0) return more < 0 ? NULL : p;
    }
}

/* The text of a string value without its quotes (no escape inside: members/json_skip checked the
   syntax; an escape would need decoding) into *s, *len; 0 when the value is not such a string. */
static int plain_string(Span v, const char **s, size_t *len) {
    if (!v.s || *v.s != '"') return 0;
    if (memchr(v.s + 1, '\\', (size_t)(v.e - v.s - 2))) return 0;
    *s = v.s + 1;
    *len = (size_t)(v.e - v.s - 2);
    return 1;
}

static int equals(const char *s, size_t len, const char *word) {
    return len == strlen(word) && memcmp(s, word, len) == 0;
}

static int is_number_start(char c) { return c == '-' || (c >= '0' && c <= '9'); }

/* The number at p as a finite double into *value: returns the byte after it, or NULL when p holds
   another kind of value or a number that does not read as a finite double. */
static const char *read_number(const char *p, const char *end, double *value) {
    Num n;
    if (p >= end || !is_number_start(*p)) return NULL;
    p = json_number(p, end, &n);
    return p && json_number_value(&n, value) ? p : NULL;
}

/* Appends one probas entry (class name [ks, ke), value) to the map buffers. */
static int append_entry(Out *o, const char *ks, const char *ke, double value) {
    StrCol *keys = &o->str[S_PROBA_KEYS];
    buf_put(&keys->data, ks, (size_t)(ke - ks));
    if (!str_end(keys, 1)) return 0;
    put_f64(&o->fixed[F_PROBA_VALUES], value);
    o->proba_entries++;
    return 1;
}

/* probas, walked in place: each member a class name and a finite number, appended to the map buffers;
   a repeated class or another kind of value fails (the SQL parser decides about such a line). */
static const char *walk_probas(Walk *w, const char *p, const char *end, int depth) {
    Out *o = w->o;
    StrCol *keys = &o->str[S_PROBA_KEYS];
    w->probas_first = o->proba_entries;
    if (depth > 60) return NULL;
    p = json_ws(p + 1, end);
    if (p < end && *p == '}') {
        w->probas_walked = 1;
        return p + 1;
    }
    for (;;) {
        const char *ks, *ke;
        const char *vs = member_key(p, end, &ks, &ke);
        if (!vs) return NULL;
        size_t klen = (size_t)(ke - ks);
        if (o->proba_entries - w->probas_first >= MAX_PROBAS) return NULL;
        const int32_t *offsets = (const int32_t *)keys->offsets.p;
        int64_t last = (int64_t)(keys->offsets.len / sizeof(int32_t)) - 1;
        for (int64_t i = last - (o->proba_entries - w->probas_first); i < last; i++) {
            if ((size_t)(offsets[i + 1] - offsets[i]) == klen && memcmp(keys->data.p + offsets[i], ks, klen) == 0)
                return NULL;
        }
        double value;
        p = read_number(vs, end, &value);
        if (!p || !append_entry(o, ks, ke, value)) return NULL;
        int more = next_item(&p, end, '}');
        if (more < 0) return NULL;
        if (!more) {
            w->probas_walked = 1;
            return p;
        }
    }
}

static int emit_text(StrCol *c, Span v);
static int emit_result(Walk *w);

/* Resets the result part of the walk before a result object is read. */
static void reset_result(Walk *w) {
    for (int i = 0; i < N_RESULT; i++) w->res[i].s = w->res[i].e = NULL;
    w->n_flat = w->res_unknown = w->probas_walked = 0;
    w->probas_first = w->o->proba_entries;
}

/* Whether the result just read holds only known keys, or flat proba_<class> keys without probas. */
static int result_ok(const Walk *w);

static const char *result_value(Walk *w, int key, const char *p, const char *end, int depth) {
    (void)key; /* only probas is handled */
    if (p < end && *p == '{') return walk_probas(w, p, end, depth);
    return json_skip(p, end, depth);
}

static const char *walk_result(Walk *w, const char *p, const char *end, int depth) {
    reset_result(w);
    return members(w, p, end, depth, RESULT_KEYS, N_RESULT, w->res, 1u << X_PROBAS, result_value, w->flat,
                   MAX_FLAT, &w->n_flat, &w->res_unknown);
}

static const char *item_value(Walk *w, int key, const char *p, const char *end, int depth) {
    if (p < end && *p == 'n') return json_skip(p, end, depth);
    return json_copy(p, end, &w->o->str[key == I_FEATURES ? S_FEATURES : S_CONTEXT].data, depth);
}

/* A batch's `items` or `results` array, walked in place: each item's features and context, or each
   result's columns, are completed as they are read. Anything the SQL parser would quarantine (an item
   that is not an object, features that are not an object, a result with a problem) fails. */
static const char *walk_batch_array(Walk *w, int key, const char *p, const char *end, int depth) {
    if (p >= end || *p != '[' || depth > 60) return NULL;
    p = json_ws(p + 1, end);
    if (p < end && *p == ']') return p + 1;
    for (;;) {
        if (p >= end || *p != '{') return NULL;
        if (key == M_ITEMS) {
            Span item[N_ITEM];
            int unknown = 0;
            p = members(w, p, end, depth + 1, ITEM_KEYS, N_ITEM, item, 3u, item_value, NULL, 0, NULL, &unknown);
            if (!p || unknown || (present(item[I_FEATURES]) && *item[I_FEATURES].s != '{')) return NULL;
            if (!str_end(&w->o->str[S_FEATURES], present(item[I_FEATURES])) ||
                !str_end(&w->o->str[S_CONTEXT], present(item[I_CONTEXT])))
                return NULL;
            w->n_items++;
        } else {
            p = walk_result(w, p, end, depth + 1);
            if (!p || !result_ok(w) || !emit_result(w)) return NULL;
            w->n_results++;
        }
        int more = next_item(&p, end, ']');
        if (more <= 0) return more < 0 ? NULL : p;
    }
}

static const int COPIED[N_MESSAGE] = {[M_FEATURES] = S_FEATURES, [M_CONTEXT] = S_CONTEXT, [M_TIMING] = S_TIMING};

static const char *message_value(Walk *w, int key, const char *p, const char *end, int depth) {
    if (key == M_ITEMS || key == M_RESULTS) return walk_batch_array(w, key, p, end, depth);
    if (key == M_TIMING) w->timing_start = w->o->str[S_TIMING].data.len;
    if (key == M_RESULT) {
        if (p >= end || *p != '{') return json_skip(p, end, depth);
        return walk_result(w, p, end, depth);
    }
    /* features, context, timing: copied to their column (null is no value) */
    if (p < end && *p == 'n') return json_skip(p, end, depth);
    return json_copy(p, end, &w->o->str[COPIED[key]].data, depth);
}

static const char *root_value(Walk *w, int key, const char *p, const char *end, int depth) {
    (void)key; /* only the message is handled */
    if (p >= end || *p != '{') return json_skip(p, end, depth);
    w->msg_walked = 1;
    uint32_t handled = (1u << M_FEATURES) | (1u << M_CONTEXT) | (1u << M_TIMING) | (1u << M_RESULT) |
                       (1u << M_ITEMS) | (1u << M_RESULTS);
    return members(w, p, end, depth, MESSAGE_KEYS, N_MESSAGE, w->msg, handled, message_value, NULL, 0, NULL,
                   &w->msg_unknown);
}

/* ---- timestamps ---------------------------------------------------------------------------------- */

static int64_t days_from_civil(int64_t y, int m, int d) {
    /* days since 1970-01-01 of a proleptic Gregorian date (the era-based conversion) */
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const char *p, int n, int *value) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        v = v * 10 + (p[i] - '0');
    }
    *value = v;
    return 1;
}

static int days_in_month(int y, int m) {
    static const int DAYS[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : DAYS[m - 1];
}

/* "YYYY?MM?DD?HH:MM:SS.mmm" at p (separators `date_sep` and `time_sep`) into UTC-naive microseconds. */
static int date_time(const char *p, char date_sep, char time_sep, int64_t *micros) {
    int y, mo, d, h, mi, s, ms;
    if (p[4] != date_sep || p[7] != date_sep || p[10] != time_sep || p[13] != ':' || p[16] != ':' ||
        p[19] != '.')
        return 0;
    if (!digits(p, 4, &y) || !digits(p + 5, 2, &mo) || !digits(p + 8, 2, &d) || !digits(p + 11, 2, &h) ||
        !digits(p + 14, 2, &mi) || !digits(p + 17, 2, &s) || !digits(p + 20, 3, &ms))
        return 0;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59) return 0;
    *micros = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 * INT64_C(1000000) +
              (int64_t)s * 1000000 + (int64_t)ms * 1000;
    return 1;
}

/* The envelope timestamp: envelope A "YYYY/MM/DD-HH:MM:SS.mmmZ" (only when its zone is UTC) or B
   "YYYY-MM-DDTHH:MM:SS.mmm+hhmm"; *format is 'A' or 'B'. Other forms: 0 (the SQL parser reads them). */
static int timestamp(Span v, int a_is_utc, int64_t *micros, char *format) {
    const char *s;
    size_t len;
    if (!plain_string(v, &s, &len)) return 0;
    if (len == 24 && s[4] == '/' && s[23] == 'Z') {
        if (!a_is_utc || !date_time(s, '/', '-', micros)) return 0;
        *format = 'A';
        return 1;
    }
    if (len == 28 && s[4] == '-' && (s[23] == '+' || s[23] == '-')) {
        int oh, om;
        if (!date_time(s, '-', 'T', micros) || !digits(s + 24, 2, &oh) || !digits(s + 26, 2, &om) ||
            oh > 15 || om > 59)
            return 0;
        int64_t offset = ((int64_t)oh * 60 + om) * 60 * INT64_C(1000000);
        *micros += s[23] == '+' ? -offset : offset;
        *format = 'B';
        return 1;
    }
    return 0;
}

static int64_t TS_MIN, TS_MAX; /* the SQL parser's TS_RANGE, 1900-01-01 to 2199-12-31 23:59:59.999999 */

/* ---- emitting one record ------------------------------------------------------------------------- */

/* A text column from a string value (unquoted) or NULL for an absent/null value; 0 for other types. */
static int emit_text(StrCol *c, Span v) {
    if (!present(v)) return str_end(c, 0);
    const char *s;
    size_t len;
    if (!plain_string(v, &s, &len)) return 0;
    buf_put(&c->data, s, len);
    return str_end(c, 1);
}

static int emit_prediction(Out *o, Span v) {
    StrCol *c = &o->str[S_PREDICTION];
    double value = 0;
    int numeric = 0;
    if (!present(v)) {
        if (!str_end(c, 0)) return 0;
    } else if (*v.s == '"') {
        if (!emit_text(c, v)) return 0;
    } else if (*v.s == 't' || *v.s == 'f') {
        buf_put(&c->data, v.s, (size_t)(v.e - v.s));
        if (!str_end(c, 1)) return 0;
    } else if (is_number_start(*v.s)) {
        Num n;
        if (!json_number(v.s, v.e, &n) || !json_write_number(&n, &c->data) || !json_number_value(&n, &value))
            return 0;
        numeric = 1;
        if (!str_end(c, 1)) return 0;
    } else {
        return 0; /* an object or array: its text is DuckDB's cast */
    }
    put_f64(&o->fixed[F_PRED_VALUE], value);
    buf_byte(&o->fixed[F_PRED_VALID], (char)numeric);
    return 1;
}

static int same_key(Span a, Span b) {
    return a.e - a.s == b.e - b.s && memcmp(a.s, b.s, (size_t)(a.e - a.s)) == 0;
}

/* probas: the walked `probas` object, else the flat proba_<class> keys, else NULL. */
static int emit_probas(Walk *w) {
    Out *o = w->o;
    int valid = 1;
    if (!w->probas_walked) {
        for (int i = 0; i < w->n_flat; i++) { /* proba_<class>: the class is the key after "proba_" */
            double value;
            if (!read_number(w->flat[i].value.s, w->flat[i].value.e, &value) ||
                !append_entry(o, w->flat[i].key.s + 6, w->flat[i].key.e, value))
                return 0;
        }
        valid = w->n_flat > 0;
    }
    if (o->proba_entries > INT32_MAX) return 0;
    put_i32(&o->fixed[F_PROBAS_OFF], (int32_t)o->proba_entries);
    buf_byte(&o->fixed[F_PROBAS_VALID], (char)valid);
    return 1;
}

static int emit_percentile(Out *o, Span v) {
    int32_t value = 0;
    int valid = 0;
    if (present(v)) {
        double number;
        if (!read_number(v.s, v.e, &number)) return 0;
        double rounded = round(number); /* half away from zero, as DuckDB's round */
        if (rounded >= -2147483648.0 && rounded <= 2147483647.0) {
            value = (int32_t)rounded;
            valid = 1;
        }
    }
    put_i32(&o->fixed[F_PCT], value);
    buf_byte(&o->fixed[F_PCT_VALID], (char)valid);
    return 1;
}

static int emit_ignored(Out *o, Span v) {
    char value = 0;
    if (present(v)) {
        if (*v.s == 't') {
            value = 1;
        } else if (*v.s != 'f') {
            return 0;
        }
    }
    buf_byte(&o->fixed[F_IGNORED], value);
    return 1;
}

/* extra: {"format":"A"} plus, when the envelope has kept keys, "envelope":{...} in ENVELOPE_KEPT order. */
static int emit_extra(Out *o, const Span *root, char format) {
    StrCol *c = &o->str[S_EXTRA];
    buf_put(&c->data, "{\"format\":\"", 11);
    buf_byte(&c->data, format);
    buf_byte(&c->data, '"');
    int first = 1;
    for (size_t i = 0; i < sizeof ENVELOPE_KEPT / sizeof ENVELOPE_KEPT[0]; i++) {
        Span v = root[ENVELOPE_KEPT[i]];
        if (!v.s) continue;
        buf_put(&c->data, first ? ",\"envelope\":{\"" : ",\"", first ? 14 : 2);
        first = 0;
        buf_put(&c->data, ROOT_KEYS[ENVELOPE_KEPT[i]].name, ROOT_KEYS[ENVELOPE_KEPT[i]].len);
        buf_put(&c->data, "\":", 2);
        if (!json_copy(v.s, v.e, &c->data, 1)) return 0;
    }
    if (!first) buf_byte(&c->data, '}');
    buf_byte(&c->data, '}');
    return str_end(c, 1);
}

static int result_ok(const Walk *w) {
    if (w->res_unknown) return 0;
    for (int i = 0; i < w->n_flat; i++) { /* only flat proba_<class> keys, and only without probas */
        Span k = w->flat[i].key;
        if (k.e - k.s < 6 || memcmp(k.s, "proba_", 6) != 0 || memchr(k.s, ',', (size_t)(k.e - k.s)) ||
            present(w->res[X_PROBAS]))
            return 0;
        for (int j = 0; j < i; j++) {
            if (same_key(k, w->flat[j].key)) return 0;
        }
    }
    return !(present(w->res[X_PROBAS]) && !w->probas_walked);
}

/* The result columns (prediction to ignore_reason) of the result just read. */
static int emit_result(Walk *w) {
    Out *o = w->o;
    return emit_prediction(o, w->res[X_PREDICTION]) && emit_probas(w) && emit_percentile(o, w->res[X_PERCENTILE]) &&
           emit_ignored(o, w->res[X_IGNORED]) && emit_text(&o->str[S_IGNORE_REASON], w->res[X_IGNORE_REASON]);
}

/* The line-level columns of one record: the id (with `-item` in a batch), ts, the message's ids, timing
   (`again`: append another copy of the text walked first) and extra. */
static int emit_line_columns(Walk *w, const char *id, int64_t item, int64_t row, int64_t ts, char format) {
    Out *o = w->o;
    const Span *msg = w->msg;
    StrCol *ids = &o->str[S_RECORD_ID];
    buf_put(&ids->data, id, 32);
    if (item >= 0) {
        char suffix[24];
        int len = snprintf(suffix, sizeof suffix, "-%lld", (long long)item);
        buf_put(&ids->data, suffix, (size_t)len);
    }
    int timing = present(msg[M_TIMING]);
    if (timing && item > 0) { /* the first item's timing text is the walked copy; later items repeat it */
        StrCol *t = &o->str[S_TIMING];
        size_t first_end = (size_t)((const int32_t *)t->offsets.p)[t->offsets.len / sizeof(int32_t) - (size_t)item];
        size_t len = first_end - w->timing_start;
        if (!buf_reserve(&t->data, len)) return 0;
        memcpy(t->data.p + t->data.len, t->data.p + w->timing_start, len);
        t->data.len += len;
    }
    if (!(str_end(ids, 1) && emit_text(&o->str[S_SERVICE_ID], msg[M_SERVICE]) &&
          emit_text(&o->str[S_ENDPOINT_ID], msg[M_ENDPOINT]) && emit_text(&o->str[S_GENERATION], msg[M_GENERATION]) &&
          emit_text(&o->str[S_MSG_TYPE], msg[M_MSG_TYPE]) && str_end(&o->str[S_TIMING], timing) &&
          emit_extra(o, w->root, format)))
        return 0;
    put_i64(&o->fixed[F_ROW], row);
    put_i64(&o->fixed[F_TS], ts);
    o->rows++;
    return 1;
}

/* ---- one line ------------------------------------------------------------------------------------ */

/* Walks the line once and decides; a record's columns are completed here (see Walk). */
static int walk_line(Walk *w, const char *line, size_t len, int64_t row, int a_is_utc) {
    Out *o = w->o;
    const char *end = line + len;
    const char *p = json_ws(line, end);
    int none = 0;
    p = members(w, p, end, 0, ROOT_KEYS, N_ROOT, w->root, 1u << R_MESSAGE, root_value, NULL, 0, NULL, &none);
    if (!p || none || json_ws(p, end) != end) return STATUS_FALLBACK;
    const Span *root = w->root;
    if (!root[R_MESSAGE].s || !(root[R_LOGGER].s || root[R_SEVERITY].s)) return STATUS_FALLBACK;

    /* Lines of another logger or topic are skipped whatever their message holds. */
    const char *logger = NULL, *topic = NULL;
    size_t logger_len = 0, topic_len = 0;
    if (present(root[R_LOGGER]) && !plain_string(root[R_LOGGER], &logger, &logger_len)) return STATUS_FALLBACK;
    if (present(root[R_TOPIC]) && !plain_string(root[R_TOPIC], &topic, &topic_len)) return STATUS_FALLBACK;
    int query_source = logger && equals(logger, logger_len, QUERY_LOGGER);
    if (!query_source && !topic && logger) { /* no topic: the logger's last dot-separated part */
        topic = logger;
        topic_len = logger_len;
        for (size_t i = logger_len; i > 0; i--) {
            if (logger[i - 1] == '.') {
                topic = logger + i;
                topic_len = logger_len - i;
                break;
            }
        }
    }
    if (!query_source && !(topic && equals(topic, topic_len, QUERY_TOPIC))) return STATUS_SKIP;

    if (!w->msg_walked) return STATUS_FALLBACK; /* the message is not an object: quarantined */
    const Span *msg = w->msg;
    const char *msg_type = NULL;
    size_t msg_type_len = 0;
    if (present(msg[M_MSG_TYPE]) && !plain_string(msg[M_MSG_TYPE], &msg_type, &msg_type_len))
        return STATUS_FALLBACK;
    int batch = msg[M_ITEMS].s || msg[M_RESULTS].s;
    int prediction = msg_type ? equals(msg_type, msg_type_len, PREDICTION_MSG_TYPE)
                              : (msg[M_FEATURES].s || msg[M_RESULT].s || batch);
    if (!prediction) return STATUS_SKIP;
    if (w->msg_unknown) return STATUS_FALLBACK;

    int64_t ts;
    char format;
    if (!timestamp(root[R_TIMESTAMP], a_is_utc, &ts, &format) || ts < TS_MIN || ts > TS_MAX)
        return STATUS_FALLBACK;
    char id[32];
    if (batch) {
        /* items and results, both arrays of the same length, walked already; the message holds no
           single-record key (features, context, result: the SQL parser keeps those in extra) */
        if (!msg[M_ITEMS].s || !msg[M_RESULTS].s || msg[M_FEATURES].s || msg[M_CONTEXT].s || msg[M_RESULT].s ||
            *msg[M_ITEMS].s != '[' || *msg[M_RESULTS].s != '[' || w->n_items != w->n_results)
            return STATUS_FALLBACK;
        if (w->n_items == 0) return STATUS_SKIP; /* a batch of no item gives no record */
        md5_hex((const unsigned char *)line, len, id);
        for (int64_t k = 0; k < w->n_items; k++) {
            if (!emit_line_columns(w, id, k, row, ts, format)) return STATUS_FALLBACK;
        }
        return STATUS_RECORD;
    }
    if (present(msg[M_FEATURES]) && *msg[M_FEATURES].s != '{') return STATUS_FALLBACK;
    if (msg[M_RESULT].s) {
        if (*msg[M_RESULT].s != '{' || !result_ok(w)) return STATUS_FALLBACK;
    } else {
        reset_result(w);
    }
    md5_hex((const unsigned char *)line, len, id);
    int ok = str_end(&o->str[S_FEATURES], present(msg[M_FEATURES])) &&
             str_end(&o->str[S_CONTEXT], present(msg[M_CONTEXT])) && emit_result(w) &&
             emit_line_columns(w, id, -1, row, ts, format);
    return ok ? STATUS_RECORD : STATUS_FALLBACK;
}

/* Parses one line; returns its status, having appended one record to `o` when STATUS_RECORD. */
static int parse_line(Out *o, const char *line, size_t len, int64_t row, int a_is_utc) {
    Mark m;
    mark(o, &m);
    Walk w;
    w.o = o;
    w.msg_unknown = w.msg_walked = 0;
    w.timing_start = 0;
    w.n_items = w.n_results = 0;
    for (int i = 0; i < N_MESSAGE; i++) w.msg[i].s = w.msg[i].e = NULL;
    reset_result(&w);
    int status = walk_line(&w, line, len, row, a_is_utc);
    if (status != STATUS_RECORD) rollback(o, &m);
    return status;
}

/* ---- the Python function ------------------------------------------------------------------------- */

static PyObject *bytes_of(const Buf *b) { return PyBytes_FromStringAndSize(b->p ? b->p : "", (Py_ssize_t)b->len); }

static int put_item(PyObject *dict, const char *name, PyObject *value) {
    if (!value) return 0;
    int rc = PyDict_SetItemString(dict, name, value);
    Py_DECREF(value);
    return rc == 0;
}

static PyObject *result_dict(const Out *o) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    int ok = put_item(d, "status", bytes_of(&o->status)) && put_item(d, "rows", PyLong_FromLongLong(o->rows));
    for (int i = 0; ok && i < N_FIXED; i++) ok = put_item(d, FIXED_NAMES[i], bytes_of(&o->fixed[i]));
    for (int i = 0; ok && i < N_STRINGS; i++) {
        /* (offsets, data, valid) */
        ok = put_item(d, STRING_NAMES[i],
                      Py_BuildValue("(NNN)", bytes_of(&o->str[i].offsets), bytes_of(&o->str[i].data),
                                    bytes_of(&o->str[i].valid)));
    }
    if (!ok) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *parse(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data, offsets, eligible;
    Py_ssize_t first, n;
    int a_is_utc;
    if (!PyArg_ParseTuple(args, "y*y*nny*p", &data, &offsets, &first, &n, &eligible, &a_is_utc)) return NULL;
    PyObject *result = NULL;
    Out o;
    memset(&o, 0, sizeof o);
    /* rows [first, first + n] of the offsets must exist; compared without a product that could overflow */
    Py_ssize_t n_offsets = offsets.len / (Py_ssize_t)sizeof(int32_t);
    if (first < 0 || n < 0 || n_offsets < 1 || first > n_offsets - 1 - n || eligible.len < n) {
        PyErr_SetString(PyExc_ValueError, "offsets or eligibility buffer too short for the rows given");
        goto done;
    }
    const int32_t *off = (const int32_t *)offsets.buf + first;
    for (Py_ssize_t i = 0; i <= n; i++) {
        if (off[i] < 0 || off[i] > data.len || (i > 0 && off[i] < off[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "string offsets out of range");
            goto done;
        }
    }
    const char *base = (const char *)data.buf;
    const unsigned char *ok = (const unsigned char *)eligible.buf;
    for (int i = 0; i < N_STRINGS; i++) put_i32(&o.str[i].offsets, 0);
    put_i32(&o.fixed[F_PROBAS_OFF], 0);
    buf_reserve(&o.status, (size_t)n);
    Py_BEGIN_ALLOW_THREADS
    /* strtod and snprintf follow the thread's locale: read and write numbers the JSON way whatever the
       embedding process set (uselocale changes this thread only) */
    locale_t before = uselocale(C_NUMBERS);
    for (Py_ssize_t i = 0; i < n; i++) {
        int status = STATUS_FALLBACK;
        if (ok[i]) {
            /* the id and the parse see the line without its trailing newline characters */
            const char *line = base + off[i];
            size_t len = (size_t)(off[i + 1] - off[i]);
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
            status = parse_line(&o, line, len, i, a_is_utc);
        }
        buf_byte(&o.status, (char)status);
    }
    uselocale(before);
    Py_END_ALLOW_THREADS
    if (out_failed(&o)) {
        PyErr_NoMemory();
        goto done;
    }
    result = result_dict(&o);
done:
    out_free(&o);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&eligible);
    return result;
}

static PyObject *md5_hex_py(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    char out[32];
    md5_hex((const unsigned char *)data.buf, (size_t)data.len, out);
    PyBuffer_Release(&data);
    return PyUnicode_FromStringAndSize(out, 32);
}

static PyMethodDef METHODS[] = {
    {"parse", parse, METH_VARARGS,
     "parse(data, offsets, first, n, eligible, a_is_utc) -> dict of column buffers and per-line status"},
    {"md5_hex", md5_hex_py, METH_VARARGS, "md5_hex(data) -> the 32 hex digits of MD5(data)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_fastline", "One-pass DSS line parser.", -1, METHODS,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fastline(void) {
    C_NUMBERS = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (C_NUMBERS == (locale_t)0) return PyErr_NoMemory();
    md5_init_constants();
    json_init();
    TS_MIN = days_from_civil(1900, 1, 1) * 86400 * INT64_C(1000000);
    TS_MAX = days_from_civil(2200, 1, 1) * 86400 * INT64_C(1000000) - 1;
    PyObject *m = PyModule_Create(&MODULE);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "RECORD", STATUS_RECORD) < 0 || PyModule_AddIntConstant(m, "SKIP", STATUS_SKIP) < 0 ||
        PyModule_AddIntConstant(m, "FALLBACK", STATUS_FALLBACK) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
