/*
 * test_vectors.c - check vigil_frame.h against the shared vectors written by make_vectors.py.
 *
 *     cc -std=c99 -Wall -Wextra -Werror -pedantic -I firmware_bridge/c \
 *         firmware_bridge/c/test_vectors.c -o ./test_vectors
 *     ./test_vectors firmware_bridge/c/vectors   # encode each vector, compare with <name>.bin
 *     ./test_vectors --hex                       # print "<name> <hex>" of each C encoding
 *     ./test_vectors --cobs < lines              # each input line is hex; print its COBS as hex
 *
 * The first form also checks the CRC-32C check value and that the encoder refuses every invalid
 * field; it prints one line per check and exits non-zero on any failure. The frames are defined
 * independently here, from the same field values and sample formulas as make_vectors.py (see
 * vectors/README.md): keep the two in step.
 */
#include <stdio.h>

#include "vigil_frame.h"

#define MAX_VALUES 4096
#define MAX_FRAME 16384

enum { LCG, DYADIC, LIST_I32, LIST_F32 };

typedef struct {
    const char *name;
    void (*header)(vigil_frame_t *f);
    int formula;
    uint64_t a, b, p; /* LCG / DYADIC parameters */
    unsigned e;       /* DYADIC: divide by 2^e */
    const int32_t *ints;
    const float *floats;
} vector_t;

static int16_t s16[MAX_VALUES];
static int32_t s32[MAX_VALUES];
static float f32[MAX_VALUES];
static uint8_t out[MAX_FRAME];
static uint8_t expect[MAX_FRAME];
static int failures;

static void set_channels(vigil_frame_t *f, unsigned n, uint8_t kind, float scale, float offset)
{
    unsigned c;
    f->n_channels = (uint8_t)n;
    for (c = 0; c < n; c++) {
        f->kinds[c] = kind;
        f->scale[c] = scale;
        f->offset[c] = offset;
    }
}

static void h_ecg(vigil_frame_t *f)
{
    f->device_id = 0x00000101u;
    f->stream_id = 0;
    f->sequence = 0;
    f->timestamp_us = 0;
    f->sample_rate = 250.0f;
    f->sample_format = VIGIL_FMT_INT16;
    f->n_samples = 25;
    set_channels(f, 1, VIGIL_KIND_ECG, 0.005f, 0.0f);
}

static void h_typical(vigil_frame_t *f)
{
    static const uint8_t kinds[8] = {VIGIL_KIND_ECG, VIGIL_KIND_ECG, VIGIL_KIND_ECG, VIGIL_KIND_EEG,
                                     VIGIL_KIND_EEG, VIGIL_KIND_EEG, VIGIL_KIND_EMG, VIGIL_KIND_RESP};
    unsigned c;
    f->device_id = 0xA1B2C3D4u;
    f->stream_id = 1;
    f->sequence = 123456u;
    f->timestamp_us = 1700000000123456ull;
    f->sample_rate = 500.0f;
    f->sample_format = VIGIL_FMT_INT24;
    f->n_samples = 32;
    set_channels(f, 8, 0, 0.02235174f, 0.0f);
    for (c = 0; c < 8; c++) {
        f->kinds[c] = kinds[c];
    }
    f->scale[7] = 1.0f;
    f->offset[7] = -100.0f;
}

static void h_imu(vigil_frame_t *f)
{
    f->device_id = 0x0000BEEFu;
    f->stream_id = 2;
    f->sequence = 42;
    f->timestamp_us = 5000000u;
    f->sample_rate = 104.0f;
    f->sample_format = VIGIL_FMT_FLOAT32;
    f->n_samples = 13;
    set_channels(f, 3, VIGIL_KIND_IMU_ACC, 9.80665f, 0.0f);
}

static void h_max_channels(vigil_frame_t *f)
{
    unsigned c;
    f->device_id = 0xFFFFFFFFu;
    f->stream_id = 255;
    f->sequence = 7;
    f->timestamp_us = UINT64_MAX;
    f->sample_rate = 1000000.0f;
    f->sample_format = VIGIL_FMT_INT16;
    f->n_samples = 4;
    f->n_channels = 64;
    for (c = 0; c < 64; c++) {
        f->kinds[c] = (uint8_t)(c % 9u);
        f->scale[c] = (float)(c + 1) / 8.0f;
        f->offset[c] = (float)(0 - (int)c) / 2.0f; /* +0.0 for c = 0, as in Python */
    }
}

