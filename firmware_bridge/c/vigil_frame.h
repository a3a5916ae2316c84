/*
 * vigil_frame.h - header-only C99 reference encoder for Vigil frame v1.
 *
 * Drop this one file into a firmware project (nRF52, ESP32, any C99 toolchain). It needs only
 * <stdint.h>, <stddef.h> and <string.h>: no malloc, no libm, no stdio. Every multi-byte field is
 * written byte by byte in little-endian order, so it is correct on hosts of either endianness;
 * floats are written as their IEEE-754 binary32 bits (copied with memcpy, so no aliasing UB).
 * The byte layout matches firmware_bridge/protocol.py exactly; firmware_bridge/c/vectors/ holds
 * shared test vectors and test_vectors.c checks this file against them.
 *
 * USAGE
 *
 *     #include "vigil_frame.h"
 *
 *     static int32_t samples[32][8];            // sample-major: samples[i][c]
 *     static uint8_t frame[VIGIL_FRAME_MAX_SIZE(8, 32, VIGIL_FMT_INT24)];
 *     static uint8_t wire[VIGIL_COBS_MAX_SIZE(sizeof frame)];
 *
 *     vigil_frame_t f = {0};
 *     f.device_id = 0xA1B2C3D4u;  f.stream_id = 1;  f.sequence = seq++;
 *     f.timestamp_us = t_first_sample_us;  f.sample_rate = 500.0f;
 *     f.sample_format = VIGIL_FMT_INT24;  f.n_channels = 8;  f.n_samples = 32;
 *     for (c = 0; c < 8; c++) { f.kinds[c] = VIGIL_KIND_EEG; f.scale[c] = 0.0223517f; f.offset[c] = 0; }
 *     size_t n = vigil_frame_encode(&f, samples, frame, sizeof frame);    // 0 on error
 *     // UDP: send frame[0..n). BLE: split it across notifications.
 *     // UART/TCP: size_t m = vigil_cobs_encode(frame, n, wire, sizeof wire); send wire[0..m)
 *
 * Samples are passed in their wire format's C type, sample-major (all channels of sample 0, then
 * sample 1, ...): int16_t for VIGIL_FMT_INT16, int32_t in [-2^23, 2^23) for VIGIL_FMT_INT24 (the
 * low three bytes go on the wire), float for VIGIL_FMT_FLOAT32. The pointer need not be aligned.
 * The receiver computes physical = raw * scale[c] + offset[c] per channel.
 *
 * vigil_frame_encode returns 0, writing nothing useful, when the output is too small or a field
 * is out of range: channels not in 1..64 (or above VIGIL_CHANNEL_CAP), samples not in 1..4096,
 * unknown format or channel kind, sample rate not in (0, 1e6] Hz or NaN, non-finite scale or
 * offset, an int24 sample outside [-2^23, 2^23). These are exactly the frames the Python decoder
 * rejects, so a frame this encoder emits always decodes.
 *
 * WIRE LAYOUT (version 1, all fields little-endian)
 *
 *     offset  size  field
 *     0       2     magic "VG" (0x56 0x47)
 *     2       1     version (1)
 *     3       1     flags (0; reserved)
 *     4       2     header length H = 32 + 9 * C (bytes before the payload, u16)
 *     6       4     device id (u32)
 *     10      1     stream id (u8)
 *     11      1     sample format: 0 int16, 1 int24, 2 float32
 *     12      1     channels C (1..64)
 *     13      1     reserved (0)
 *     14      2     samples per channel N (1..4096)
 *     16      4     sequence number (u32, +1 per frame of the stream, wraps 0xFFFFFFFF -> 0)
 *     20      8     device timestamp of the first sample, microseconds (u64)
 *     28      4     sample rate, Hz (f32, 0 < fs <= 1e6)
 *     32      9*C   per channel: kind (u8), scale (f32), offset (f32)
 *     H       ...   payload: N * C samples, sample-major, 2, 3 or 4 bytes each
 *     end-4   4     CRC-32C of every byte before it
 *
 * Total size: 32 + 9*C + N*C*width + 4 bytes (VIGIL_FRAME_MAX_SIZE, vigil_frame_size).
 *
 * CRC CHOICE
 *
 * CRC-32C (Castagnoli): polynomial 0x1EDC6F41 (reflected 0x82F63B78), init 0xFFFFFFFF, reflected
 * in and out, final XOR 0xFFFFFFFF; check value vigil_crc32c("123456789", 9) == 0xE3069283. A
 * 16-bit CRC would pass one corrupted multi-kilobyte frame in 65,536; CRC-32C keeps Hamming
 * distance 6 up to 655 bytes, is the CRC of iSCSI and ext4, and has hardware instructions on
 * x86 (SSE4.2) and ARMv8. The default here is a 1 KiB table (about 10 cycles a byte on a
 * Cortex-M4); define VIGIL_CRC32C_BITWISE before including to use a table-free loop instead
 * (smaller flash, about 8x slower). On an ESP32 or nRF52 you may substitute a hardware or ROM
 * CRC-32C routine as long as it gives the check value above.
 *
 * COBS
 *
 * Byte streams (UART, USB CDC, TCP) carry each frame COBS-encoded and followed by one 0x00
 * delimiter (vigil_cobs_encode), so a receiver resynchronises at the next zero after any loss.
 * UDP carries one raw frame per datagram; no COBS.
 *
 * CONFIGURATION (define before including)
 *
 *     VIGIL_CHANNEL_CAP     size of the per-channel arrays in vigil_frame_t (default and max 64);
 *                           lower it to save RAM (9 bytes a channel)
 *     VIGIL_CRC32C_BITWISE  table-free CRC-32C
 */
