/* rng: seeded random numbers. Every random draw in loralab comes from an Rng passed in by the
 * caller, so a run is a function of its seed (and thread count, for the BLAS paths).
 *
 * Rng is xoshiro256** (Blackman & Vigna 2018) seeded through splitmix64. Mt19937 is the standard
 * 32-bit Mersenne Twister, kept to regenerate VeRA projections exactly as PyTorch's CPU generator
 * does (peft-spec.md section 3.1). */
#ifndef LL_RNG_H
#define LL_RNG_H

#include <stdint.h>
#include <stddef.h>

typedef struct {
    uint64_t s[4];
} Rng;

void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
float rng_uniform(Rng *r);                 /* [0, 1) with 24 random bits */
float rng_normal(Rng *r);                  /* N(0, 1), Box-Muller */
uint32_t rng_below(Rng *r, uint32_t n);    /* uniform in [0, n), unbiased */
/* A child stream: a seed derived from (seed, stream id), so that parts of a run (init, data order,
 * dropout) draw from independent streams and changing one does not shift the others. */
uint64_t rng_derive(uint64_t seed, uint64_t stream);
void rng_fill_normal(Rng *r, float *x, size_t n, float std);
void rng_fill_uniform(Rng *r, float *x, size_t n, float lo, float hi);

typedef struct {
    uint32_t mt[624];
    int idx;
} Mt19937;

void mt_seed(Mt19937 *m, uint32_t seed);
uint32_t mt_next(Mt19937 *m);
/* torch's CPU uniform_(lo, hi) on float32: one 32-bit draw per element, low 24 bits. */
void mt_fill_uniform_torch(Mt19937 *m, float *x, size_t n, float lo, float hi);

#endif
