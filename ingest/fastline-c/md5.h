/* MD5 (RFC 1321) of a byte string, as 32 lowercase hex digits: the record_id hash. */
#ifndef HINDSIGHT_MD5_H
#define HINDSIGHT_MD5_H

#include <stddef.h>

/* Fills the 64 round constants; call once before md5_hex. */
void md5_init_constants(void);

/* Writes the 32 hex digits of MD5(data[0..len)) to out (no terminating NUL). */
void md5_hex(const unsigned char *data, size_t len, char out[32]);

#endif
