/* Strict JSON scanning for the line parser: validate a value, or copy it in DuckDB's canonical text. */
#ifndef HINDSIGHT_JSON_SCAN_H
#define HINDSIGHT_JSON_SCAN_H

#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer; `failed` is set once an allocation failed (later writes are dropped). */
typedef struct {
    char *p;
    size_t len;
    size_t cap;
    int failed;
} Buf;

int buf_reserve(Buf *b, size_t extra);
void buf_put(Buf *b, const void *src, size_t n);
void buf_byte(Buf *b, char c);
void buf_free(Buf *b);

/* One JSON number as written: sign, integer digits [int_s, int_e), fraction digits [frac_s, frac_e)
   (empty when absent), and the exponent (0 when absent; `exp_huge` when it has more than 5 digits). */
typedef struct {
    const char *start;
    const char *end;
    int neg;
    const char *int_s, *int_e, *frac_s, *frac_e;
    int has_frac, has_exp, exp_huge;
    long exp;
} Num;

/* Fills the scanner's tables; call once before anything else. */
void json_init(void);

/* The first non-whitespace byte at or after p (JSON whitespace only). */
const char *json_ws(const char *p, const char *end);

/* Scans one number at p into *n; returns the byte after it, or NULL if it is not a JSON number. */
const char *json_number(const char *p, const char *end, Num *n);

/* Validates one JSON value at p (strict RFC 8259; escapes checked, lone surrogates refused, nesting at
   most 64 deep); returns the byte after it or NULL. */
const char *json_skip(const char *p, const char *end, int depth);

/* Copies the value at p to out as DuckDB's json_extract writes it (no whitespace, numbers re-formatted
   as yyjson does); returns the byte after it, or NULL when the value is invalid or holds text this copy
   cannot reproduce exactly (a string with an escape, an exotic number): the caller then falls back. */
const char *json_copy(const char *p, const char *end, Buf *out, int depth);

/* Writes a number in canonical form; 0 when it cannot (the caller falls back). */
int json_write_number(const Num *n, Buf *out);

/* The number's value as a correctly rounded double; 0 if it cannot be read (too long). */
int json_number_value(const Num *n, double *value);

#endif