static void h_seq_wrap(vigil_frame_t *f)
{
    f->device_id = 2;
    f->stream_id = 3;
    f->sequence = 0xFFFFFFFFu;
    f->timestamp_us = 4294967296000ull;
    f->sample_rate = 25.0f;
    f->sample_format = VIGIL_FMT_INT16;
    f->n_samples = 8;
    set_channels(f, 2, VIGIL_KIND_RESP, 1.0f, 0.0f);
    f->kinds[1] = VIGIL_KIND_TEMP;
    f->scale[1] = 0.01f;
}

static void h_int24_extremes(vigil_frame_t *f)
{
    f->device_id = 3;
    f->stream_id = 0;
    f->sequence = 1;
    f->timestamp_us = 1000;
    f->sample_rate = 2000.0f;
    f->sample_format = VIGIL_FMT_INT24;
    f->n_samples = 6;
    set_channels(f, 2, VIGIL_KIND_EMG, 1.0f, 0.0f);
}

static void h_scale_offset(vigil_frame_t *f)
{
    static const uint8_t kinds[4] = {VIGIL_KIND_TEMP, VIGIL_KIND_PPG, VIGIL_KIND_OTHER, VIGIL_KIND_IMU_GYRO};
    static const float scale[4] = {0.1f, -0.000123f, 3.0517578125e-05f, 1234.5677f};
    static const float offset[4] = {-273.15f, 0.001f, -0.0f, 3.0e38f};
    unsigned c;
    f->device_id = 0x7F7F7F7Fu;
    f->stream_id = 4;
    f->sequence = 1000;
    f->timestamp_us = 86400000000ull;
    f->sample_rate = 333.333333f;
    f->sample_format = VIGIL_FMT_INT16;
    f->n_samples = 5;
    f->n_channels = 4;
    for (c = 0; c < 4; c++) {
        f->kinds[c] = kinds[c];
        f->scale[c] = scale[c];
        f->offset[c] = offset[c];
    }
}

static void h_float_specials(vigil_frame_t *f)
{
    f->device_id = 5;
    f->stream_id = 6;
    f->sequence = 99;
    f->timestamp_us = 77;
    f->sample_rate = 0.5f;
    f->sample_format = VIGIL_FMT_FLOAT32;
    f->n_samples = 8;
    set_channels(f, 1, VIGIL_KIND_OTHER, 1.0f, 0.0f);
}

static void h_max_samples(vigil_frame_t *f)
{
    f->device_id = 4;
    f->stream_id = 5;
    f->sequence = 2;
    f->timestamp_us = 123;
    f->sample_rate = 8000.0f;
    f->sample_format = VIGIL_FMT_INT24;
    f->n_samples = 4096;
    set_channels(f, 1, VIGIL_KIND_PPG, 1.0f, 0.0f);
}

static const int32_t int24_extremes[12] = {-8388608, 8388607, -1, 0, 1, -2,
                                           1193046, -1193046, 255, -256, 65535, -65536};
static const float float_specials[8] = {-0.0f, 1.40129846e-45f, 3.40282347e38f, -3.40282347e38f,
                                        1.17549435e-38f, 0.1f, -1.5f, 65504.0f};

static const vector_t vectors[] = {
    {"ecg_int16_1ch", h_ecg, LCG, 65535u, 0u, 0, 0, NULL, NULL},
    {"typical_int24_8ch", h_typical, LCG, 0x9E3779u, 0x123456u, 0, 0, NULL, NULL},
    {"imu_float32_3ch", h_imu, DYADIC, 37u, 0u, 257u, 6, NULL, NULL},
    {"max_channels_int16_64ch", h_max_channels, LCG, 40503u, 12345u, 0, 0, NULL, NULL},
    {"sequence_wrap_int16_2ch", h_seq_wrap, LCG, 3u, 32768u, 0, 0, NULL, NULL},
    {"int24_extremes_2ch", h_int24_extremes, LIST_I32, 0, 0, 0, 0, int24_extremes, NULL},
    {"scale_offset_int16_4ch", h_scale_offset, LCG, 7919u, 1000u, 0, 0, NULL, NULL},
    {"float32_specials_1ch", h_float_specials, LIST_F32, 0, 0, 0, 0, NULL, float_specials},
    {"max_samples_int24_1ch", h_max_samples, LCG, 2654435u, 7u, 0, 0, NULL, NULL},
};
#define N_VECTORS (sizeof vectors / sizeof vectors[0])

