/* MD5 (RFC 1321): the digest hindsight's record_id is made of (see ingest/record_id.py). */
#include "md5.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static uint32_t K[64];
static const unsigned char SHIFT[64] = {
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
    5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
};

void md5_init_constants(void) {
    /* K[i] = floor(|sin(i + 1)| * 2^32), the RFC's table; exact in IEEE double */
    for (int i = 0; i < 64; i++) {
        K[i] = (uint32_t)floor(fabs(sin((double)(i + 1))) * 4294967296.0);
    }
}

static inline uint32_t rotl(uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

static inline uint32_t load_le(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* One round step: a = b + ((a + f(b, c, d) + m[g] + K[i]) <<< s), for the four round functions. */
#define F1(b, c, d) (((b) & (c)) | (~(b) & (d)))
#define F2(b, c, d) (((d) & (b)) | (~(d) & (c)))
#define F3(b, c, d) ((b) ^ (c) ^ (d))
#define F4(b, c, d) ((c) ^ ((b) | ~(d)))
#define STEP(F, a, b, c, d, g, i) (a) = (b) + rotl((a) + F((b), (c), (d)) + m[(g)] + K[(i)], SHIFT[(i)])

static void block(uint32_t state[4], const unsigned char *p) {
    uint32_t m[16];
    for (int i = 0; i < 16; i++) m[i] = load_le(p + 4 * i);
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    /* four steps per line, rotating the roles of a, b, c, d; g is the message word of step i */
    for (int i = 0; i < 16; i += 4) {
        STEP(F1, a, b, c, d, i, i);
        STEP(F1, d, a, b, c, i + 1, i + 1);
        STEP(F1, c, d, a, b, i + 2, i + 2);
        STEP(F1, b, c, d, a, i + 3, i + 3);
    }
    for (int i = 16; i < 32; i += 4) {
        STEP(F2, a, b, c, d, (5 * i + 1) & 15, i);
        STEP(F2, d, a, b, c, (5 * i + 6) & 15, i + 1);
        STEP(F2, c, d, a, b, (5 * i + 11) & 15, i + 2);
        STEP(F2, b, c, d, a, (5 * i + 16) & 15, i + 3);
    }
    for (int i = 32; i < 48; i += 4) {
        STEP(F3, a, b, c, d, (3 * i + 5) & 15, i);
        STEP(F3, d, a, b, c, (3 * i + 8) & 15, i + 1);
        STEP(F3, c, d, a, b, (3 * i + 11) & 15, i + 2);
        STEP(F3, b, c, d, a, (3 * i + 14) & 15, i + 3);
    }
    for (int i = 48; i < 64; i += 4) {
        STEP(F4, a, b, c, d, (7 * i) & 15, i);
        STEP(F4, d, a, b, c, (7 * i + 7) & 15, i + 1);
        STEP(F4, c, d, a, b, (7 * i + 14) & 15, i + 2);
        STEP(F4, b, c, d, a, (7 * i + 21) & 15, i + 3);
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
}

void md5_hex(const unsigned char *data, size_t len, char out[32]) {
    static const char HEX[] = "0123456789abcdef";
    uint32_t state[4] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u};
    size_t whole = len & ~(size_t)63;
    for (size_t i = 0; i < whole; i += 64) block(state, data + i);
    /* the tail: the rest, a 0x80 byte, zeros, then the bit length (little-endian), in one or two blocks */
    unsigned char tail[128];
    size_t rest = len - whole;
    memcpy(tail, data + whole, rest);
    tail[rest] = 0x80;
    size_t total = rest + 1 + 8 <= 64 ? 64 : 128;
    memset(tail + rest + 1, 0, total - rest - 1);
    uint64_t bits = (uint64_t)len * 8u;
    for (int i = 0; i < 8; i++) tail[total - 8 + i] = (unsigned char)(bits >> (8 * i));
    block(state, tail);
    if (total == 128) block(state, tail + 64);
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 4; j++) {
            unsigned char byte = (unsigned char)(state[i] >> (8 * j));
            out[8 * i + 2 * j] = HEX[byte >> 4];
            out[8 * i + 2 * j + 1] = HEX[byte & 15];
        }
    }
}