#ifndef VIGIL_FRAME_H
#define VIGIL_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VIGIL_VERSION 1u
#define VIGIL_FIXED_HEADER 32u
#define VIGIL_PER_CHANNEL 9u
#define VIGIL_CRC_SIZE 4u
#define VIGIL_MAX_CHANNELS 64u
#define VIGIL_MAX_SAMPLES 4096u
#define VIGIL_MAX_RATE_HZ 1000000.0f

#ifndef VIGIL_CHANNEL_CAP
#define VIGIL_CHANNEL_CAP 64
#endif

/* Sample formats (wire byte 9). */
enum { VIGIL_FMT_INT16 = 0, VIGIL_FMT_INT24 = 1, VIGIL_FMT_FLOAT32 = 2 };

/* Channel kinds (first byte of each channel-table entry). */
enum {
    VIGIL_KIND_OTHER = 0,
    VIGIL_KIND_ECG = 1,
    VIGIL_KIND_EEG = 2,
    VIGIL_KIND_EMG = 3,
    VIGIL_KIND_IMU_ACC = 4,
    VIGIL_KIND_IMU_GYRO = 5,
    VIGIL_KIND_PPG = 6,
    VIGIL_KIND_RESP = 7,
    VIGIL_KIND_TEMP = 8,
    VIGIL_KIND_MAX = 8
};

/* Bytes per sample of a format (2, 3, 4), or 0 if unknown; an argument may be evaluated twice. */
#define VIGIL_FORMAT_WIDTH(fmt) ((fmt) == VIGIL_FMT_INT16 ? 2u : (fmt) == VIGIL_FMT_INT24 ? 3u \
                                 : (fmt) == VIGIL_FMT_FLOAT32 ? 4u : 0u)
/* Encoded frame size for buffer declarations (constant expression for constant arguments). */
#define VIGIL_FRAME_MAX_SIZE(n_channels, n_samples, fmt) \
    (VIGIL_FIXED_HEADER + VIGIL_PER_CHANNEL * (n_channels) \
     + (n_samples) * (n_channels) * VIGIL_FORMAT_WIDTH(fmt) + VIGIL_CRC_SIZE)
/* Worst-case COBS output for n input bytes, delimiter included. */
#define VIGIL_COBS_MAX_SIZE(n) ((n) + (n) / 254u + 2u)

