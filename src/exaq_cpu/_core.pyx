# Thin wrappers: check buffers, release the GIL, call C.  Docs and defaults
# live in the Python layer (exaq_cpu/__init__.py).
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from libc.math cimport INFINITY

cimport numpy as cnp

cnp.import_array()


cdef extern from "exaq.h" nogil:
    int EXAQ_MIN_BITS
    int EXAQ_MAX_BITS
    ctypedef enum exaq_backend_id:
        EXAQ_BACKEND_COUNT
    ctypedef enum exaq_clip_mode:
        EXAQ_CLIP_GAUSS
        EXAQ_CLIP_LAPLACE
        EXAQ_CLIP_ROW
        EXAQ_CLIP_NONE
        EXAQ_CLIP_STATIC
    ctypedef enum exaq_floor_mode:
        EXAQ_FLOOR_EXP
        EXAQ_FLOOR_ZERO
    ctypedef struct exaq_backend:
        const char *name
    ctypedef struct exaq_params:
        int bits
        int clip
        double law_slope
        double law_intercept
        double static_lo
        int floor
        int threads
    ctypedef struct exaq_call_stats:
        int64_t count
        double mean, sigma, min, mean_abs_dev
        int64_t invalid_rows

    int exaq_backend_supported(exaq_backend_id id)
    const char *exaq_backend_name(exaq_backend_id id)
    int exaq_backend_from_name(const char *name)
    exaq_backend_id exaq_active_backend_id()
    int exaq_set_backend(exaq_backend_id id)
    int exaq_set_thread_backend(int id)
    int exaq_thread_backend()
    const exaq_backend *exaq_active_backend()

    int exaq_softmax_quantized(const exaq_backend *be, const float *x, size_t rows, size_t n,
                               ptrdiff_t xs, float *y, ptrdiff_t ys, const exaq_params *p,
                               float *scratch, float *lo_out)
    int exaq_quantize_codes(const exaq_backend *be, const float *x, size_t rows, size_t n,
                            ptrdiff_t xs, uint8_t *codes, ptrdiff_t cs, const exaq_params *p,
                            float *scratch, float *lo_out, float *tables)
    int exaq_softmax_exact(const exaq_backend *be, const float *x, size_t rows, size_t n,
                           ptrdiff_t xs, float *y, ptrdiff_t ys, int threads)
    void exaq_score_stats(const exaq_backend *be, const float *x, size_t rows, size_t n,
                          ptrdiff_t xs, float *scratch, exaq_call_stats *out)
    int exaq_softmax_packed(const exaq_backend *be, const float *x, size_t rows, size_t n,
                            ptrdiff_t xs, const exaq_params *p, float *scratch, float *lo_out,
                            uint8_t *packed, ptrdiff_t ps, float *tables, int64_t *lengths,
                            uint8_t *maskbits, ptrdiff_t ms, int64_t *interior_rows)
    int exaq_pack_rows(const exaq_backend *be, const uint8_t *codes, size_t rows, size_t n,
                        ptrdiff_t cs, int bits, uint8_t *packed, ptrdiff_t ps, uint8_t *maskbits,
                        ptrdiff_t ms)
    int exaq_expand_pack2_rows(const exaq_backend *be, const uint8_t *packed, size_t rows, size_t n, ptrdiff_t ps,
                               const int64_t *lengths, const uint8_t *maskbits, ptrdiff_t ms, const float *tables,
                               float *y, ptrdiff_t ys)
    int exaq_unpack_rows(const exaq_backend *be, const uint8_t *packed, size_t rows, size_t n,
                          ptrdiff_t ps, int bits, uint8_t *codes, ptrdiff_t cs)
    int exaq_lutsum_rows(const exaq_backend *be, const uint8_t *packed, size_t rows, ptrdiff_t ps,
                          size_t n, const int64_t *lengths, int bits, const float *luts,
                          ptrdiff_t lut_stride, double *sums)
    int exaq_lutsum_table_rows(const uint8_t *packed, size_t rows, ptrdiff_t ps, size_t n,
                               const int64_t *lengths, int bits, const float *lut, double *sums)
    int exaq_lutsum_count_rows(const uint8_t *packed, size_t rows, ptrdiff_t ps, size_t n,
                                const int64_t *lengths, int bits, const float *luts,
                                ptrdiff_t lut_stride, double *sums)
    void exaq_lutexp_sum_rows(const exaq_backend *be, const uint8_t *codes, size_t rows, size_t n,
                              ptrdiff_t cs, const float *luts, ptrdiff_t lut_stride, double *sums)
    void exaq_exp_sum_rows(const exaq_backend *be, const float *x, size_t rows, size_t n,
                           ptrdiff_t xs, const float *shifts, float *y, double *sums)


