# Thin wrappers: check buffers, release the GIL, call C.  Docs and defaults
# live in the Python layer (exaq_cpu/__init__.py).
from libc.stdint cimport int64_t, uint8_t


cdef extern from "exaq.h" nogil:
    ctypedef enum exaq_backend_id:
        EXAQ_BACKEND_COUNT
    ctypedef struct exaq_backend:
        const char *name
    ctypedef struct exaq_params:
        int bits
        int clip
        double law_slope
        double law_intercept
        double static_lo
        int floor
    ctypedef struct exaq_call_stats:
        int64_t count
        double mean, sigma, min, mean_abs_dev
        int64_t invalid_rows

    int exaq_backend_supported(exaq_backend_id id)
    const char *exaq_backend_name(exaq_backend_id id)
    int exaq_backend_from_name(const char *name)
    exaq_backend_id exaq_active_backend_id()
    int exaq_set_backend(exaq_backend_id id)
    const exaq_backend *exaq_active_backend()

    int exaq_softmax_quantized(const exaq_backend *be, const float *x, size_t rows, size_t n,
                               ptrdiff_t xs, float *y, ptrdiff_t ys, const exaq_params *p,
                               float *scratch, float *lo_out)
    int exaq_quantize_codes(const exaq_backend *be, const float *x, size_t rows, size_t n,
                            ptrdiff_t xs, uint8_t *codes, ptrdiff_t cs, const exaq_params *p,
                            float *scratch, float *lo_out, float *tables)
    int exaq_softmax_exact(const exaq_backend *be, const float *x, size_t rows, size_t n,
                           ptrdiff_t xs, float *y, ptrdiff_t ys)
    void exaq_score_stats(const exaq_backend *be, const float *x, size_t rows, size_t n,
                          ptrdiff_t xs, float *scratch, exaq_call_stats *out)


CLIP_MODES = {"gauss": 0, "laplace": 1, "row": 2, "none": 3, "static": 4}
FLOOR_MODES = {"exp": 0, "zero": 1}


def backend_names():
    """All backend names known to this build, supported here or not."""
    return [exaq_backend_name(<exaq_backend_id>i).decode() for i in range(EXAQ_BACKEND_COUNT)]


def supported_backends():
    return [exaq_backend_name(<exaq_backend_id>i).decode()
            for i in range(EXAQ_BACKEND_COUNT) if exaq_backend_supported(<exaq_backend_id>i)]


def active_backend():
    return exaq_backend_name(exaq_active_backend_id()).decode()


def set_active_backend(str name):
    cdef int id = exaq_backend_from_name(name.encode())
    if id < 0 or exaq_set_backend(<exaq_backend_id>id) != 0:
        raise ValueError(f"backend {name!r} is not available on this CPU")


cdef ptrdiff_t row_stride(Py_ssize_t byte_stride, Py_ssize_t itemsize) except -1:
    if byte_stride % itemsize:
        raise ValueError("row stride is not a multiple of the item size")
    return byte_stride // itemsize


cdef exaq_params make_params(int bits, str clip, double slope, double intercept,
                             double static_lo, str floor) except *:
    cdef exaq_params p
    p.bits = bits
    p.clip = CLIP_MODES[clip]
    p.law_slope = slope
    p.law_intercept = intercept
    p.static_lo = static_lo
    p.floor = FLOOR_MODES[floor]
    return p


def softmax_quantized(const float[:, ::1] x, float[:, ::1] y, int bits, str clip,
                      double slope, double intercept, double static_lo, str floor,
                      float[::1] lo_out=None):
    """Rows of x (C-contiguous float32) -> probabilities in y (same shape; may be x)."""
    cdef exaq_params p = make_params(bits, clip, slope, intercept, static_lo, floor)
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    if y.shape[0] != rows or y.shape[1] != n:
        raise ValueError("out has the wrong shape")
    if lo_out is not None and lo_out.shape[0] != rows:
        raise ValueError("lo_out has the wrong length")
    if rows == 0 or n == 0:
        return
    cdef float[::1] scratch = cython_float_buffer(rows)
    cdef float *lo_ptr = &lo_out[0] if lo_out is not None else NULL
    cdef int rc
    with nogil:
        rc = exaq_softmax_quantized(exaq_active_backend(), &x[0, 0], rows, n, n,
                                    &y[0, 0], n, &p, &scratch[0], lo_ptr)
    check_rc(rc)


def quantize_codes(const float[:, ::1] x, uint8_t[:, ::1] codes, float[::1] lo_out,
                   float[:, ::1] tables, int bits, str clip, double slope, double intercept,
                   double static_lo, str floor):
    """Rows of x -> codes (uint8, masked entries 0), each row's lo and probability table."""
    cdef exaq_params p = make_params(bits, clip, slope, intercept, static_lo, floor)
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    if codes.shape[0] != rows or codes.shape[1] != n or lo_out.shape[0] != rows:
        raise ValueError("codes/lo buffers have the wrong shape")
    if tables.shape[0] != rows or tables.shape[1] != (1 << bits):
        raise ValueError("tables buffer has the wrong shape")
    if rows == 0:
        return
    cdef float[::1] scratch = cython_float_buffer(rows)
    cdef const float *xp = &x[0, 0] if n else NULL
    cdef uint8_t *cp = &codes[0, 0] if n else NULL
    cdef int rc
    with nogil:
        rc = exaq_quantize_codes(exaq_active_backend(), xp, rows, n, n, cp, n, &p,
                                 &scratch[0], &lo_out[0], &tables[0, 0])
    check_rc(rc)


def softmax_exact(const float[:, ::1] x, float[:, ::1] y):
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    if y.shape[0] != rows or y.shape[1] != n:
        raise ValueError("out has the wrong shape")
    if rows == 0 or n == 0:
        return
    with nogil:
        exaq_softmax_exact(exaq_active_backend(), &x[0, 0], rows, n, n, &y[0, 0], n)


def score_stats(const float[:, ::1] x):
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    cdef exaq_call_stats s
    cdef float[::1] scratch = cython_float_buffer(max(rows, 1))
    cdef const float *xp = &x[0, 0] if rows and n else NULL
    with nogil:
        exaq_score_stats(exaq_active_backend(), xp, rows, n, n, &scratch[0], &s)
    return {"sigma": s.sigma, "min": s.min, "mean": s.mean,
            "mean_abs_dev": s.mean_abs_dev, "count": int(s.count),
            "invalid_rows": int(s.invalid_rows)}


cdef int check_rc(int rc) except -1:
    if rc == -2:
        raise MemoryError("exaq_cpu: out of memory")
    if rc != 0:
        raise ValueError("invalid quantization parameters")
    return 0


cdef float[::1] cython_float_buffer(Py_ssize_t n):
    from array import array
    return array("f", bytes(4 * n))


include "_lutgemm.pxi"