/* Compile-time checks: IEEE-754 binary32 float and a sane channel cap. */
typedef char vigil_check_float_is_32_bits[(sizeof(float) == 4) ? 1 : -1];
typedef char vigil_check_channel_cap[(VIGIL_CHANNEL_CAP >= 1 && VIGIL_CHANNEL_CAP <= 64) ? 1 : -1];

/* Frame header: everything but the samples. */
typedef struct {
    uint32_t device_id;
    uint8_t stream_id;
    uint32_t sequence;
    uint64_t timestamp_us;   /* device time of the first sample */
    float sample_rate;       /* Hz, 0 < fs <= 1e6 */
    uint8_t sample_format;   /* VIGIL_FMT_* */
    uint8_t n_channels;      /* 1..VIGIL_CHANNEL_CAP */
    uint16_t n_samples;      /* per channel, 1..4096 */
    uint8_t kinds[VIGIL_CHANNEL_CAP];   /* VIGIL_KIND_* */
    float scale[VIGIL_CHANNEL_CAP];     /* physical = raw * scale + offset */
    float offset[VIGIL_CHANNEL_CAP];
} vigil_frame_t;

/* ---- CRC-32C ---------------------------------------------------------------------------- */

#ifndef VIGIL_CRC32C_BITWISE
static const uint32_t vigil_crc32c_table[256] = {
    0x00000000u, 0xf26b8303u, 0xe13b70f7u, 0x1350f3f4u, 0xc79a971fu, 0x35f1141cu,
    0x26a1e7e8u, 0xd4ca64ebu, 0x8ad958cfu, 0x78b2dbccu, 0x6be22838u, 0x9989ab3bu,
    0x4d43cfd0u, 0xbf284cd3u, 0xac78bf27u, 0x5e133c24u, 0x105ec76fu, 0xe235446cu,
    0xf165b798u, 0x030e349bu, 0xd7c45070u, 0x25afd373u, 0x36ff2087u, 0xc494a384u,
    0x9a879fa0u, 0x68ec1ca3u, 0x7bbcef57u, 0x89d76c54u, 0x5d1d08bfu, 0xaf768bbcu,
    0xbc267848u, 0x4e4dfb4bu, 0x20bd8edeu, 0xd2d60dddu, 0xc186fe29u, 0x33ed7d2au,
    0xe72719c1u, 0x154c9ac2u, 0x061c6936u, 0xf477ea35u, 0xaa64d611u, 0x580f5512u,
    0x4b5fa6e6u, 0xb93425e5u, 0x6dfe410eu, 0x9f95c20du, 0x8cc531f9u, 0x7eaeb2fau,
    0x30e349b1u, 0xc288cab2u, 0xd1d83946u, 0x23b3ba45u, 0xf779deaeu, 0x05125dadu,
    0x1642ae59u, 0xe4292d5au, 0xba3a117eu, 0x4851927du, 0x5b016189u, 0xa96ae28au,
    0x7da08661u, 0x8fcb0562u, 0x9c9bf696u, 0x6ef07595u, 0x417b1dbcu, 0xb3109ebfu,
    0xa0406d4bu, 0x522bee48u, 0x86e18aa3u, 0x748a09a0u, 0x67dafa54u, 0x95b17957u,
    0xcba24573u, 0x39c9c670u, 0x2a993584u, 0xd8f2b687u, 0x0c38d26cu, 0xfe53516fu,
    0xed03a29bu, 0x1f682198u, 0x5125dad3u, 0xa34e59d0u, 0xb01eaa24u, 0x42752927u,
    0x96bf4dccu, 0x64d4cecfu, 0x77843d3bu, 0x85efbe38u, 0xdbfc821cu, 0x2997011fu,
    0x3ac7f2ebu, 0xc8ac71e8u, 0x1c661503u, 0xee0d9600u, 0xfd5d65f4u, 0x0f36e6f7u,
    0x61c69362u, 0x93ad1061u, 0x80fde395u, 0x72966096u, 0xa65c047du, 0x5437877eu,
    0x4767748au, 0xb50cf789u, 0xeb1fcbadu, 0x197448aeu, 0x0a24bb5au, 0xf84f3859u,
    0x2c855cb2u, 0xdeeedfb1u, 0xcdbe2c45u, 0x3fd5af46u, 0x7198540du, 0x83f3d70eu,
    0x90a324fau, 0x62c8a7f9u, 0xb602c312u, 0x44694011u, 0x5739b3e5u, 0xa55230e6u,
    0xfb410cc2u, 0x092a8fc1u, 0x1a7a7c35u, 0xe811ff36u, 0x3cdb9bddu, 0xceb018deu,
    0xdde0eb2au, 0x2f8b6829u, 0x82f63b78u, 0x709db87bu, 0x63cd4b8fu, 0x91a6c88cu,
    0x456cac67u, 0xb7072f64u, 0xa457dc90u, 0x563c5f93u, 0x082f63b7u, 0xfa44e0b4u,
    0xe9141340u, 0x1b7f9043u, 0xcfb5f4a8u, 0x3dde77abu, 0x2e8e845fu, 0xdce5075cu,
    0x92a8fc17u, 0x60c37f14u, 0x73938ce0u, 0x81f80fe3u, 0x55326b08u, 0xa759e80bu,
    0xb4091bffu, 0x466298fcu, 0x1871a4d8u, 0xea1a27dbu, 0xf94ad42fu, 0x0b21572cu,
    0xdfeb33c7u, 0x2d80b0c4u, 0x3ed04330u, 0xccbbc033u, 0xa24bb5a6u, 0x502036a5u,
    0x4370c551u, 0xb11b4652u, 0x65d122b9u, 0x97baa1bau, 0x84ea524eu, 0x7681d14du,
    0x2892ed69u, 0xdaf96e6au, 0xc9a99d9eu, 0x3bc21e9du, 0xef087a76u, 0x1d63f975u,
    0x0e330a81u, 0xfc588982u, 0xb21572c9u, 0x407ef1cau, 0x532e023eu, 0xa145813du,
    0x758fe5d6u, 0x87e466d5u, 0x94b49521u, 0x66df1622u, 0x38cc2a06u, 0xcaa7a905u,
    0xd9f75af1u, 0x2b9cd9f2u, 0xff56bd19u, 0x0d3d3e1au, 0x1e6dcdeeu, 0xec064eedu,
    0xc38d26c4u, 0x31e6a5c7u, 0x22b65633u, 0xd0ddd530u, 0x0417b1dbu, 0xf67c32d8u,
    0xe52cc12cu, 0x1747422fu, 0x49547e0bu, 0xbb3ffd08u, 0xa86f0efcu, 0x5a048dffu,
    0x8ecee914u, 0x7ca56a17u, 0x6ff599e3u, 0x9d9e1ae0u, 0xd3d3e1abu, 0x21b862a8u,
    0x32e8915cu, 0xc083125fu, 0x144976b4u, 0xe622f5b7u, 0xf5720643u, 0x07198540u,
    0x590ab964u, 0xab613a67u, 0xb831c993u, 0x4a5a4a90u, 0x9e902e7bu, 0x6cfbad78u,
    0x7fab5e8cu, 0x8dc0dd8fu, 0xe330a81au, 0x115b2b19u, 0x020bd8edu, 0xf0605beeu,
    0x24aa3f05u, 0xd6c1bc06u, 0xc5914ff2u, 0x37faccf1u, 0x69e9f0d5u, 0x9b8273d6u,
    0x88d28022u, 0x7ab90321u, 0xae7367cau, 0x5c18e4c9u, 0x4f48173du, 0xbd23943eu,
    0xf36e6f75u, 0x0105ec76u, 0x12551f82u, 0xe03e9c81u, 0x34f4f86au, 0xc69f7b69u,
    0xd5cf889du, 0x27a40b9eu, 0x79b737bau, 0x8bdcb4b9u, 0x988c474du, 0x6ae7c44eu,
    0xbe2da0a5u, 0x4c4623a6u, 0x5f16d052u, 0xad7d5351u,
};
#endif