cdef extern from "threadpool.h" nogil:
    int EXAQ_MAX_THREADS
    int exaq_cpu_count()
    int exaq_pool_workers()


# A thread is worth waking for this many entries of its own (a wake-up costs
# microseconds, a 64K-entry share tens of microseconds).
cdef Py_ssize_t ENTRIES_PER_THREAD = 1 << 16


def cpu_count():
    """Processors this process may run on."""
    return exaq_cpu_count()


def pool_workers():
    """Worker threads of the shared pool started so far (they persist)."""
    return exaq_pool_workers()


cdef int resolve_threads(object threads, Py_ssize_t entries) except -1:
    """threads=None: every core, but only as many threads as have
    ENTRIES_PER_THREAD entries each; an int >= 1: that many (at most
    EXAQ_MAX_THREADS)."""
    cdef Py_ssize_t wanted
    cdef int cores
    if threads is None:
        wanted = entries // ENTRIES_PER_THREAD
        if wanted <= 1:  # decode-sized calls: no affinity syscall (it costs about a microsecond)
            return 1
        cores = exaq_cpu_count()
        return <int>wanted if wanted < cores else cores
    if type(threads) is not int:
        if isinstance(threads, bool) or not hasattr(threads, "__index__"):
            raise TypeError(f"threads must be an int or None, got {type(threads).__name__}")
        threads = threads.__index__()
    if threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    return <int>threads if threads < EXAQ_MAX_THREADS else EXAQ_MAX_THREADS


def threads_for(object threads, Py_ssize_t entries):
    """The thread count a call over `entries` scores runs with (see resolve_threads)."""
    return resolve_threads(threads, entries)


# the C driver's enums (c/exaq.h), by the names Python uses
CLIP_MODES = {"gauss": EXAQ_CLIP_GAUSS, "laplace": EXAQ_CLIP_LAPLACE, "row": EXAQ_CLIP_ROW, "none": EXAQ_CLIP_NONE,
              "static": EXAQ_CLIP_STATIC}
FLOOR_MODES = {"exp": EXAQ_FLOOR_EXP, "zero": EXAQ_FLOOR_ZERO}


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


def set_thread_backend(name):
    """The calling thread's backend (None: the process-wide one); returns the previous choice."""
    cdef int previous = exaq_thread_backend()
    cdef int id = -1
    if name is not None:
        id = exaq_backend_from_name((<str>name).encode())
        if id < 0:
            raise ValueError(f"unknown backend {name!r}")
    if exaq_set_thread_backend(id) != 0:
        raise ValueError(f"backend {name!r} is not available on this CPU")
    return None if previous < 0 else exaq_backend_name(<exaq_backend_id>previous).decode()


cdef exaq_params make_params(int bits, str clip, double slope, double intercept,
                             double static_lo, str floor) except *:
    cdef exaq_params p
    p.threads = 1
    p.bits = bits
    p.clip = CLIP_MODES[clip]
    p.law_slope = slope
    p.law_intercept = intercept
    p.static_lo = static_lo
    p.floor = FLOOR_MODES[floor]
    return p