/* Fill the sample array of the vector's format; returns it. */
static const void *fill_samples(const vector_t *v, const vigil_frame_t *f)
{
    size_t m = (size_t)f->n_samples * f->n_channels, k;
    unsigned bits = f->sample_format == VIGIL_FMT_INT16 ? 16u : 24u;
    for (k = 0; k < m; k++) {
        int32_t x = 0;
        float y = 0.0f;
        if (v->formula == LCG) {
            x = (int32_t)((v->a * k + v->b) % (1ull << bits)) - (int32_t)(1ul << (bits - 1u));
        } else if (v->formula == DYADIC) {
            y = (float)((int32_t)((v->a * k + v->b) % v->p) - (int32_t)(v->p / 2u)) / (float)(1ul << v->e);
        } else if (v->formula == LIST_I32) {
            x = v->ints[k];
        } else {
            y = v->floats[k];
        }
        s16[k] = (int16_t)x;
        s32[k] = x;
        f32[k] = y;
    }
    if (f->sample_format == VIGIL_FMT_INT16) {
        return s16;
    }
    return f->sample_format == VIGIL_FMT_INT24 ? (const void *)s32 : (const void *)f32;
}

/* Encode vector v into out; returns the length (0 on failure). */
static size_t encode_vector(const vector_t *v, vigil_frame_t *f)
{
    const void *samples;
    memset(f, 0, sizeof *f);
    v->header(f);
    samples = fill_samples(v, f);
    return vigil_frame_encode(f, samples, out, sizeof out);
}

static void check(int ok, const char *what)
{
    printf("%s %s\n", ok ? "ok" : "FAIL", what);
    if (!ok) {
        failures++;
    }
}

static size_t read_file(const char *dir, const char *name, uint8_t *buf, size_t cap)
{
    char path[1024];
    FILE *fp;
    size_t n;
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    fp = fopen(path, "rb");
    if (fp == NULL) {
        return 0;
    }
    n = fread(buf, 1, cap, fp);
    fclose(fp);
    return n;
}

static float f32_from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Each invalid field must make vigil_frame_encode return 0; the boundaries must pass. */
static void check_rejections(void)
{
    vigil_frame_t base, f;
    const void *samples;
    size_t size;

    memset(&base, 0, sizeof base);
    h_typical(&base);
    samples = fill_samples(&vectors[1], &base);
    size = vigil_frame_size(base.sample_format, base.n_channels, base.n_samples);
    check(size == 876u, "vigil_frame_size of the typical frame is 876");
    check(size == VIGIL_FRAME_MAX_SIZE(8u, 32u, VIGIL_FMT_INT24), "VIGIL_FRAME_MAX_SIZE agrees");
    check(vigil_frame_encode(&base, samples, out, size) == size, "exact capacity accepted");
    check(vigil_frame_encode(&base, samples, out, size - 1) == 0, "capacity one short rejected");
    check(vigil_frame_encode(NULL, samples, out, sizeof out) == 0, "NULL header rejected");
    check(vigil_frame_encode(&base, NULL, out, sizeof out) == 0, "NULL samples rejected");
    check(vigil_frame_encode(&base, samples, NULL, sizeof out) == 0, "NULL output rejected");
    check(vigil_frame_size(3, 1, 1) == 0 && vigil_frame_size(0, 0, 1) == 0 && vigil_frame_size(0, 65, 1) == 0
              && vigil_frame_size(0, 1, 0) == 0 && vigil_frame_size(0, 1, 4097) == 0,
          "vigil_frame_size rejects bad format, channels, samples");
    check(vigil_frame_size(0, 64, 4096) == 32u + 576u + 64u * 4096u * 2u + 4u, "vigil_frame_size at the limits");

#define REJECT(what, stmt)                                                      \
    do {                                                                        \
        f = base;                                                               \
        stmt;                                                                   \
        check(vigil_frame_encode(&f, samples, out, sizeof out) == 0, what);     \
    } while (0)
    REJECT("0 channels rejected", f.n_channels = 0);
    REJECT("65 channels rejected", f.n_channels = 65);
    REJECT("0 samples rejected", f.n_samples = 0);
    REJECT("4097 samples rejected", f.n_samples = 4097);
    REJECT("unknown format 3 rejected", f.sample_format = 3);
    REJECT("unknown kind 9 rejected", f.kinds[5] = 9);
    REJECT("rate 0 rejected", f.sample_rate = 0.0f);
    REJECT("negative rate rejected", f.sample_rate = -500.0f);
    REJECT("rate above 1e6 rejected", f.sample_rate = 1000000.0625f);
    REJECT("NaN rate rejected", f.sample_rate = f32_from_bits(0x7FC00000u));
    REJECT("infinite rate rejected", f.sample_rate = f32_from_bits(0x7F800000u));
    REJECT("infinite scale rejected", f.scale[2] = f32_from_bits(0xFF800000u));
    REJECT("NaN offset rejected", f.offset[7] = f32_from_bits(0x7FC00001u));
#undef REJECT
    f = base;
    s32[17] = 8388608;
    check(vigil_frame_encode(&f, s32, out, sizeof out) == 0, "int24 sample 2^23 rejected");
    s32[17] = -8388609;
    check(vigil_frame_encode(&f, s32, out, sizeof out) == 0, "int24 sample -2^23-1 rejected");
    s32[17] = 0;
    f.sample_rate = 1000000.0f;
    check(vigil_frame_encode(&f, s32, out, sizeof out) == size, "rate exactly 1e6 accepted");
}