/* Continue a CRC-32C: start with crc = 0, pass each result back in; chunks may be any size. */
static inline uint32_t vigil_crc32c_update(uint32_t crc, const void *data, size_t n)
{
    const uint8_t *p = (const uint8_t *)data;
    uint32_t c = ~crc;
    size_t i;
    for (i = 0; i < n; i++) {
#ifdef VIGIL_CRC32C_BITWISE
        int k;
        c ^= p[i];
        for (k = 0; k < 8; k++) {
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        }
#else
        c = (c >> 8) ^ vigil_crc32c_table[(c ^ p[i]) & 0xFFu];
#endif
    }
    return ~c;
}

/* CRC-32C of n bytes; vigil_crc32c("123456789", 9) == 0xE3069283. */
static inline uint32_t vigil_crc32c(const void *data, size_t n)
{
    return vigil_crc32c_update(0u, data, n);
}

/* ---- frame encoder ---------------------------------------------------------------------- */

static inline void vigil_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

static inline void vigil_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

static inline void vigil_put_u64(uint8_t *p, uint64_t v)
{
    vigil_put_u32(p, (uint32_t)(v & 0xFFFFFFFFu));
    vigil_put_u32(p + 4, (uint32_t)(v >> 32));
}

/* The IEEE-754 bits of a float (memcpy: no aliasing UB, no dependence on byte order). */
static inline uint32_t vigil_f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline int vigil_f32_finite(float x)
{
    return (vigil_f32_bits(x) & 0x7F800000u) != 0x7F800000u;
}