def softmax_quantized(const float[:, ::1] x, float[:, ::1] y, int bits, str clip,
                      double slope, double intercept, double static_lo, str floor,
                      float[::1] lo_out=None, object threads=1):
    """Rows of x (C-contiguous float32) -> probabilities in y (same shape; may be x)."""
    cdef exaq_params p = make_params(bits, clip, slope, intercept, static_lo, floor)
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    p.threads = resolve_threads(threads, rows * n)
    if y.shape[0] != rows or y.shape[1] != n:
        raise ValueError("out has the wrong shape")
    if lo_out is not None and lo_out.shape[0] != rows:
        raise ValueError("lo_out has the wrong length")
    if rows == 0 or n == 0:
        return
    cdef FloatScratch scratch = FloatScratch(rows)
    cdef float *lo_ptr = &lo_out[0] if lo_out is not None else NULL
    cdef int rc
    with nogil:
        rc = exaq_softmax_quantized(exaq_active_backend(), &x[0, 0], rows, n, n,
                                    &y[0, 0], n, &p, scratch.data, lo_ptr)
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
    cdef FloatScratch scratch = FloatScratch(rows)
    cdef const float *xp = &x[0, 0] if n else NULL
    cdef uint8_t *cp = &codes[0, 0] if n else NULL
    cdef int rc
    with nogil:
        rc = exaq_quantize_codes(exaq_active_backend(), xp, rows, n, n, cp, n, &p,
                                 scratch.data, &lo_out[0], &tables[0, 0])
    check_rc(rc)


def softmax_exact(const float[:, ::1] x, float[:, ::1] y, object threads=1):
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    if y.shape[0] != rows or y.shape[1] != n:
        raise ValueError("out has the wrong shape")
    cdef int nthreads = resolve_threads(threads, rows * n)
    if rows == 0 or n == 0:
        return
    with nogil:
        exaq_softmax_exact(exaq_active_backend(), &x[0, 0], rows, n, n, &y[0, 0], n, nthreads)


cdef inline bint kernel_ready_out(cnp.ndarray y):
    """Whether the kernels write y in place: C-contiguous, aligned, writable, native float32."""
    return cnp.PyArray_TYPE(y) == cnp.NPY_FLOAT32 and cnp.PyArray_ISCARRAY(y)


cdef bint same_shape(cnp.ndarray a, cnp.ndarray b):
    cdef int k, nd = cnp.PyArray_NDIM(a)
    if cnp.PyArray_NDIM(b) != nd:
        return False
    for k in range(nd):
        if cnp.PyArray_DIM(a, k) != cnp.PyArray_DIM(b, k):
            return False
    return True


cdef bint overlaps_partly(cnp.ndarray a, cnp.ndarray b):
    """b's bytes meet a's other than as the very same buffer (in place)"""
    cdef char *a0 = <char *>cnp.PyArray_DATA(a)
    cdef char *b0 = <char *>cnp.PyArray_DATA(b)
    cdef Py_ssize_t nbytes = cnp.PyArray_NBYTES(a)
    if a0 == b0:
        return False
    return a0 < b0 + cnp.PyArray_NBYTES(b) and b0 < a0 + nbytes


cdef object run_direct(object x, exaq_params *p, object out, Py_ssize_t axis, object threads, bint strict):
    """Float softmax of an array the kernels read in place (an ndarray,
    exactly: C-contiguous, aligned, native float32, at least 1-D, ``axis``
    its last) into ``out`` (None: a new array; else an ndarray of the same
    shape the kernels write in place, which may be ``x`` itself but not
    overlap it otherwise), with the parameters p (p.bits 0: the exact
    softmax).  Returns the result, or None for anything else (the caller then
    checks and converts); with ``strict`` a ValueError/TypeError instead."""
    if type(x) is not cnp.ndarray:
        if strict:
            raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
        return None
    cdef cnp.ndarray arr = <cnp.ndarray>x
    cdef int nd = cnp.PyArray_NDIM(arr)
    if nd == 0 or not (axis == -1 or axis == nd - 1) or not kernel_ready(arr):
        if strict:
            raise ValueError("x must be a C-contiguous, aligned, native float32 array of at least one "
                             "dimension, softmax along its last axis")
        return None
    cdef cnp.ndarray y
    if out is None:
        y = cnp.PyArray_EMPTY(nd, cnp.PyArray_DIMS(arr), cnp.NPY_FLOAT32, 0)
    elif type(out) is cnp.ndarray and kernel_ready_out(<cnp.ndarray>out) and same_shape(arr, <cnp.ndarray>out) \
            and not overlaps_partly(arr, <cnp.ndarray>out):
        y = <cnp.ndarray>out
    else:
        if strict:
            raise ValueError("out must be a writable, C-contiguous, aligned, native float32 numpy.ndarray of "
                             "x's shape, x itself or not overlapping x")
        return None
    cdef Py_ssize_t n = cnp.PyArray_DIM(arr, nd - 1), rows = 1, k
    for k in range(nd - 1):
        rows *= cnp.PyArray_DIM(arr, k)
    p.threads = resolve_threads(threads, rows * n)
    if rows == 0 or n == 0:
        return y
    cdef const float *xp = <const float *>cnp.PyArray_DATA(arr)
    cdef float *yp = <float *>cnp.PyArray_DATA(y)
    cdef float *maxima
    cdef int rc = 0
    if p.bits == 0:
        with nogil:
            exaq_softmax_exact(exaq_active_backend(), xp, rows, n, n, yp, n, p.threads)
        return y
    maxima = <float *>malloc(rows * sizeof(float))
    if maxima == NULL:
        raise MemoryError()
    with nogil:
        rc = exaq_softmax_quantized(exaq_active_backend(), xp, rows, n, n, yp, n, p, maxima, NULL)
    free(maxima)
    check_rc(rc)
    return y


