# LUT-GEMM wrappers (included at the end of _core.pyx): check buffer sizes
# against the matrix geometry, release the GIL, call C.  Docs and defaults live
# in exaq_cpu/lutgemm.py.
from libc.stdint cimport uint8_t as _u8


cdef extern from "exaq.h" nogil:
    ctypedef enum exaq_lut_design:
        EXAQ_LUT_AUTO
        EXAQ_LUT_MU4
        EXAQ_LUT_MU8
    ctypedef struct exaq_lutgemm_kernels:
        int preferred
    ctypedef struct exaq_bcq_matrix:
        const _u8 *planes
        const float *alphas
        const float *offsets
        size_t rows, tiles, cols, group_size, groups
        int bits
    const exaq_lutgemm_kernels *exaq_lutgemm_active()
    int exaq_bcq_check(const exaq_bcq_matrix *w)
    int exaq_lutgemm(const exaq_lutgemm_kernels *k, int design, const exaq_bcq_matrix *w,
                     const float *x, size_t tokens, ptrdiff_t x_stride, float *y,
                     ptrdiff_t y_stride, int threads)
    int exaq_bcq_dequantize(const exaq_bcq_matrix *w, float *out, ptrdiff_t ld)
    ctypedef struct exaq_bcq_i8:
        const _u8 *codes
        const float *alphas
        const float *offsets
        size_t rows, tiles, cols, group_size, groups
        int bits
    void exaq_bcq_i8_sizes(const exaq_bcq_matrix *w, size_t *codes, size_t *alphas, size_t *offsets)
    int exaq_bcq_pack_i8(const exaq_bcq_matrix *w, _u8 *codes, float *alphas, float *offsets,
                         exaq_bcq_i8 *out)
    int exaq_bcq_i8_check(const exaq_bcq_i8 *w)
    int exaq_lutgemm_i8(const exaq_lutgemm_kernels *k, const exaq_bcq_i8 *w, const float *x,
                        size_t tokens, ptrdiff_t x_stride, float *y, ptrdiff_t y_stride, int threads)


LUT_DESIGNS = {"auto": EXAQ_LUT_AUTO, "mu4": EXAQ_LUT_MU4, "mu8": EXAQ_LUT_MU8}  # c/lutgemm.h