/* Encoded size of a frame, or 0 if the channel count, sample count or format is invalid. */
static inline size_t vigil_frame_size(unsigned sample_format, unsigned n_channels, unsigned n_samples)
{
    size_t width = VIGIL_FORMAT_WIDTH(sample_format);
    if (width == 0 || n_channels < 1 || n_channels > VIGIL_MAX_CHANNELS || n_samples < 1
        || n_samples > VIGIL_MAX_SAMPLES) {
        return 0;
    }
    return VIGIL_FIXED_HEADER + VIGIL_PER_CHANNEL * (size_t)n_channels
           + (size_t)n_samples * n_channels * width + VIGIL_CRC_SIZE;
}

/* 1 if every header field is in range (see the top of this file), else 0. */
static inline int vigil_frame_valid(const vigil_frame_t *f)
{
    unsigned c;
    if (f == NULL || f->n_channels > VIGIL_CHANNEL_CAP
        || vigil_frame_size(f->sample_format, f->n_channels, f->n_samples) == 0) {
        return 0;
    }
    if (!(f->sample_rate > 0.0f && f->sample_rate <= VIGIL_MAX_RATE_HZ)) { /* false for NaN */
        return 0;
    }
    for (c = 0; c < f->n_channels; c++) {
        if (f->kinds[c] > VIGIL_KIND_MAX || !vigil_f32_finite(f->scale[c])
            || !vigil_f32_finite(f->offset[c])) {
            return 0;
        }
    }
    return 1;
}

/*
 * Encode header f and n_samples * n_channels samples (sample-major, the format's C type, see the
 * top of this file) into out. Returns the frame length, or 0 if out_cap is too small or a field or
 * sample is out of range.
 */