# The published clipping laws (slope, intercept) by bits, [0] gauss (also
# "row"), [1] laplace; given once by the Python layer, which documents them.
cdef double LAW_SLOPE[2][5]
cdef double LAW_INTERCEPT[2][5]
cdef bint LAW_KNOWN[2][5]
cdef object PACKED_TYPE = None


def set_published_laws(dict gauss, dict laplace):
    """The laws the fast entries below apply (the Python layer's tables)."""
    cdef int law, b
    for law, table in enumerate((gauss, laplace)):
        for b in range(5):
            LAW_KNOWN[law][b] = b in table
            if b in table:
                LAW_SLOPE[law][b], LAW_INTERCEPT[law][b] = table[b]


def set_packed_type(type result_type):
    """The class packed results are made as (exaq_cpu.PackedSoftmax)."""
    global PACKED_TYPE
    PACKED_TYPE = result_type


cdef bint common_params(object bits, object clip, object floor, exaq_params *p):
    """p for the common arguments: bits an int 2..4 (or None: exact), clip a
    published law name or a static negative float, floor "exp"/"zero".
    False for anything else, which the checking path then handles (and
    reports) in Python."""
    cdef double lo
    cdef int law, b
    if type(floor) is not str:
        return False
    if floor == "exp":
        p.floor = 0
    elif floor == "zero":
        p.floor = 1
    else:
        return False
    p.law_slope = p.law_intercept = p.static_lo = 0.0
    if bits is None:
        p.bits = 0
        p.clip = 0
        return True
    if type(bits) is not int or not (2 <= bits <= 4):
        return False
    b = <int>bits
    p.bits = b
    if type(clip) is float:
        lo = <double>clip
        if not (lo < 0.0 and lo > -INFINITY):
            return False
        p.clip = CLIP_MODES["static"]
        p.static_lo = lo
        return True
    if type(clip) is not str:
        return False
    if clip == "gauss":
        law, p.clip = 0, CLIP_MODES["gauss"]
    elif clip == "row":
        law, p.clip = 0, CLIP_MODES["row"]
    elif clip == "laplace":
        law, p.clip = 1, CLIP_MODES["laplace"]
    else:
        return False
    if not LAW_KNOWN[law][b]:
        return False
    p.law_slope = LAW_SLOPE[law][b]
    p.law_intercept = LAW_INTERCEPT[law][b]
    return True


def softmax_common(object x, object bits, object axis, object clip, object floor, object out,
                   object output, object threads):
    """exaq_cpu.softmax for the common call, with no Python in between: an
    ndarray the kernels read in place, ``out`` None or one they write in
    place, plain int/None arguments, a published law or a static clip.
    None for anything else (the Python layer then checks and converts)."""
    cdef exaq_params p
    if type(axis) is not int or not (-64 <= axis < 64) or not common_params(bits, clip, floor, &p):
        return None  # (an axis out of range is reported by the checking path)
    if not (threads is None or (type(threads) is int and threads >= 1)):
        return None
    if output == "float":
        return run_direct(x, &p, out, axis, threads, False)
    if output == "packed" and out is None and p.bits != 0 and PACKED_TYPE is not None:
        return packed_direct(x, &p, PACKED_TYPE, axis, threads)
    return None


