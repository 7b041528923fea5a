/* Strict JSON scanning: validation, and copies in the canonical text DuckDB's json_extract writes. */
#include "json_scan.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64
#define MAX_NUMBER_TEXT 320

int buf_reserve(Buf *b, size_t extra) {
    if (b->failed) return 0;
    if (b->len + extra <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = 1;
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

void buf_put(Buf *b, const void *src, size_t n) {
    if (n == 0 || !buf_reserve(b, n)) return;
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

void buf_byte(Buf *b, char c) {
    if (!buf_reserve(b, 1)) return;
    b->p[b->len++] = c;
}

void buf_free(Buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static inline int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Bytes that end the plain run of a string: the quote, a backslash, and control characters. */
static unsigned char STRING_STOP[256];

void json_init(void) {
    for (int c = 0; c < 0x20; c++) STRING_STOP[c] = 1;
    STRING_STOP['"'] = 1;
    STRING_STOP['\\'] = 1;
}

const char *json_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static inline const char *ws_mark(const char *p, const char *end, int *dirty) {
    const char *q = json_ws(p, end);
    if (q != p) *dirty = 1;
    return q;
}

const char *json_number(const char *p, const char *end, Num *n) {
    memset(n, 0, sizeof *n);
    n->start = p;
    if (p < end && *p == '-') {
        n->neg = 1;
        p++;
    }
    if (p >= end) return NULL;
    n->int_s = p;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && is_digit(*p)) p++;
    } else {
        return NULL;
    }
    n->int_e = n->frac_s = n->frac_e = p;
    if (p < end && *p == '.') {
        p++;
        n->frac_s = p;
        while (p < end && is_digit(*p)) p++;
        if (p == n->frac_s) return NULL;
        n->frac_e = p;
        n->has_frac = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        n->has_exp = 1;
        int negative = 0;
        if (p < end && (*p == '+' || *p == '-')) negative = *p++ == '-';
        const char *digits = p;
        long value = 0;
        while (p < end && is_digit(*p)) {
            if (p - digits < 5) value = value * 10 + (*p - '0');
            p++;
        }
        if (p == digits) return NULL;
        n->exp_huge = p - digits > 5;
        n->exp = negative ? -value : value;
    }
    n->end = p;
    return p;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The string at p (which is '"'): validated, and copied as is when out is set (no escape allowed then). */
static const char *string(const char *p, const char *end, Buf *out, int *dirty) {
    const char *q = p + 1;
    for (;;) {
        while (q < end && !STRING_STOP[(unsigned char)*q]) q++;
        if (q >= end || (unsigned char)*q < 0x20) return NULL;
        if (*q == '"') break;
        if (out) return NULL; /* an escape: DuckDB rewrites it; the SQL parser handles this line */
        *dirty = 1;
        q++;
        if (q >= end) return NULL;
        switch (*q) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            q++;
            break;
        case 'u': {
            if (end - q < 5) return NULL;
            int code = 0;
            for (int i = 1; i <= 4; i++) {
                int h = hex_value(q[i]);
                if (h < 0) return NULL;
                code = code * 16 + h;
            }
            if (code >= 0xD800 && code <= 0xDFFF) return NULL; /* surrogates: left to the SQL parser */
            q += 5;
            break;
        }
        default:
            return NULL;
        }
    }
    if (out) buf_put(out, p, (size_t)(q + 1 - p));
    return q + 1;
}

static const char *literal(const char *p, const char *end, const char *word, size_t len, Buf *out) {
    if ((size_t)(end - p) < len || memcmp(p, word, len) != 0) return NULL;
    if (out) buf_put(out, word, len);
    return p + len;
}

/* Whether the number is already written as yyjson would write it (so a copy can keep its text). */
static int canonical_number(const Num *n) {
    if (!n->has_frac && !n->has_exp) return !(n->neg && n->int_e - n->int_s == 1 && *n->int_s == '0');
    if (n->has_exp) return 0;
    ptrdiff_t n_int = n->int_e - n->int_s, n_frac = n->frac_e - n->frac_s;
    if (n_frac > 1 && n->frac_e[-1] == '0') return 0; /* 1.50 is written 1.5 */
    if (n_int + n_frac > 15 || n_int > 15) return 0;    /* the shortest digits need working out */
    if (n_int == 1 && *n->int_s == '0') {
        /* 0.000001 stays positional, 0.0000001 is written 1e-7 */
        const char *q = n->frac_s;
        while (q < n->frac_e && *q == '0') q++;
        if (q == n->frac_e) return n_frac == 1; /* 0.0 (and -0.0) as written; 0.00 is not */
        return q - n->frac_s < 6;
    }
    return 1;
}

/* Validates (out NULL: setting *dirty when a copy could not keep the text: whitespace, an escape, a
   number yyjson writes differently) or copies canonically (out set) the value at p. */
static const char *value(const char *p, const char *end, Buf *out, int depth, int *dirty) {
    if (depth > MAX_DEPTH) return NULL;
    p = json_ws(p, end);
    if (p >= end) return NULL;
    switch (*p) {
    case '{':
    case '[': {
        char close = *p == '{' ? '}' : ']';
        int object = *p == '{';
        if (out) buf_byte(out, *p);
        p = ws_mark(p + 1, end, dirty);
        if (p < end && *p == close) {
            if (out) buf_byte(out, close);
            return p + 1;
        }
        for (;;) {
            if (object) {
                if (p >= end || *p != '"') return NULL;
                p = string(p, end, out, dirty);
                if (!p) return NULL;
                p = ws_mark(p, end, dirty);
                if (p >= end || *p != ':') return NULL;
                if (out) buf_byte(out, ':');
                p = ws_mark(p + 1, end, dirty);
            }
            p = value(p, end, out, depth + 1, dirty);
            if (!p) return NULL;
            p = ws_mark(p, end, dirty);
            if (p >= end) return NULL;
            if (*p == ',') {
                if (out) buf_byte(out, ',');
                p = ws_mark(p + 1, end, dirty);
                continue;
            }
            if (*p != close) return NULL;
            if (out) buf_byte(out, close);
            return p + 1;
        }
    }
    case '"':
        return string(p, end, out, dirty);
    case 't':
        return literal(p, end, "true", 4, out);
    case 'f':
        return literal(p, end, "false", 5, out);
    case 'n':
        return literal(p, end, "null", 4, out);
    default: {
        Num n;
        const char *q = json_number(p, end, &n);
        if (!q) return NULL;
        if (out) {
            if (!json_write_number(&n, out)) return NULL;
        } else if (!canonical_number(&n)) {
            *dirty = 1;
        }
        return q;
    }
    }
}

const char *json_skip(const char *p, const char *end, int depth) {
    int dirty = 0;
    return value(p, end, NULL, depth, &dirty);
}

const char *json_copy(const char *p, const char *end, Buf *out, int depth) {
    /* validate first: a value already in canonical form (the common case) is copied in one piece */
    int dirty = 0;
    const char *after = value(p, end, NULL, depth, &dirty);
    if (!after) return NULL;
    if (!dirty) {
        buf_put(out, p, (size_t)(after - p));
        return after;
    }
    return value(p, end, out, depth, &dirty);
}

int json_number_value(const Num *n, double *result) {
    size_t len = (size_t)(n->end - n->start);
    if (len >= MAX_NUMBER_TEXT) return 0;
    char text[MAX_NUMBER_TEXT];
    memcpy(text, n->start, len);
    text[len] = 0;
    *result = strtod(text, NULL);
    /* an integer zero is 0 for DuckDB, also when written -0 (a double -0.0 keeps its sign) */
    if (*result == 0 && !n->has_frac && !n->has_exp) *result = 0.0;
    return isfinite(*result);
}

/* Writes digits D (k of them, no leading or trailing zero) times 10^E, the way yyjson lays a double out:
   positional notation when -6 <= E < 21 (always with a fraction, "100.0"), else "d.ddde-7" / "1e21". */
static void layout(int neg, const char *digits, int k, long e, Buf *out) {
    if (neg) buf_byte(out, '-');
    if (e >= -6 && e < 21) {
        if (e >= 0) {
            int whole = (int)e + 1;
            if (k <= whole) {
                buf_put(out, digits, (size_t)k);
                for (int i = k; i < whole; i++) buf_byte(out, '0');
                buf_put(out, ".0", 2);
            } else {
                buf_put(out, digits, (size_t)whole);
                buf_byte(out, '.');
                buf_put(out, digits + whole, (size_t)(k - whole));
            }
        } else {
            buf_put(out, "0.", 2);
            for (long i = 0; i < -e - 1; i++) buf_byte(out, '0');
            buf_put(out, digits, (size_t)k);
        }
        return;
    }
    buf_byte(out, digits[0]);
    if (k > 1) {
        buf_byte(out, '.');
        buf_put(out, digits + 1, (size_t)(k - 1));
    }
    char exponent[16];
    int len = snprintf(exponent, sizeof exponent, "e%ld", e);
    buf_put(out, exponent, (size_t)len);
}

/* The shortest digits that read back as `value` (|value| normal, not a power of two), from printf's
   correctly rounded forms with 15, 16 and 17 significant digits; 0 if none applies. */
static int shortest(double value, char *digits, int *k, long *e) {
    char text[40];
    for (int precision = 14; precision <= 16; precision++) {
        snprintf(text, sizeof text, "%.*e", precision, fabs(value));
        if (strtod(text, NULL) != fabs(value)) continue;
        /* text is d.dddde[+-]XX */
        int n = 0;
        digits[n++] = text[0];
        const char *p = text + 2;
        while (*p != 'e') digits[n++] = *p++;
        while (n > 1 && digits[n - 1] == '0') n--;
        *k = n;
        *e = strtol(p + 1, NULL, 10);
        return 1;
    }
    return 0;
}

int json_write_number(const Num *n, Buf *out) {
    if (!n->has_frac && !n->has_exp) {
        /* an integer is kept as written (yyjson keeps big ones as raw text); "-0" reads as 0 */
        if (n->neg && n->int_e - n->int_s == 1 && *n->int_s == '0') {
            buf_byte(out, '0');
        } else {
            buf_put(out, n->start, (size_t)(n->end - n->start));
        }
        return 1;
    }
    if (n->exp_huge) return 0;
    size_t n_int = (size_t)(n->int_e - n->int_s), n_frac = (size_t)(n->frac_e - n->frac_s);
    if (n_int + n_frac >= MAX_NUMBER_TEXT) return 0;
    char all[MAX_NUMBER_TEXT];
    memcpy(all, n->int_s, n_int);
    memcpy(all + n_int, n->frac_s, n_frac);
    int total = (int)(n_int + n_frac), first = 0, last = total - 1;
    while (first < total && all[first] == '0') first++;
    if (first == total) { /* zero: a double zero keeps its sign */
        buf_put(out, n->neg ? "-0.0" : "0.0", n->neg ? 4 : 3);
        return 1;
    }
    while (all[last] == '0') last--;
    int k = last - first + 1;
    long e = (long)n_int + n->exp - first - 1;
    if (e > 307 || e < -307) return 0; /* near overflow or subnormal: left to the SQL parser */
    if (k <= 15) {
        /* at most 15 significant digits: distinct such decimals are distinct doubles, so these digits
           are the shortest that read back, the ones yyjson prints */
        layout(n->neg, all + first, k, e, out);
        return 1;
    }
    double value;
    if (!json_number_value(n, &value) || value == 0) return 0;
    int exp2;
    if (frexp(value, &exp2) == (value < 0 ? -0.5 : 0.5)) return 0; /* a power of two: uneven gaps */
    char digits[24];
    long e10;
    if (!shortest(value, digits, &k, &e10)) return 0;
    layout(value < 0, digits, k, e10, out);
    return 1;
}