static inline size_t vigil_frame_encode(const vigil_frame_t *f, const void *samples, uint8_t *out,
                                        size_t out_cap)
{
    const uint8_t *src = (const uint8_t *)samples;
    size_t size, i, m, hlen;
    unsigned c;
    uint8_t *p;

    if (!vigil_frame_valid(f) || samples == NULL || out == NULL) {
        return 0;
    }
    size = vigil_frame_size(f->sample_format, f->n_channels, f->n_samples);
    if (out_cap < size) {
        return 0;
    }
    hlen = VIGIL_FIXED_HEADER + VIGIL_PER_CHANNEL * (size_t)f->n_channels;

    out[0] = 0x56u; /* 'V' */
    out[1] = 0x47u; /* 'G' */
    out[2] = (uint8_t)VIGIL_VERSION;
    out[3] = 0u; /* flags, reserved */
    vigil_put_u16(out + 4, (uint16_t)hlen);
    vigil_put_u32(out + 6, f->device_id);
    out[10] = f->stream_id;
    out[11] = f->sample_format;
    out[12] = f->n_channels;
    out[13] = 0u; /* reserved */
    vigil_put_u16(out + 14, f->n_samples);
    vigil_put_u32(out + 16, f->sequence);
    vigil_put_u64(out + 20, f->timestamp_us);
    vigil_put_u32(out + 28, vigil_f32_bits(f->sample_rate));
    p = out + VIGIL_FIXED_HEADER;
    for (c = 0; c < f->n_channels; c++, p += VIGIL_PER_CHANNEL) {
        p[0] = f->kinds[c];
        vigil_put_u32(p + 1, vigil_f32_bits(f->scale[c]));
        vigil_put_u32(p + 5, vigil_f32_bits(f->offset[c]));
    }

    m = (size_t)f->n_samples * f->n_channels;
    p = out + hlen;
    if (f->sample_format == VIGIL_FMT_INT16) {
        for (i = 0; i < m; i++, p += 2) {
            int16_t v;
            memcpy(&v, src + i * sizeof v, sizeof v);
            vigil_put_u16(p, (uint16_t)v);
        }
    } else if (f->sample_format == VIGIL_FMT_INT24) {
        for (i = 0; i < m; i++, p += 3) {
            int32_t v;
            uint32_t u;
            memcpy(&v, src + i * sizeof v, sizeof v);
            if (v < -8388608 || v > 8388607) {
                return 0;
            }
            u = (uint32_t)v; /* two's complement modulo 2^32; the low 24 bits are the wire value */
            p[0] = (uint8_t)(u & 0xFFu);
            p[1] = (uint8_t)((u >> 8) & 0xFFu);
            p[2] = (uint8_t)((u >> 16) & 0xFFu);
        }
    } else {
        for (i = 0; i < m; i++, p += 4) {
            float v;
            memcpy(&v, src + i * sizeof v, sizeof v);
            vigil_put_u32(p, vigil_f32_bits(v));
        }
    }
    vigil_put_u32(p, vigil_crc32c(out, size - VIGIL_CRC_SIZE));
    return size;
}

/* ---- COBS ------------------------------------------------------------------------------- */

/*
 * COBS-encode n bytes of src into dst and append the 0x00 delimiter. Returns the bytes written
 * (at most VIGIL_COBS_MAX_SIZE(n)), or 0 if dst_cap < VIGIL_COBS_MAX_SIZE(n) (the worst case is
 * required, so the check does not depend on the data). src and dst must not overlap.
 * Byte-identical to firmware_bridge/cobs.py: a block that ends a full 254-byte run is closed with
 * a 0x01 code (some encoders omit it; every COBS decoder accepts both).
 */
static inline size_t vigil_cobs_encode(const uint8_t *src, size_t n, uint8_t *dst, size_t dst_cap)
{
    size_t i, code_pos = 0, o = 1;
    uint8_t code = 1;

    if (dst == NULL || (src == NULL && n > 0) || dst_cap < VIGIL_COBS_MAX_SIZE(n)) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (src[i] != 0) {
            dst[o++] = src[i];
            code++;
        }
        if (src[i] == 0 || code == 0xFFu) {
            dst[code_pos] = code;
            code_pos = o++;
            code = 1;
        }
    }
    dst[code_pos] = code;
    dst[o++] = 0x00u;
    return o;
}

#ifdef __cplusplus
}
#endif

#endif /* VIGIL_FRAME_H */