def softmax_into(object x, object out, object bits, object clip, object floor, object threads):
    """exaq_cpu.softmax_into: arrays checked in C (TypeError/ValueError), the
    common arguments read here; None for other argument types (the Python
    layer checks them)."""
    cdef exaq_params p
    if not common_params(bits, clip, floor, &p):
        return None
    if out is None:
        raise TypeError("out must be a numpy.ndarray, got None")
    if not (type(threads) is int and threads >= 1):
        resolve_threads(threads, 0)  # the core's own message for a bad value
    return run_direct(x, &p, out, -1, threads, True)


def score_stats(const float[:, ::1] x):
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    cdef exaq_call_stats s
    cdef FloatScratch scratch = FloatScratch(rows)
    cdef const float *xp = &x[0, 0] if rows and n else NULL
    with nogil:
        exaq_score_stats(exaq_active_backend(), xp, rows, n, n, scratch.data, &s)
    return {"sigma": s.sigma, "min": s.min, "mean": s.mean,
            "mean_abs_dev": s.mean_abs_dev, "count": int(s.count),
            "invalid_rows": int(s.invalid_rows)}


# ---- packed codes (docs/packed.md) ----

def packed_row_bytes(Py_ssize_t n, int bits):
    return (n * bits + 7) // 8


#: The code widths the C core takes; exaq_cpu.clipping.KERNEL_BITS must equal it.
KERNEL_BITS = tuple(range(EXAQ_MIN_BITS, EXAQ_MAX_BITS + 1))


cdef int check_bits(int bits) except -1:
    if bits < EXAQ_MIN_BITS or bits > EXAQ_MAX_BITS:
        raise ValueError(f"bits must be 2, 3 or 4, got {bits}")
    return 0


cdef inline bint kernel_ready(cnp.ndarray x):
    """Whether the kernels read x in place: C-contiguous, aligned, native float32."""
    return cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32 and cnp.PyArray_ISCARRAY_RO(x)


cdef int check_score_rows(cnp.ndarray x) except -1:
    if not (cnp.PyArray_NDIM(x) == 2 and kernel_ready(x)):
        raise ValueError("x must be a C-contiguous, aligned, native-order 2-D float32 array")
    return 0


cdef class PackedFields:
    """The fields of ``exaq_cpu.PackedSoftmax`` (which documents them): read-only,
    set once, by the fused entry below or by ``PackedSoftmax``'s checking
    constructor.  Made here so that building a result costs no Python calls."""
    cdef readonly object codes, table, lengths, mask
    cdef readonly int bits, axis
    cdef readonly tuple shape

    def _set_fields(self, codes, table, lengths, mask, int bits, tuple shape, int axis):
        if self.shape is not None:
            raise AttributeError("PackedSoftmax is immutable")
        self.codes, self.table, self.lengths, self.mask = codes, table, lengths, mask
        self.bits, self.shape, self.axis = bits, shape, axis


# An uninitialized array of shape batch_shape + (last,), or batch_shape if last < 0,
# from NumPy's C API: a call's fixed cost matters for small attention calls.
cdef object _empty_batch(tuple batch_shape, Py_ssize_t last, int typenum):
    cdef cnp.npy_intp dims[cnp.NPY_MAXDIMS]
    cdef Py_ssize_t k, nd = len(batch_shape)
    if nd + 1 > cnp.NPY_MAXDIMS:
        raise ValueError(f"x has too many dimensions ({nd + 1})")
    for k in range(nd):
        dims[k] = batch_shape[k]
    dims[nd] = last
    return cnp.PyArray_EMPTY(<int>(nd + 1) if last >= 0 else <int>nd, dims, typenum, 0)


cdef Py_ssize_t _batch_size(tuple batch_shape) except -1:
    cdef Py_ssize_t size = 1
    for d in batch_shape:
        size *= <Py_ssize_t>d
    return size