cdef exaq_bcq_matrix _bcq_view(const _u8[::1] planes, const float[::1] alphas,
                               const float[::1] offsets, Py_ssize_t rows, Py_ssize_t cols,
                               Py_ssize_t group_size, int bits) except *:
    cdef exaq_bcq_matrix w
    if rows < 0 or cols < 0 or group_size <= 0 or group_size % 8 or not 1 <= bits <= 4:
        raise ValueError("invalid BCQ geometry")
    w.rows = rows
    w.cols = cols
    w.group_size = group_size
    w.bits = bits
    w.tiles = (rows + 15) // 16
    w.groups = (cols + group_size - 1) // group_size
    cdef Py_ssize_t tg = w.tiles * w.groups
    if planes.shape[0] != tg * bits * (group_size // 8) * 16:
        raise ValueError("planes buffer does not match the matrix geometry")
    if alphas.shape[0] != tg * bits * 16 or offsets.shape[0] != tg * 16:
        raise ValueError("alphas/offsets buffers do not match the matrix geometry")
    w.planes = &planes[0] if planes.shape[0] else NULL
    w.alphas = &alphas[0] if alphas.shape[0] else NULL
    w.offsets = &offsets[0] if offsets.shape[0] else NULL
    if exaq_bcq_check(&w) != 0:
        raise ValueError("invalid BCQ geometry")
    return w


def lut_preferred_design():
    """Table design ("mu4"/"mu8") the active backend uses by default."""
    return "mu8" if exaq_lutgemm_active().preferred == EXAQ_LUT_MU8 else "mu4"


def lut_gemm_rows(const _u8[::1] planes, const float[::1] alphas, const float[::1] offsets,
                  Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t group_size, int bits,
                  const float[:, ::1] x, float[:, ::1] y, int threads, str design):
    """y[n] = W x[n] for the rows of x (C-contiguous float32, (tokens, cols))."""
    cdef exaq_bcq_matrix w = _bcq_view(planes, alphas, offsets, rows, cols, group_size, bits)
    cdef Py_ssize_t tokens = x.shape[0]
    if x.shape[1] != cols:
        raise ValueError("x has the wrong number of columns")
    if y.shape[0] != tokens or y.shape[1] != rows:
        raise ValueError("out has the wrong shape")
    if threads < 1:
        raise ValueError("threads must be >= 1")
    if design not in LUT_DESIGNS:
        raise ValueError(f"unknown table design {design!r}")
    cdef int d = LUT_DESIGNS[design]
    if tokens == 0 or rows == 0:
        return
    cdef const float *xp = &x[0, 0] if cols else NULL
    cdef int rc
    with nogil:
        rc = exaq_lutgemm(exaq_lutgemm_active(), d, &w, xp, tokens, cols, &y[0, 0], rows, threads)
    if rc == -2:
        raise MemoryError("LUT-GEMM: out of memory")
    if rc != 0:
        raise ValueError("LUT-GEMM: invalid arguments")


def bcq_dequantize(const _u8[::1] planes, const float[::1] alphas, const float[::1] offsets,
                   Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t group_size, int bits,
                   float[:, ::1] out):
    cdef exaq_bcq_matrix w = _bcq_view(planes, alphas, offsets, rows, cols, group_size, bits)
    if out.shape[0] != rows or out.shape[1] != cols:
        raise ValueError("out has the wrong shape")
    if rows == 0 or cols == 0:
        return
    cdef int rc
    with nogil:
        rc = exaq_bcq_dequantize(&w, &out[0, 0], cols)
    if rc != 0:
        raise MemoryError("BCQ dequantize: out of memory")


# ---- integer-table mode (precision="int8"; layout in c/lutgemm.h) ----

def bcq_i8_sizes(const _u8[::1] planes, const float[::1] alphas, const float[::1] offsets,
                 Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t group_size, int bits):
    """(codes bytes, alpha floats, offset floats) of the int8-mode packed form."""
    cdef exaq_bcq_matrix w = _bcq_view(planes, alphas, offsets, rows, cols, group_size, bits)
    cdef size_t nc, na, no
    exaq_bcq_i8_sizes(&w, &nc, &na, &no)
    return nc, na, no


def bcq_pack_i8(const _u8[::1] planes, const float[::1] alphas, const float[::1] offsets,
                Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t group_size, int bits,
                _u8[::1] codes8, float[::1] alphas8, float[::1] offsets8):
    """Repacks the planes layout into the int8-mode layout (buffers of bcq_i8_sizes)."""
    cdef exaq_bcq_matrix w = _bcq_view(planes, alphas, offsets, rows, cols, group_size, bits)
    cdef size_t nc, na, no
    cdef exaq_bcq_i8 w8
    exaq_bcq_i8_sizes(&w, &nc, &na, &no)
    if <size_t>codes8.shape[0] != nc or <size_t>alphas8.shape[0] != na or <size_t>offsets8.shape[0] != no:
        raise ValueError("int8 packed buffers do not match the matrix geometry")
    if nc == 0 or na == 0:
        return
    cdef int rc
    with nogil:
        rc = exaq_bcq_pack_i8(&w, &codes8[0], &alphas8[0], &offsets8[0], &w8)
    if rc != 0:
        raise ValueError("invalid BCQ geometry")


def lut_gemm_rows_i8(const _u8[::1] codes8, const float[::1] alphas8, const float[::1] offsets8,
                     Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t group_size, int bits,
                     const float[:, ::1] x, float[:, ::1] y, int threads):
    """y[n] = W x[n] with int8 tables (packed form of bcq_pack_i8)."""
    cdef exaq_bcq_i8 w
    if rows < 0 or cols < 0 or group_size <= 0 or group_size % 8 or not 1 <= bits <= 4:
        raise ValueError("invalid BCQ geometry")
    w.rows = rows
    w.cols = cols
    w.group_size = group_size
    w.bits = bits
    w.tiles = (rows + 63) // 64
    w.groups = (cols + group_size - 1) // group_size
    cdef Py_ssize_t tg = w.tiles * w.groups
    if codes8.shape[0] != tg * bits * (group_size // 8) * 64 or alphas8.shape[0] != tg * bits * 64 \
            or offsets8.shape[0] != tg * 64:
        raise ValueError("int8 packed buffers do not match the matrix geometry")
    w.codes = &codes8[0] if codes8.shape[0] else NULL
    w.alphas = &alphas8[0] if alphas8.shape[0] else NULL
    w.offsets = &offsets8[0] if offsets8.shape[0] else NULL
    if exaq_bcq_i8_check(&w) != 0:
        raise ValueError("invalid BCQ geometry")
    cdef Py_ssize_t tokens = x.shape[0]
    if x.shape[1] != cols:
        raise ValueError("x has the wrong number of columns")
    if y.shape[0] != tokens or y.shape[1] != rows:
        raise ValueError("out has the wrong shape")
    if threads < 1:
        raise ValueError("threads must be >= 1")
    if tokens == 0 or rows == 0:
        return
    cdef const float *xp = &x[0, 0] if cols else NULL
    cdef int rc
    with nogil:
        rc = exaq_lutgemm_i8(exaq_lutgemm_active(), &w, xp, tokens, cols, &y[0, 0], rows, threads)
    if rc == -2:
        raise MemoryError("LUT-GEMM: out of memory")
    if rc != 0:
        raise ValueError("LUT-GEMM: invalid arguments")