/* The encoder must not depend on the alignment of the sample array. */
static void check_unaligned(void)
{
    static uint8_t raw[4 * MAX_VALUES + 1];
    static uint8_t aligned[MAX_FRAME];
    vigil_frame_t f;
    size_t n = encode_vector(&vectors[1], &f), m;
    memcpy(aligned, out, n);
    memcpy(raw + 1, s32, (size_t)f.n_samples * f.n_channels * sizeof(int32_t));
    m = vigil_frame_encode(&f, raw + 1, out, sizeof out);
    check(m == n && memcmp(aligned, out, n) == 0, "unaligned sample pointer gives the same bytes");
}

static void check_crc_and_cobs(void)
{
    static const uint8_t in[] = {0x11, 0x22, 0x00, 0x33};
    static const uint8_t want[] = {0x03, 0x11, 0x22, 0x02, 0x33, 0x00};
    uint8_t buf[16];
    uint32_t crc;
    check(vigil_crc32c("123456789", 9) == 0xE3069283u, "CRC-32C check value 0xE3069283");
    crc = vigil_crc32c_update(vigil_crc32c_update(0u, "1234", 4), "56789", 5);
    check(crc == 0xE3069283u, "CRC-32C in two chunks");
    check(vigil_crc32c("", 0) == 0u, "CRC-32C of nothing is 0");
    check(vigil_cobs_encode(in, sizeof in, buf, sizeof buf) == sizeof want && memcmp(buf, want, sizeof want) == 0,
          "COBS of 11 22 00 33");
    check(vigil_cobs_encode(in, sizeof in, buf, VIGIL_COBS_MAX_SIZE(sizeof in) - 1) == 0,
          "COBS rejects a short output buffer");
}

static int run_checks(const char *dir)
{
    size_t i;
    char what[128];
    for (i = 0; i < N_VECTORS; i++) {
        vigil_frame_t f;
        size_t n = encode_vector(&vectors[i], &f);
        size_t m = read_file(dir, vectors[i].name, expect, sizeof expect);
        size_t at = 0;
        while (at < n && at < m && out[at] == expect[at]) {
            at++;
        }
        if (n == 0 || m == 0 || n != m || at != n) {
            snprintf(what, sizeof what, "%s: C %lu bytes, file %lu bytes, first difference at byte %lu",
                     vectors[i].name, (unsigned long)n, (unsigned long)m, (unsigned long)at);
        } else {
            snprintf(what, sizeof what, "%s: %lu bytes identical", vectors[i].name, (unsigned long)n);
        }
        check(n != 0 && n == m && at == n, what);
    }
    check_crc_and_cobs();
    check_rejections();
    check_unaligned();
    printf("%d failure(s)\n", failures);
    return failures ? 1 : 0;
}

static void print_hex(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        printf("%02x", p[i]);
    }
    printf("\n");
}

static int print_vectors(void)
{
    size_t i;
    for (i = 0; i < N_VECTORS; i++) {
        vigil_frame_t f;
        size_t n = encode_vector(&vectors[i], &f);
        printf("%s ", vectors[i].name);
        print_hex(out, n);
    }
    return 0;
}

static int hex_digit(int ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    return ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

/* Each stdin line is hex (possibly empty); print the COBS encoding of its bytes as hex. */
static int cobs_filter(void)
{
    static uint8_t in[MAX_FRAME], enc[VIGIL_COBS_MAX_SIZE(MAX_FRAME)];
    size_t n = 0;
    int ch, hi = -1;
    while ((ch = getchar()) != EOF) {
        if (ch == '\n') {
            size_t m = vigil_cobs_encode(in, n, enc, sizeof enc);
            if (m == 0 || hi >= 0) {
                return 2;
            }
            print_hex(enc, m);
            n = 0;
        } else if (hex_digit(ch) >= 0 && n < sizeof in) {
            if (hi < 0) {
                hi = hex_digit(ch);
            } else {
                in[n++] = (uint8_t)(hi * 16 + hex_digit(ch));
                hi = -1;
            }
        } else if (ch != '\r') {
            return 2;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--hex") == 0) {
        return print_vectors();
    }
    if (argc == 2 && strcmp(argv[1], "--cobs") == 0) {
        return cobs_filter();
    }
    if (argc == 2) {
        return run_checks(argv[1]);
    }
    fprintf(stderr, "usage: %s VECTOR_DIR | --hex | --cobs\n", argv[0]);
    return 2;
}