cdef object _packed_result(const float *xp, Py_ssize_t rows, Py_ssize_t n, exaq_params *p,
                           type result_type, tuple shape, int axis, tuple batch_shape):
    """The fused call on rows of xp, its result a `result_type` (a PackedFields).
    The bitmap is written to scratch memory and becomes an array only when it is
    kept: when some row has a masked entry before its valid length (the lengths
    describe every other mask)."""
    cdef int bits = p.bits
    cdef Py_ssize_t nb = (n * bits + 7) // 8, mb = (n + 7) // 8
    cdef cnp.ndarray packed = _empty_batch(batch_shape, nb, cnp.NPY_UINT8)
    cdef cnp.ndarray tables = _empty_batch(batch_shape, 1 << bits, cnp.NPY_FLOAT32)
    cdef cnp.ndarray lengths = _empty_batch(batch_shape, -1, cnp.NPY_INT64)
    cdef cnp.ndarray maskbits = None
    cdef int64_t interior = 0
    cdef int rc = 0
    cdef float *maxima
    cdef uint8_t *bitmap
    if rows:
        maxima = <float *>malloc(rows * (sizeof(float) + mb))
        if maxima == NULL:
            raise MemoryError()
        bitmap = <uint8_t *>(maxima + rows)
        with nogil:
            rc = exaq_softmax_packed(exaq_active_backend(), xp if n else NULL, rows, n, n, p, maxima, NULL,
                                     <uint8_t *>cnp.PyArray_DATA(packed), nb, <float *>cnp.PyArray_DATA(tables),
                                     <int64_t *>cnp.PyArray_DATA(lengths), bitmap, mb, &interior)
        if rc == 0 and interior:
            maskbits = _empty_batch(batch_shape, mb, cnp.NPY_UINT8)
            memcpy(cnp.PyArray_DATA(maskbits), bitmap, rows * mb)
        free(maxima)
        check_rc(rc)
    cdef PackedFields result = PackedFields.__new__(result_type)
    result.codes, result.table, result.lengths, result.mask = packed, tables, lengths, maskbits
    result.bits, result.shape, result.axis = bits, shape, axis
    return result


def softmax_packed(cnp.ndarray x not None, int bits, str clip, double slope, double intercept,
                   double static_lo, str floor, type result_type, tuple shape, int axis, object threads=1):
    """Fused EXAQ softmax of the rows ``x`` (2-D) to packed codes, as a
    ``result_type`` (a PackedFields) describing an output of ``shape`` with
    softmax ``axis``: its arrays are made in the batch shape (``shape``
    without ``axis``)."""
    cdef exaq_params p = make_params(bits, clip, slope, intercept, static_lo, floor)
    check_bits(bits)
    check_score_rows(x)
    cdef Py_ssize_t rows = cnp.PyArray_DIM(x, 0), n = cnp.PyArray_DIM(x, 1)
    p.threads = resolve_threads(threads, rows * n)
    cdef tuple batch_shape = shape[:axis] + shape[axis + 1:]
    if shape[axis] != n or _batch_size(batch_shape) != rows:
        raise ValueError(f"rows of shape {(rows, n)} do not match shape {shape} with axis {axis}")
    return _packed_result(<const float *>cnp.PyArray_DATA(x), rows, n, &p, result_type, shape, axis,
                          batch_shape)


cdef object packed_direct(object x, exaq_params *p, type result_type, Py_ssize_t axis, object threads):
    """``softmax_packed`` of an array the kernels read in place: an ndarray
    (exactly), C-contiguous, aligned, native float32, of at least one
    dimension, softmax ``axis`` its last.  None for any other ``x`` or axis
    (the caller then checks and converts)."""
    if type(x) is not cnp.ndarray:
        return None
    cdef cnp.ndarray arr = <cnp.ndarray>x
    cdef int nd = cnp.PyArray_NDIM(arr)
    if nd == 0 or not (axis == -1 or axis == nd - 1):
        return None
    if not kernel_ready(arr):
        return None
    cdef Py_ssize_t rows = 1, k
    for k in range(nd - 1):
        rows *= cnp.PyArray_DIM(arr, k)
    p.threads = resolve_threads(threads, rows * cnp.PyArray_DIM(arr, nd - 1))
    cdef tuple shape = x.shape
    return _packed_result(<const float *>cnp.PyArray_DATA(arr), rows, cnp.PyArray_DIM(arr, nd - 1), p,
                          result_type, shape, nd - 1, shape[:nd - 1])


