/* Constants and scalar helpers shared by every softmax kernel file.  The
 * scalar helpers are also the tails' reference behaviour. */
#ifndef EXAQ_SOFTMAX_COMMON_H
#define EXAQ_SOFTMAX_COMMON_H

#include "exaq.h"

/* exp on [-87.3, 0]: 2^n * p(r), Cephes-style minimax coefficients */
#define EXAQ_EXP_MIN (-87.33654f) /* below this exp() is denormal: we return 0 */
#define EXAQ_LOG2E 1.44269504088896341f
#define EXAQ_LN2_HI 0.693359375f
#define EXAQ_LN2_LO (-2.12194440e-4f)
#define EXAQ_EXP_P0 1.9875691500e-4f
#define EXAQ_EXP_P1 1.3981999507e-3f
#define EXAQ_EXP_P2 8.3334519073e-3f
#define EXAQ_EXP_P3 4.1665795894e-2f
#define EXAQ_EXP_P4 1.6666665459e-1f
#define EXAQ_EXP_P5 5.0000001201e-1f
/* adding and subtracting 1.5 * 2^23 rounds a float of magnitude < 2^22 to the
 * nearest integer, ties to even, without a libm call */
#define EXAQ_ROUND_MAGIC 12582912.0f

static inline float exaq_round_even(float v) {
    return (v + EXAQ_ROUND_MAGIC) - EXAQ_ROUND_MAGIC;
}

static inline int exaq_is_masked(float x) { return x == -__builtin_inff(); }

/* The quantizer of exaq.h, one entry. `x` must not be masked. */
static inline int exaq_quantize_one(float x, const exaq_quantizer *q) {
    float t = x - q->shift;
    if (!(t >= q->lo)) t = q->lo; /* clipped below; also t = -inf from overflow */
    const float v = (t - q->lo) * q->scale;
    const int code = (int)exaq_round_even(v);
    return code < q->levels ? code : q->levels;
}

#endif
