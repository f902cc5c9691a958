/* Compiler helpers shared by every kernel file. */
#ifndef EXAQ_COMPILER_H
#define EXAQ_COMPILER_H

/* Kernels specialized on constant arguments (flags, bit widths) must be
 * inlined into each caller, so every variant gets its own loop with the
 * branches folded away; GCC and Clang otherwise keep one shared copy. */
#if defined(__GNUC__)
#define EXAQ_ALWAYS_INLINE __attribute__((always_inline))
#else
#define EXAQ_ALWAYS_INLINE
#endif

#endif