def pack_codes(const uint8_t[:, ::1] codes, int bits, uint8_t[:, ::1] packed,
               uint8_t[:, ::1] maskbits=None):
    """Rows of byte codes (< 2**bits, or >= 16 for masked) -> packed rows (+ mask bitmap)."""
    check_bits(bits)
    cdef Py_ssize_t rows = codes.shape[0], n = codes.shape[1]
    if packed.shape[0] != rows or packed.shape[1] != (n * bits + 7) // 8:
        raise ValueError("packed buffer has the wrong shape")
    if maskbits is not None and (maskbits.shape[0] != rows or maskbits.shape[1] != (n + 7) // 8):
        raise ValueError("mask buffer has the wrong shape")
    if rows == 0 or n == 0:
        return
    cdef uint8_t *mp = &maskbits[0, 0] if maskbits is not None else NULL
    cdef ptrdiff_t ms = maskbits.shape[1] if maskbits is not None else 0
    cdef int rc
    with nogil:
        rc = exaq_pack_rows(exaq_active_backend(), &codes[0, 0], rows, n, n, bits, &packed[0, 0],
                            packed.shape[1], mp, ms)
    if rc != 0:
        raise ValueError("pack: the core refused its arguments")


def unpack_codes(const uint8_t[:, ::1] packed, int bits, uint8_t[:, ::1] codes):
    check_bits(bits)
    cdef Py_ssize_t rows = codes.shape[0], n = codes.shape[1]
    if packed.shape[0] != rows or packed.shape[1] != (n * bits + 7) // 8:
        raise ValueError("packed buffer has the wrong shape")
    if rows == 0 or n == 0:
        return
    cdef int rc
    with nogil:
        rc = exaq_unpack_rows(exaq_active_backend(), &packed[0, 0], rows, n, packed.shape[1], bits,
                              &codes[0, 0], n)
    if rc != 0:
        raise ValueError("unpack: the core refused its arguments")


def expand_pack2(const uint8_t[:, ::1] packed, const int64_t[::1] lengths, mask, const float[:, ::1] tables,
                 float[:, ::1] y):
    """2-bit packed rows to probabilities (PackedSoftmax.to_float): y[r, j] = tables[r, code],
    +0.0 at or past lengths[r] and where the bitmap `mask` (uint8 rows, or None) is set."""
    cdef Py_ssize_t rows = y.shape[0], n = y.shape[1]
    cdef const uint8_t[:, ::1] bitmap
    cdef const uint8_t *mp = NULL
    cdef Py_ssize_t ms = 0
    if packed.shape[0] != rows or packed.shape[1] != (2 * n + 7) // 8:
        raise ValueError("packed buffer has the wrong shape")
    if lengths.shape[0] != rows or tables.shape[0] != rows or tables.shape[1] != 4:
        raise ValueError("lengths/tables do not match the rows")
    if mask is not None:
        bitmap = mask
        if bitmap.shape[0] != rows or bitmap.shape[1] != (n + 7) // 8:
            raise ValueError("mask bitmap has the wrong shape")
        if rows and bitmap.shape[1]:
            mp = &bitmap[0, 0]
            ms = bitmap.shape[1]
    if rows == 0 or n == 0:
        return
    cdef int rc
    with nogil:
        rc = exaq_expand_pack2_rows(exaq_active_backend(), &packed[0, 0], rows, n, packed.shape[1], &lengths[0],
                                    mp, ms, &tables[0, 0], &y[0, 0], n)
    if rc != 0:
        raise ValueError("expand_pack2: the core refused its arguments")


def lutsum(const uint8_t[:, ::1] packed, Py_ssize_t n, int bits, const float[:, ::1] luts,
           double[::1] sums, const int64_t[::1] lengths=None, bint paper_table=False):
    """Per row: sum of lut[code] over its first n (or lengths[r]) packed codes.

    luts: (1, 16) shared or (rows, 16).  paper_table: the scalar 256/4096-entry
    byte-table LUTsum whatever the backend (needs a shared lut)."""
    check_bits(bits)
    cdef Py_ssize_t rows = packed.shape[0]
    if packed.shape[1] != (n * bits + 7) // 8 or sums.shape[0] != rows:
        raise ValueError("packed/sums buffers have the wrong shape")
    if luts.shape[1] != 16 or luts.shape[0] not in (1, rows):
        raise ValueError("luts must have shape (1, 16) or (rows, 16)")
    if lengths is not None and lengths.shape[0] != rows:
        raise ValueError("lengths has the wrong length")
    if paper_table and luts.shape[0] != 1 and rows > 1:
        raise ValueError("the paper's table LUTsum needs one shared lut")
    if rows == 0:
        return
    cdef ptrdiff_t lut_stride = 16 if luts.shape[0] == rows and rows > 1 else 0
    cdef const uint8_t *pp = &packed[0, 0] if packed.shape[1] else NULL
    cdef const int64_t *lp = &lengths[0] if lengths is not None else NULL
    cdef uint8_t zero = 0
    if pp == NULL:
        pp = &zero
    cdef int rc = 0
    with nogil:
        if paper_table:
            rc = exaq_lutsum_table_rows(pp, rows, packed.shape[1], n, lp, bits, &luts[0, 0], &sums[0])
        elif bits != 2:
            # the SIMD 3/4-bit kernels add in float lanes (1e-3 off at 2^24 codes): count instead
            rc = exaq_lutsum_count_rows(pp, rows, packed.shape[1], n, lp, bits, &luts[0, 0],
                                        lut_stride, &sums[0])
        else:
            rc = exaq_lutsum_rows(exaq_active_backend(), pp, rows, packed.shape[1], n, lp, bits,
                                  &luts[0, 0], lut_stride, &sums[0])
    if rc != 0:
        raise ValueError("lutsum: the core refused its arguments")


def lutexp_sum(const uint8_t[:, ::1] codes, const float[:, ::1] luts, double[::1] sums):
    """Per row: sum of lut[code] over byte codes (each < 16), the LUTexp + add baseline."""
    cdef Py_ssize_t rows = codes.shape[0], n = codes.shape[1]
    if luts.shape[1] != 16 or luts.shape[0] not in (1, rows) or sums.shape[0] != rows:
        raise ValueError("luts/sums have the wrong shape")
    if rows == 0 or n == 0:
        return
    cdef ptrdiff_t lut_stride = 16 if luts.shape[0] == rows and rows > 1 else 0
    with nogil:
        exaq_lutexp_sum_rows(exaq_active_backend(), &codes[0, 0], rows, n, n, &luts[0, 0],
                             lut_stride, &sums[0])


def exp_sum(const float[:, ::1] x, const float[::1] shifts, double[::1] sums):
    """Per row: float sum of exp(x - shift), the float baseline of the accumulation phase."""
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    if shifts.shape[0] != rows or sums.shape[0] != rows:
        raise ValueError("shifts/sums have the wrong length")
    if rows == 0 or n == 0:
        return
    cdef FloatScratch y = FloatScratch(n)
    with nogil:
        exaq_exp_sum_rows(exaq_active_backend(), &x[0, 0], rows, n, n, &shifts[0], y.data, &sums[0])


cdef int check_rc(int rc) except -1:
    if rc == -2:
        raise MemoryError("exaq_cpu: out of memory")
    if rc != 0:
        raise ValueError("invalid quantization parameters")
    return 0


cdef class FloatScratch:
    """A float buffer owned by one call (freed with it), for per-row maxima."""
    cdef float *data

    def __cinit__(self, Py_ssize_t n):
        self.data = <float *>malloc(max(n, 1) * sizeof(float))
        if self.data == NULL:
            raise MemoryError("exaq_cpu: out of memory")

    def __dealloc__(self):
        free(self.data)


include "_lutgemm.pxi"
