/* Keccak-f[1600] permutation (FIPS 202, section 3) for cometp2p.crypto.merlin.
 *
 * One function, permute(state), that applies the 24 rounds in place to a writable
 * buffer of exactly 200 bytes; lane (x, y) is the little-endian 64-bit word at byte
 * offset 8 * (x + 5 * y). It is an optional accelerator: merlin.py falls back to its
 * pure-Python permutation when this module is not built, and the Merlin test vectors
 * run against both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static const uint64_t RC[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808AULL,
    0x8000000080008000ULL, 0x000000000000808BULL, 0x0000000080000001ULL,
    0x8000000080008081ULL, 0x8000000000008009ULL, 0x000000000000008AULL,
    0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000AULL,
    0x000000008000808BULL, 0x800000000000008BULL, 0x8000000000008089ULL,
    0x8000000000008003ULL, 0x8000000000008002ULL, 0x8000000000000080ULL,
    0x000000000000800AULL, 0x800000008000000AULL, 0x8000000080008081ULL,
    0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};

/* rho offsets and pi destinations, walking the lanes in the order of FIPS 202 3.2.2. */
static const unsigned ROTC[24] = {
    1, 3, 6, 10, 15, 21, 28, 36, 45, 55, 2, 14, 27, 41, 56, 8, 25, 43, 62, 18, 39, 61, 20, 44,
};
static const unsigned PILN[24] = {
    10, 7, 11, 17, 18, 3, 5, 16, 8, 21, 24, 4, 15, 23, 19, 13, 12, 2, 20, 14, 22, 9, 6, 1,
};

#define ROTL64(v, n) (((v) << (n)) | ((v) >> (64 - (n))))

static void keccak_f1600(uint64_t a[25]) {
    uint64_t c[5], t;
    for (int round = 0; round < 24; round++) {
        for (int x = 0; x < 5; x++) {
            c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20];
        }
        for (int x = 0; x < 5; x++) {
            t = c[(x + 4) % 5] ^ ROTL64(c[(x + 1) % 5], 1);
            for (int y = 0; y < 25; y += 5) {
                a[y + x] ^= t;
            }
        }
        t = a[1];
        for (int i = 0; i < 24; i++) {
            unsigned j = PILN[i];
            uint64_t next = a[j];
            a[j] = ROTL64(t, ROTC[i]);
            t = next;
        }
        for (int y = 0; y < 25; y += 5) {
            for (int x = 0; x < 5; x++) {
                c[x] = a[y + x];
            }
            for (int x = 0; x < 5; x++) {
                a[y + x] = c[x] ^ ((~c[(x + 1) % 5]) & c[(x + 2) % 5]);
            }
        }
        a[0] ^= RC[round];
    }
}

static PyObject *permute(PyObject *module, PyObject *arg) {
    Py_buffer view;
    uint64_t lanes[25];
    unsigned char *bytes;
    (void)module;
    if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        return NULL;
    }
    if (view.len != 200) {
        PyErr_Format(PyExc_ValueError, "Keccak-f[1600] state must be 200 bytes, got %zd",
                     view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    bytes = (unsigned char *)view.buf;
    for (int i = 0; i < 25; i++) {
        uint64_t lane = 0;
        for (int k = 7; k >= 0; k--) {
            lane = (lane << 8) | bytes[8 * i + k];
        }
        lanes[i] = lane;
    }
    keccak_f1600(lanes);
    for (int i = 0; i < 25; i++) {
        uint64_t lane = lanes[i];
        for (int k = 0; k < 8; k++) {
            bytes[8 * i + k] = (unsigned char)(lane >> (8 * k));
        }
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"permute", permute, METH_O,
     "permute(state, /)\n--\n\nApply Keccak-f[1600] in place to a writable 200-byte buffer.\n"
     "Raises ValueError if it is not 200 bytes, TypeError/BufferError if not writable."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "cometp2p.crypto._keccak",
    "Native Keccak-f[1600] permutation (optional; see cometp2p.crypto.merlin).", -1, methods,
};

PyMODINIT_FUNC PyInit__keccak(void) { return PyModule_Create(&module); }
