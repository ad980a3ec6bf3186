/* Tests for engine/safetensors: round trips, byte-exact output against hand-made bytes and the
 * reference writer's own published vectors, exact dtype conversions, and refusal (status and
 * message) of every malformed-file case of reference/peft-spec.md section 6. TCase "mapped":
 * st_map, and checkpoint_open's base weights mapped copy-on-write from model.safetensors (which
 * layouts map, bitwise the copy path's numbers, writes that stay private, pages shared between
 * processes, mmap/madvise failures that fall back to copying). Files go to a
 * mkdtemp folder under /tmp per test case, created and removed (recursively) by an unchecked
 * fixture, which runs in the runner process and so also cleans up after a failed test. */
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "st"
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "model.h"
#include "optim.h"
#include "safetensors.h"
#include "tokenizer.h"
#include "train.h"
#include "util.h"

/* ------------------------------------------------------------------------------------------ */
/* helpers                                                                                     */

/* A file: 8-byte little-endian hlen, the header bytes, then dlen data bytes (a counting
 * pattern, or `data` when given). */
static char *make_file(const char *hdr, size_t hlen, const void *data, size_t dlen, size_t *len) {
    char *f = malloc(8 + hlen + dlen + 1);
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 8; i++) f[i] = (char)((uint64_t)hlen >> (8 * i));
    memcpy(f + 8, hdr, hlen);
    for (size_t i = 0; i < dlen; i++)
        f[8 + hlen + i] = data ? ((const char *)data)[i] : (char)(i * 7 + 1);
    *len = 8 + hlen + dlen;
    return f;
}

static LLStatus parse_hdr_n(const char *hdr, size_t hlen, const void *data, size_t dlen,
                            SafeTensors *st, LLError *err) {
    size_t len;
    char *f = make_file(hdr, hlen, data, dlen, &len);
    LLStatus rc = st_parse(f, len, st, err);
    free(f);
    return rc;
}

static LLStatus parse_hdr(const char *hdr, size_t dlen, SafeTensors *st, LLError *err) {
    return parse_hdr_n(hdr, strlen(hdr), NULL, dlen, st, err);
}

/* A refused file: LL_ERR_FORMAT, the message contains `want`, and st is left empty. */
static void check_refused_n(const char *hdr, size_t hlen, size_t dlen, const char *want) {
    SafeTensors st;
    LLError err = {0};
    LLStatus rc = parse_hdr_n(hdr, hlen, NULL, dlen, &st, &err);
    ck_assert_msg(rc == LL_ERR_FORMAT, "header %.*s: expected LL_ERR_FORMAT, got %d (%s)",
                  (int)hlen, hdr, rc, err.msg);
    ck_assert_msg(strstr(err.msg, want) != NULL, "header %.*s: message '%s' lacks '%s'",
                  (int)hlen, hdr, err.msg, want);
    ck_assert_msg(st.buf == NULL && st.tensors == NULL && st.n == 0, "st not empty on failure");
    st_free(&st);
}

static void check_refused(const char *hdr, size_t dlen, const char *want) {
    check_refused_n(hdr, strlen(hdr), dlen, want);
}

static void check_raw_refused(const char *bytes, size_t len, const char *want) {
    SafeTensors st;
    LLError err = {0};
    LLStatus rc = st_parse(bytes, len, &st, &err);
    ck_assert_msg(rc == LL_ERR_FORMAT, "%zu bytes: expected LL_ERR_FORMAT, got %d", len, rc);
    ck_assert_msg(strstr(err.msg, want) != NULL, "message '%s' lacks '%s'", err.msg, want);
    st_free(&st);
}

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

#define ck_assert_float_bits(got, want)                                                      \
    ck_assert_msg(bits_of(got) == bits_of(want), "%s = %.9g (0x%08x), want %.9g (0x%08x)",   \
                  #got, (double)(got), bits_of(got), (double)(want), bits_of(want))

/* ------------------------------------------------------------------------------------------ */
/* core                                                                                        */

START_TEST(test_round_trip) {
    char dir[96], path[160];
    tu_tmpdir_new(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);

    const float w[6] = {1.5f, -2.25f, 0.0f, -0.0f, INFINITY, 1e-40f /* subnormal */};
    const float bias[3] = {0.125f, 3.0e38f, -7.0f};
    const float scalar = 42.0f;
    int64_t sw[2] = {2, 3}, sb[1] = {3}, se[2] = {0, 4};

    StWriter *wr = st_writer_new();
    st_writer_meta(wr, "format", "pt");
    st_writer_add_f32(wr, "layer.w", 2, sw, w);
    st_writer_add_f32(wr, "scalar", 0, NULL, &scalar);
    st_writer_add_f32(wr, "empty", 2, se, NULL);
    st_writer_add_f32(wr, "bias", 1, sb, bias);
    LLError err = {0};
    ck_assert_int_eq(st_writer_write(wr, path, &err), LL_OK);
    st_writer_free(wr);
    ck_assert_int_eq(tu_count_entries(dir, ""), 1); /* the atomic write left no temporary behind */

    SafeTensors st;
    ck_assert_msg(st_load(path, &st, &err) == LL_OK, "%s", err.msg);
    ck_assert_int_eq(st.n, 4);
    ck_assert_uint_eq(st.header_len % 8, 0);
    ck_assert_str_eq(st_meta_get(&st, "format"), "pt");
    ck_assert_ptr_null(st_meta_get(&st, "other"));
    ck_assert_str_eq(st.path, path);

    /* Data order = writer order (one dtype: names bytewise), offsets exactly tiled. */
    const char *names[4] = {"bias", "empty", "layer.w", "scalar"};
    const size_t begin[4] = {0, 12, 12, 36}, end[4] = {12, 12, 36, 40};
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(st.tensors[i].name, names[i]);
        ck_assert_int_eq(st.tensors[i].dtype, ST_F32);
        ck_assert_uint_eq(st.tensors[i].begin, begin[i]);
        ck_assert_uint_eq(st.tensors[i].end, end[i]);
    }
    ck_assert_uint_eq(st.data_len, 40);

    float got[6];
    ck_assert_int_eq(st_read_f32(&st, "layer.w", 2, sw, got, &err), LL_OK);
    ck_assert_int_eq(memcmp(got, w, sizeof w), 0);
    ck_assert_int_eq(st_read_f32(&st, "bias", 1, sb, got, &err), LL_OK);
    ck_assert_int_eq(memcmp(got, bias, sizeof bias), 0);
    ck_assert_int_eq(st_read_f32(&st, "scalar", 0, NULL, got, &err), LL_OK);
    ck_assert_float_bits(got[0], scalar);
    const StTensor *t = st_find(&st, "scalar");
    ck_assert_int_eq(t->ndim, 0);
    ck_assert_uint_eq(st_tensor_numel(t), 1);
    t = st_find(&st, "empty");
    ck_assert_int_eq(t->ndim, 2);
    ck_assert_int_eq(t->shape[0], 0);
    ck_assert_int_eq(t->shape[1], 4);
    ck_assert_uint_eq(st_tensor_numel(t), 0);
    ck_assert_int_eq(st_read_f32(&st, "empty", 2, se, got, &err), LL_OK);
    ck_assert_ptr_null(st_find(&st, "missing"));
    st_free(&st);
    st_free(&st); /* idempotent */

    /* Overwriting keeps the file valid and still leaves no temporary. */
    wr = st_writer_new();
    st_writer_add_f32(wr, "only", 0, NULL, &scalar);
    ck_assert_int_eq(st_writer_write(wr, path, &err), LL_OK);
    st_writer_free(wr);
    ck_assert_int_eq(st_load(path, &st, &err), LL_OK);
    ck_assert_int_eq(st.n, 1);
    ck_assert_ptr_null(st.metadata);
    st_free(&st);
    ck_assert_int_eq(tu_count_entries(dir, ""), 1);
    tu_tmpdir_remove(dir);
}
END_TEST

/* The expected file written out by hand from the format rules: 138 bytes of compact JSON,
 * __metadata__ first, tensors by name, 6 spaces of padding to 144 = 0x90, then the data of "a"
 * (0.5f) and "b" (1.0f, -2.0f) as little-endian floats. */
START_TEST(test_write_bytes_exact) {
    static const char want[] =
        "\x90\0\0\0\0\0\0\0"
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}"
        "      "
        "\x00\x00\x00\x3f"
        "\x00\x00\x80\x3f"
        "\x00\x00\x00\xc0";
    const float a = 0.5f, b[2] = {1.0f, -2.0f};
    int64_t sb[1] = {2};
    StWriter *w = st_writer_new();
    st_writer_add_f32(w, "b", 1, sb, b);
    st_writer_meta(w, "format", "wrong");
    st_writer_meta(w, "format", "pt"); /* a repeated key replaces the value */
    st_writer_add_f32(w, "a", 0, NULL, &a);
    char *out;
    size_t len;
    LLError err = {0};
    ck_assert_int_eq(st_writer_serialize(w, &out, &len, &err), LL_OK);
    ck_assert_uint_eq(len, sizeof want - 1);
    ck_assert_int_eq(memcmp(out, want, len), 0);
    free(out);

    /* The same bytes land in the file. */
    char dir[96], path[160];
    tu_tmpdir_new(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    ck_assert_int_eq(st_writer_write(w, path, &err), LL_OK);
    st_writer_free(w);
    char *file = tu_slurp(path, &len);
    ck_assert_uint_eq(len, sizeof want - 1);
    ck_assert_int_eq(memcmp(file, want, len), 0);
    free(file);
    tu_tmpdir_remove(dir);
}
END_TEST

/* Expected outputs published in the reference implementation's own unit tests
 * (huggingface/safetensors, safetensors/src/tensor.rs: test_serialization,
 * test_serialization_forced_alignement, test_empty). */
START_TEST(test_write_reference_vectors) {
    const float data[6] = {0, 1, 2, 3, 4, 5};
    static const char f32_0_5[] = "\x00\x00\x00\x00\x00\x00\x80\x3f\x00\x00\x00\x40"
                                  "\x00\x00\x40\x40\x00\x00\x80\x40\x00\x00\xa0\x40";
    static const struct {
        const char *name;
        int ndim;
        int64_t shape[4];
        const char *header; /* after the 8-byte length */
    } cases[] = {
        {"attn.0", 3, {1, 2, 3},
         "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}"},
        {"attn0", 4, {1, 1, 2, 3},
         "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       "},
    };
    LLError err = {0};
    char *out;
    size_t len;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        StWriter *w = st_writer_new();
        st_writer_add_f32(w, cases[i].name, cases[i].ndim, cases[i].shape, data);
        ck_assert_int_eq(st_writer_serialize(w, &out, &len, &err), LL_OK);
        st_writer_free(w);
        size_t hl = strlen(cases[i].header);
        ck_assert_uint_eq(hl, i == 0 ? 64 : 72);
        ck_assert_uint_eq(len, 8 + hl + 24);
        ck_assert_int_eq((unsigned char)out[0], hl);
        for (int k = 1; k < 8; k++) ck_assert_int_eq(out[k], 0);
        ck_assert_int_eq(memcmp(out + 8, cases[i].header, hl), 0);
        ck_assert_int_eq(memcmp(out + 8 + hl, f32_0_5, 24), 0);
        free(out);
    }

    StWriter *w = st_writer_new();
    ck_assert_int_eq(st_writer_serialize(w, &out, &len, &err), LL_OK);
    ck_assert_uint_eq(len, 16);
    ck_assert_int_eq(memcmp(out, "\x08\0\0\0\0\0\0\0{}      ", 16), 0);
    free(out);
    st_writer_meta(w, "framework", "pt");
    ck_assert_int_eq(st_writer_serialize(w, &out, &len, &err), LL_OK);
    ck_assert_uint_eq(len, 48);
    ck_assert_int_eq(memcmp(out, "\x28\0\0\0\0\0\0\0{\"__metadata__\":{\"framework\":\"pt\"}}     ",
                            48), 0);
    /* And the reader takes them back. */
    SafeTensors st;
    ck_assert_int_eq(st_parse(out, len, &st, &err), LL_OK);
    ck_assert_int_eq(st.n, 0);
    ck_assert_str_eq(st_meta_get(&st, "framework"), "pt");
    st_free(&st);
    free(out);
    st_writer_free(w);
}
END_TEST

/* Mixed dtypes: F32 sorts before BF16 (descending enum order), names bytewise within a dtype;
 * metadata keys bytewise; names escaped as serde_json does. */
START_TEST(test_write_order_and_escapes) {
    const uint16_t a[2] = {0x3f80, 0xc000};
    const float z = 1.0f, bb = 2.0f;
    int64_t s1[1] = {1}, s2[1] = {2};
    StWriter *w = st_writer_new();
    st_writer_add_bf16(w, "a", 1, s2, a);
    st_writer_add_f32(w, "z", 1, s1, &z);
    st_writer_add_f32(w, "b", 1, s1, &bb);
    char *out;
    size_t len;
    LLError err = {0};
    ck_assert_int_eq(st_writer_serialize(w, &out, &len, &err), LL_OK);
    st_writer_free(w);
    static const char hdr[] =
        "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"z\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
        "\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]}}      ";
    ck_assert_uint_eq(sizeof hdr - 1, 168);
    ck_assert_uint_eq(len, 8 + 168 + 12);
    ck_assert_int_eq(memcmp(out + 8, hdr, 168), 0);
    SafeTensors st;
    ck_assert_int_eq(st_parse(out, len, &st, &err), LL_OK);
    float got[2];
    ck_assert_int_eq(st_read_f32(&st, "a", 1, s2, got, &err), LL_OK);
    ck_assert_float_bits(got[0], 1.0f);
    ck_assert_float_bits(got[1], -2.0f);
    ck_assert_int_eq(st_read_f32(&st, "z", 1, s1, got, &err), LL_OK);
    ck_assert_float_bits(got[0], 1.0f);
    st_free(&st);
    free(out);

    /* Escapes: quote, backslash, newline, tab, 0x01, 0x1f, 0x7f raw, UTF-8 raw, '/' raw. */
    const char *name = "q\"b\\n\n\t\x01\x1f\x7f\xc3\xa9/";
    w = st_writer_new();
    st_writer_meta(w, "zz", "1");
    st_writer_meta(w, "aa", "line\nbreak");
    st_writer_add_f32(w, name, 0, NULL, &z);
    ck_assert_int_eq(st_writer_serialize(w, &out, &len, &err), LL_OK);
    st_writer_free(w);
    static const char want[] =
        "{\"__metadata__\":{\"aa\":\"line\\nbreak\",\"zz\":\"1\"},"
        "\"q\\\"b\\\\n\\n\\t\\u0001\\u001f\x7f\xc3\xa9/\":"
        "{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}";
    ck_assert_int_eq(memcmp(out + 8, want, sizeof want - 1), 0);
    ck_assert_int_eq(((unsigned char)out[0]) % 8, 0);
    ck_assert_int_eq(st_parse(out, len, &st, &err), LL_OK);
    ck_assert_ptr_nonnull(st_find(&st, name));
    ck_assert_str_eq(st_meta_get(&st, "aa"), "line\nbreak");
    st_free(&st);
    free(out);
}
END_TEST

START_TEST(test_convert) {
    /* binary16 -> fp32: every result is exact. */
    static const struct {
        uint16_t h;
        float f;
    } f16[] = {
        {0x3c00, 1.0f},          {0xc000, -2.0f},         {0x3555, 0.333251953125f},
        {0x7bff, 65504.0f},      {0x0001, 5.9604644775390625e-08f /* 2^-24 */},
        {0x03ff, 6.09755516052246094e-05f /* largest subnormal 1023 * 2^-24 */},
        {0x0400, 6.103515625e-05f /* 2^-14 */}, {0x8000, -0.0f}, {0x7c00, INFINITY},
        {0xfc00, -INFINITY},     {0x4248, 3.140625f},
    };
    /* bfloat16 -> fp32: the top half of the float. */
    static const struct {
        uint16_t b;
        float f;
    } bf16[] = {
        {0x3f80, 1.0f}, {0xc040, -3.0f}, {0x3f81, 1.0078125f}, {0x7f80, INFINITY},
        {0x8000, -0.0f}, {0x4049, 3.140625f}, {0x7f7f, 3.38953139e38f},
    };
    for (size_t i = 0; i < sizeof f16 / sizeof f16[0]; i++)
        ck_assert_float_bits(st_f16_to_f32(f16[i].h), f16[i].f);
    ck_assert(isnan(st_f16_to_f32(0x7e00)));
    for (size_t i = 0; i < sizeof bf16 / sizeof bf16[0]; i++)
        ck_assert_float_bits(st_bf16_to_f32(bf16[i].b), bf16[i].f);
    ck_assert_float_bits(st_bf16_to_f32(0x0001), ldexpf(1.0f, -133)); /* subnormal */
    ck_assert(isnan(st_bf16_to_f32(0x7fc0)));

    /* fp32 -> bf16 rounds to nearest, ties to even. */
    ck_assert_uint_eq(st_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(st_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);          /* tie, even below */
    ck_assert_uint_eq(st_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);      /* tie, even above */
    ck_assert_uint_eq(st_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81); /* above the tie */
    ck_assert_uint_eq(st_f32_to_bf16(-3.0f), 0xc040);
    ck_assert_uint_eq(st_f32_to_bf16(3.4028235e38f), 0x7f80); /* FLT_MAX rounds to inf */
    ck_assert_uint_eq(st_f32_to_bf16(NAN) & 0x7fc0, 0x7fc0);

    /* Through a file: F16, BF16 and F64 tensors read as fp32 via st_read_f32. */
    uint16_t h[11];
    for (int i = 0; i < 11; i++) h[i] = f16[i].h;
    uint16_t b[7];
    for (int i = 0; i < 7; i++) b[i] = bf16[i].b;
    const double d[3] = {0.1, 1.5, -1e-3};
    char data[22 + 14 + 24];
    memcpy(data, h, 22);
    memcpy(data + 22, b, 14);
    memcpy(data + 36, d, 24);
    const char *hdr = "{\"h\":{\"dtype\":\"F16\",\"shape\":[11],\"data_offsets\":[0,22]},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[7],\"data_offsets\":[22,36]},"
                      "\"d\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[36,60]}}";
    SafeTensors st;
    LLError err = {0};
    ck_assert_int_eq(parse_hdr_n(hdr, strlen(hdr), data, sizeof data, &st, &err), LL_OK);
    float out[11];
    int64_t s11[1] = {11}, s7[1] = {7}, s3[1] = {3};
    ck_assert_int_eq(st_read_f32(&st, "h", 1, s11, out, &err), LL_OK);
    for (int i = 0; i < 11; i++) ck_assert_float_bits(out[i], f16[i].f);
    ck_assert_int_eq(st_read_f32(&st, "b", 1, s7, out, &err), LL_OK);
    for (int i = 0; i < 7; i++) ck_assert_float_bits(out[i], bf16[i].f);
    ck_assert_int_eq(st_read_f32(&st, "d", 1, s3, out, &err), LL_OK);
    ck_assert_float_bits(out[0], 0.1f);
    ck_assert_float_bits(out[1], 1.5f);
    ck_assert_float_bits(out[2], -1e-3f);
    st_free(&st);

    /* f32 -> bf16 on write, read back. */
    const float src[3] = {1.0f + 3 * 0x1p-8f, -3.0f, 0.0f};
    StWriter *w = st_writer_new();
    st_writer_add_f32_as_bf16(w, "x", 1, s3, src);
    char *file;
    size_t len;
    ck_assert_int_eq(st_writer_serialize(w, &file, &len, &err), LL_OK);
    st_writer_free(w);
    ck_assert_int_eq(st_parse(file, len, &st, &err), LL_OK);
    ck_assert_int_eq(st_find(&st, "x")->dtype, ST_BF16);
    ck_assert_int_eq(st_read_f32(&st, "x", 1, s3, out, &err), LL_OK);
    ck_assert_float_bits(out[0], 1.015625f);
    ck_assert_float_bits(out[1], -3.0f);
    ck_assert_float_bits(out[2], 0.0f);
    st_free(&st);
    free(file);
}
END_TEST

START_TEST(test_dtype_table) {
    /* The enum follows the reference's Dtype declaration order; the writer sorts by it. */
    static const char *order[] = {"BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2",
                                  "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16",
                                  "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64",
                                  "U64"};
    static const int bits[] = {8, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 16, 16, 16, 16, 32, 32, 32, 64,
                               64, 64, 64};
    ck_assert_int_eq(ST_DTYPE_COUNT, 22);
    for (int i = 0; i < ST_DTYPE_COUNT; i++) {
        StDtype dt;
        ck_assert_str_eq(st_dtype_name((StDtype)i), order[i]);
        ck_assert_int_eq(st_dtype_bits((StDtype)i), bits[i]);
        ck_assert(st_dtype_parse(order[i], &dt));
        ck_assert_int_eq(dt, i);
    }
    StDtype dt;
    ck_assert(!st_dtype_parse("f32", &dt));
    ck_assert(!st_dtype_parse("F32 ", &dt));
}
END_TEST

/* Files the reference reader accepts and we must too. */
START_TEST(test_accepts) {
    SafeTensors st;
    LLError err = {0};
    /* Header order differs from data order; unknown fields (with floats) are ignored while the
     * following numbers are still read exactly; padding with JSON whitespace. */
    const char *hdr = "{\"b\":{\"shape\":[2],\"extra\":[1.5e3,{\"x\":-2}],\"dtype\":\"U8\","
                      "\"data_offsets\":[1,3]},\"__metadata__\":null,"
                      "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} \n\t\r ";
    ck_assert_msg(parse_hdr(hdr, 3, &st, &err) == LL_OK, "%s", err.msg);
    ck_assert_int_eq(st.n, 2);
    ck_assert_str_eq(st.tensors[0].name, "a");
    ck_assert_str_eq(st.tensors[1].name, "b");
    ck_assert_uint_eq(st.tensors[1].begin, 1);
    ck_assert_int_eq(st.tensors[1].shape[0], 2);
    ck_assert_ptr_null(st.metadata);
    st_free(&st);

    /* Empty file. */
    ck_assert_int_eq(parse_hdr("{}", 0, &st, &err), LL_OK);
    ck_assert_int_eq(st.n, 0);
    st_free(&st);

    /* Zero-size tensors at the start, in the middle (two at one offset) and at the end, with
     * exact integers beyond 2^53 that a double would round. Sub-byte dtypes in whole bytes. */
    hdr = "{\"z0\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
          "\"f4\":{\"dtype\":\"F4\",\"shape\":[2,3],\"data_offsets\":[0,3]},"
          "\"zb\":{\"dtype\":\"U8\",\"shape\":[9007199254740993,0],\"data_offsets\":[3,3]},"
          "\"za\":{\"dtype\":\"I64\",\"shape\":[0,9223372036854775807],\"data_offsets\":[3,3]},"
          "\"f6\":{\"dtype\":\"F6_E3M2\",\"shape\":[4],\"data_offsets\":[3,6]},"
          "\"c\":{\"dtype\":\"C64\",\"shape\":[],\"data_offsets\":[6,14]},"
          "\"ze\":{\"dtype\":\"BF16\",\"shape\":[3,0,2],\"data_offsets\":[14,14]}}";
    ck_assert_msg(parse_hdr(hdr, 14, &st, &err) == LL_OK, "%s", err.msg);
    ck_assert_int_eq(st.n, 7);
    static const char *order[] = {"z0", "f4", "zb", "za", "f6", "c", "ze"};
    for (int i = 0; i < 7; i++) ck_assert_str_eq(st.tensors[i].name, order[i]);
    ck_assert_int_eq(st_find(&st, "zb")->shape[0], 9007199254740993LL);
    ck_assert_int_eq(st_find(&st, "za")->shape[1], INT64_MAX);
    ck_assert_uint_eq(st_tensor_numel(st_find(&st, "zb")), 0);
    st_free(&st);
}
END_TEST

START_TEST(test_read_errors) {
    const float v[6] = {1, 2, 3, 4, 5, 6};
    int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s6[1] = {6};
    StWriter *w = st_writer_new();
    st_writer_add_f32(w, "proj.lora_A.weight", 2, s23, v);
    char dir[96], path[160];
    tu_tmpdir_new(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    LLError err = {0};
    ck_assert_int_eq(st_writer_write(w, path, &err), LL_OK);
    st_writer_free(w);
    SafeTensors st;
    ck_assert_int_eq(st_load(path, &st, &err), LL_OK);
    float out[6];
    ck_assert_int_eq(st_read_f32(&st, "proj.lora_A.weight", 2, s32, out, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "has shape [2, 3] but [3, 2] was expected"), "%s", err.msg);
    ck_assert_msg(strstr(err.msg, "proj.lora_A.weight"), "%s", err.msg);
    ck_assert_msg(strstr(err.msg, path), "%s", err.msg);
    ck_assert_int_eq(st_read_f32(&st, "proj.lora_A.weight", 1, s6, out, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "has shape [2, 3] but [6] was expected"), "%s", err.msg);
    ck_assert_int_eq(st_read_f32(&st, "proj.lora_A.weight", 0, NULL, out, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "but [] was expected"), "%s", err.msg);
    ck_assert_int_eq(st_read_f32(&st, "proj.lora_B.weight", 2, s23, out, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "no tensor named 'proj.lora_B.weight'"), "%s", err.msg);
    st_free(&st);

    ck_assert_int_eq(parse_hdr("{\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
                               8, &st, &err), LL_OK);
    int64_t s1[1] = {1};
    ck_assert_int_eq(st_read_f32(&st, "i", 1, s1, out, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "dtype I64"), "%s", err.msg);
    st_free(&st);

    /* I/O errors. */
    snprintf(path, sizeof path, "%s/missing.safetensors", dir);
    ck_assert_int_eq(st_load(path, &st, &err), LL_ERR_IO);
    ck_assert_ptr_null(st.buf);
    snprintf(path, sizeof path, "%s/no/such/dir/x.safetensors", dir);
    w = st_writer_new();
    ck_assert_int_eq(st_writer_write(w, path, &err), LL_ERR_IO);
    st_writer_free(w);
    tu_tmpdir_remove(dir);
}
END_TEST

START_TEST(test_writer_errors) {
    const float v = 1.0f;
    LLError err = {0};
    char *out = NULL;
    size_t len;
    StWriter *w = st_writer_new();
    st_writer_add_f32(w, "x", 0, NULL, &v);
    st_writer_add_f32(w, "x", 0, NULL, &v);
    ck_assert_int_eq(st_writer_serialize(w, &out, &len, &err), LL_ERR_STATE);
    ck_assert_msg(strstr(err.msg, "'x' was added twice"), "%s", err.msg);
    ck_assert_ptr_null(out);
    st_writer_free(w);

    w = st_writer_new();
    st_writer_add_f32(w, "__metadata__", 0, NULL, &v);
    ck_assert_int_eq(st_writer_write(w, "unused.safetensors", &err), LL_ERR_STATE);
    ck_assert_msg(strstr(err.msg, "reserved"), "%s", err.msg);
    ck_assert_msg(strstr(err.msg, "unused.safetensors"), "%s", err.msg);
    st_writer_free(w);

    w = st_writer_new();
    int64_t big[2] = {INT64_MAX, 4};
    st_writer_add_f32(w, "huge", 2, big, &v);
    ck_assert_int_eq(st_writer_serialize(w, &out, &len, &err), LL_ERR_STATE);
    ck_assert_msg(strstr(err.msg, "overflows"), "%s", err.msg);
    st_writer_free(w);

    w = st_writer_new();
    st_writer_add_f32(w, "bad\xff", 0, NULL, &v);
    ck_assert_int_eq(st_writer_serialize(w, &out, &len, &err), LL_ERR_STATE);
    ck_assert_msg(strstr(err.msg, "UTF-8"), "%s", err.msg);
    st_writer_free(w);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* limits                                                                                      */

/* Every proper prefix of a valid file is refused; only the whole file is accepted. */
START_TEST(test_truncated_prefixes) {
    const float a[3] = {1, 2, 3}, s = 4;
    int64_t sa[1] = {3}, se[1] = {0};
    StWriter *w = st_writer_new();
    st_writer_meta(w, "format", "pt");
    st_writer_add_f32(w, "a", 1, sa, a);
    st_writer_add_f32(w, "e", 1, se, NULL);
    st_writer_add_f32(w, "s", 0, NULL, &s);
    char *file;
    size_t len;
    LLError err = {0};
    ck_assert_int_eq(st_writer_serialize(w, &file, &len, &err), LL_OK);
    st_writer_free(w);
    size_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | (unsigned char)file[i];
    for (size_t n = 0; n <= len; n++) {
        SafeTensors st;
        err.msg[0] = '\0';
        LLStatus rc = st_parse(file, n, &st, &err);
        if (n == len) {
            ck_assert_msg(rc == LL_OK, "full file refused: %s", err.msg);
            ck_assert_int_eq(st.n, 3);
        } else {
            ck_assert_msg(rc == LL_ERR_FORMAT, "prefix of %zu bytes accepted", n);
            const char *want = n < 8 ? "shorter than the 8-byte header length"
                               : n < 8 + hl ? "runs past the end of the file"
                                            : "run past the end of the data buffer";
            ck_assert_msg(strstr(err.msg, want), "prefix %zu: '%s' lacks '%s'", n, err.msg, want);
            ck_assert_msg(strstr(err.msg, "truncated"), "prefix %zu: '%s'", n, err.msg);
            ck_assert_ptr_null(st.buf);
        }
        st_free(&st);
    }
    /* The same through a file on disk. */
    char dir[96], path[160];
    tu_tmpdir_new(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    ck_assert_int_eq(ll_write_file_atomic(path, file, len - 1, &err), LL_OK);
    SafeTensors st;
    ck_assert_int_eq(st_load(path, &st, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, "tensor 's'"), "%s", err.msg);
    tu_tmpdir_remove(dir);
    free(file);
}
END_TEST

START_TEST(test_header_length) {
    /* Past the end of the file, by one byte. */
    char f[8 + 16];
    size_t len;
    char *g = make_file("{}", 2, NULL, 0, &len);
    g[0] = 3;
    check_raw_refused(g, len, "runs past the end of the file");
    free(g);
    /* Over the 100 MB limit (by one, at 2^63 and at 2^64-1), with a file that is long enough
     * in bytes that only the limit can refuse it. */
    static const uint64_t huge[] = {100000001ull, 1ull << 63, UINT64_MAX};
    for (size_t i = 0; i < 3; i++) {
        memset(f, ' ', sizeof f);
        for (int k = 0; k < 8; k++) f[k] = (char)(huge[i] >> (8 * k));
        f[8] = '{';
        check_raw_refused(f, sizeof f, "exceeds the limit of 100000000 bytes");
    }
    /* Exactly at the limit is not refused for its length (it fails later: file too short). */
    for (int k = 0; k < 8; k++) f[k] = (char)(100000000ull >> (8 * k));
    check_raw_refused(f, sizeof f, "runs past the end of the file");
    check_raw_refused("", 0, "file is 0 bytes");
    check_raw_refused("\x02\0\0\0\0\0\0", 7, "file is 7 bytes");
    check_raw_refused("\0\0\0\0\0\0\0\0", 8, "does not start with '{'");
}
END_TEST

START_TEST(test_bad_json) {
    check_refused(" {}", 0, "does not start with '{'");
    check_refused("[]", 0, "does not start with '{'");
    check_refused("{\"a\":", 0, "not valid JSON");
    check_refused("{\"a\":{}", 0, "not valid JSON");
    check_refused("{} {}", 0, "text after the object");
    check_refused("{}x", 0, "text after the object");
    check_refused("{\"a\":{},}", 0, "not valid JSON");
    check_refused("{'a':{}}", 0, "not valid JSON");
    check_refused("{\"a\":[01]}", 0, "malformed number '01'");
    check_refused("{\"a\":[1.]}", 0, "malformed number '1.'");
    check_refused("{\"a\":[-]}", 0, "malformed number");
    check_refused("{\"a\":\"x\x01y\"}", 0, "raw control character 0x01");
    check_refused("{\x01}", 0, "control character 0x01");
    check_refused("{\"a\":{}}\x0b", 0, "control character 0x0b");
    check_refused("{\"\xff\":{}}", 0, "not valid UTF-8");
    check_refused("{\"\xc0\xaf\":{}}", 0, "not valid UTF-8");       /* overlong '/' */
    check_refused("{\"\xed\xa0\x80\":{}}", 0, "not valid UTF-8");   /* surrogate */
    check_refused("{\"\xf4\x90\x80\x80\":{}}", 0, "not valid UTF-8"); /* > U+10FFFF */
    check_refused("{\"\xe2\x82\":{}}", 0, "not valid UTF-8");       /* cut sequence */
    check_refused_n("{\"a\0\":{}}", 9, 0, "NUL byte");
    check_refused("{\"a\":\"\\ud800\"}", 0, "not valid JSON"); /* lone surrogate escape */
    check_refused("{\"a\":1}", 0, "entry is not an object");
    check_refused("{\"a\":[]}", 0, "entry is not an object");
    /* Deep nesting stays within cJSON's limit instead of exhausting the stack. */
    char deep[4100];
    size_t k = 0;
    deep[k++] = '{';
    memcpy(deep + k, "\"a\":", 4);
    k += 4;
    for (int i = 0; i < 2000; i++) deep[k++] = '[';
    for (int i = 0; i < 2000; i++) deep[k++] = ']';
    deep[k++] = '}';
    deep[k] = '\0';
    check_refused(deep, 0, "not valid JSON");
}
END_TEST

START_TEST(test_duplicate_keys) {
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                  "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                  2, "duplicate key 'a' in the header");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"dtype\":\"U8\",\"data_offsets\":[0,1]}}",
                  1, "duplicate key 'dtype' in the entry of 'a'");
    check_refused("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0,
                  "duplicate key 'k' in the entry of '__metadata__'");
    check_refused("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate key '__metadata__'");
}
END_TEST

START_TEST(test_bad_offsets) {
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
                  6, "'b' (data_offsets [2, 6]) overlaps tensor 'a' (data_offsets [0, 4])");
    /* The same region twice. */
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                  4, "overlaps");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]}}",
                  5, "hole of 1 unused bytes in the data buffer before tensor 'b'");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", 3,
                  "hole of 1 unused bytes");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 3,
                  "1 trailing bytes");
    check_refused("{}", 5, "5 trailing bytes");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 1,
                  "1 trailing bytes");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,2]}}", 4,
                  "data_offsets [4, 2] end before they begin");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[9,9]}}", 4,
                  "run past the end of the data buffer");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1,
                  "not a list of two integers");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1,
                  "not a list of two integers");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[\"0\",1]}}", 1,
                  "not a list of two integers");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":{\"b\":0}}}", 1,
                  "not a list of two integers");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1.0]}}", 1,
                  "data_offsets entry 1 (1.0) is not an integer");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-0,1]}}", 1,
                  "data_offsets entry 0 (-0) is negative");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
                  "\"data_offsets\":[0,18446744073709551616]}}", 1, "is too large");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "missing \"data_offsets\"");
}
END_TEST

START_TEST(test_bad_shapes) {
    check_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20,
                  "'a': data_offsets [0, 20] hold 20 bytes but shape [2, 3] of F32 needs 24");
    check_refused("{\"a\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
                  "hold 4 bytes but shape [] of BF16 needs 2");
    check_refused("{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2,
                  "shape [3] of F4 is not a whole number of bytes");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0,
                  "shape entry 0 (-1) is negative");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[2,2.5],\"data_offsets\":[0,5]}}", 5,
                  "shape entry 1 (2.5) is not an integer");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[2.0],\"data_offsets\":[0,2]}}", 2,
                  "shape entry 0 (2.0) is not an integer");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1e2],\"data_offsets\":[0,100]}}", 100,
                  "(1e2) is not an integer");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[\"2\"],\"data_offsets\":[0,2]}}", 2,
                  "shape entry 0 is not a number");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[true],\"data_offsets\":[0,1]}}", 1,
                  "shape entry 0 is not a number");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":2,\"data_offsets\":[0,2]}}", 2,
                  "shape is not a list");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                  "\"data_offsets\":[0,1]}}", 1, "more than 8 dimensions");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[9223372036854775808,0],"
                  "\"data_offsets\":[0,0]}}", 0, "shape entry 0 (9223372036854775808) is too large");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,0]}}", 0, "missing \"shape\"");
    /* Nine dimensions pass as eight when counted wrong; eight are accepted. */
    SafeTensors st;
    LLError err = {0};
    ck_assert_int_eq(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,2],"
                               "\"data_offsets\":[0,2]}}", 2, &st, &err), LL_OK);
    ck_assert_int_eq(st.tensors[0].ndim, 8);
    st_free(&st);
}
END_TEST

START_TEST(test_unknown_dtype) {
    check_refused("{\"a\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                  "tensor 'a': unknown dtype 'F31'");
    check_refused("{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                  "unknown dtype 'f32'");
    check_refused("{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                  "dtype is not a string");
    check_refused("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing \"dtype\"");
}
END_TEST

START_TEST(test_shape_overflow) {
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[4611686018427387904,4611686018427387904],"
                  "\"data_offsets\":[0,0]}}", 0,
                  "shape [4611686018427387904, 4611686018427387904] overflows");
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[2147483648,2147483648,2147483648],"
                  "\"data_offsets\":[0,0]}}", 0, "overflows");
    /* The element count fits; the bit count does not. */
    check_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],"
                  "\"data_offsets\":[0,0]}}", 0, "of F64 overflows");
    /* Everything fits; the 2^60 bytes are far beyond the file. */
    check_refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1152921504606846976],"
                  "\"data_offsets\":[0,1152921504606846976]}}", 0,
                  "run past the end of the data buffer");
}
END_TEST

START_TEST(test_bad_metadata) {
    check_refused("{\"__metadata__\":{\"format\":\"pt\",\"n\":1}}", 0,
                  "__metadata__ value of key 'n' is not a string");
    check_refused("{\"__metadata__\":{\"x\":{\"y\":\"z\"}}}", 0, "is not a string");
    check_refused("{\"__metadata__\":[\"pt\"]}", 0, "__metadata__ is not an object");
    check_refused("{\"__metadata__\":\"pt\"}", 0, "__metadata__ is not an object");
}
END_TEST

/* Single-byte mutations of a valid file never crash and either parse to a self-consistent
 * result or are refused with LL_ERR_FORMAT. */
START_TEST(test_mutations) {
    const float a[2] = {1, 2};
    int64_t sa[1] = {2}, se[2] = {1, 0};
    StWriter *w = st_writer_new();
    st_writer_meta(w, "format", "pt");
    st_writer_add_f32(w, "a", 1, sa, a);
    st_writer_add_f32(w, "e", 2, se, NULL);
    st_writer_add_f32_as_bf16(w, "b", 1, sa, a);
    char *file;
    size_t len;
    LLError err = {0};
    ck_assert_int_eq(st_writer_serialize(w, &file, &len, &err), LL_OK);
    st_writer_free(w);
    static const unsigned char vals[] = {0x00, 0xff, '"', '9', '0', '-', '.', ' ', ',', '[',
                                         '}', 0x80};
    int accepted = 0;
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t v = 0; v <= sizeof vals; v++) {
            char saved = file[pos];
            file[pos] = v < sizeof vals ? (char)vals[v] : (char)(saved + 1);
            SafeTensors st;
            LLStatus rc = st_parse(file, len, &st, &err);
            ck_assert_msg(rc == LL_OK || rc == LL_ERR_FORMAT, "pos %zu: status %d", pos, rc);
            if (rc == LL_OK) {
                accepted++;
                size_t covered = 0;
                for (int i = 0; i < st.n; i++) {
                    const StTensor *t = &st.tensors[i];
                    ck_assert(t->begin == covered && t->end >= t->begin);
                    ck_assert(t->end <= st.data_len);
                    covered = t->end;
                }
                ck_assert_uint_eq(covered, st.data_len);
            }
            st_free(&st);
            file[pos] = saved;
        }
    }
    ck_assert_int_gt(accepted, 0); /* data bytes may change freely */
    free(file);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* mapped: st_map, and checkpoint_open's shared, copy-on-write base weights                    */

/* A random model of `seed`: byte tokenizer vocabulary, C = 64, 2 layers, GQA. */
static void mk_model(Model *m, int tied, int n_labels, int train_base, uint64_t seed) {
    Tokenizer *tok = tok_new_bytes();
    ModelConfig c = {0};
    c.V = tok_vocab_size(tok), c.C = 64, c.L = 2, c.NH = 4, c.NKV = 2, c.HS = 16, c.F = 96, c.max_T = 32;
    c.eps = 1e-5f, c.rope_theta = 10000.0f, c.init_range = 0.05f, c.tied = tied, c.n_labels = n_labels;
    c.bos_id = tok_bos(tok), c.eos_id = tok_eos(tok), c.pad_id = tok_pad(tok);
    tok_free(tok);
    ModelOptions o = {2, 8, train_base, train_base};
    LLError err;
    ck_assert_msg(model_init(m, &c, &o, &err) == LL_OK, "%s", err.msg);
    model_init_weights(m, seed);
    for (size_t i = 0; i < m->n_params; i++) /* norms away from 1, so a mixed-up tensor shows */
        m->params[i] += 0.001f * (float)(i % 7);
}

/* A model folder (config, weights, byte tokenizer) written by checkpoint_save; *saved keeps the model. */
static void save_base(const char *dir, int tied, int n_labels, Model *saved) {
    mk_model(saved, tied, n_labels, 0, 11);
    Tokenizer *tok = tok_new_bytes();
    LLError err;
    ck_assert_msg(checkpoint_save(saved, tok, NULL, dir, &err) == LL_OK, "%s", err.msg);
    tok_free(tok);
}

static void weights_path(char *out, size_t cap, const char *dir) {
    snprintf(out, cap, "%s/model.safetensors", dir);
}

static void open_model(const char *dir, int train, LoadedModel *lm) {
    ModelOptions o = {2, 8, train, train};
    LLError err;
    ck_assert_msg(checkpoint_open(dir, &o, 0, lm, &err) == LL_OK, "%s", err.msg);
}

/* The copy path on its own: model_init + checkpoint_load_weights. */
static void copy_load(const char *dir, int train, Model *m) {
    ModelConfig c;
    LLError err;
    ck_assert_msg(checkpoint_load_config(dir, &c, &err) == LL_OK, "%s", err.msg);
    ModelOptions o = {2, 8, train, train};
    ck_assert_msg(model_init(m, &c, &o, &err) == LL_OK, "%s", err.msg);
    ck_assert_msg(checkpoint_load_weights(dir, m, NULL, &err) == LL_OK, "%s", err.msg);
    ck_assert_int_eq(m->params_mapped, 0);
}

/* Every tensor of a and b bitwise equal (their layouts may differ), and the score heads. */
static void same_weights(const Model *a, const Model *b, const char *what) {
    ck_assert_int_eq(model_n_tensors(a), model_n_tensors(b));
    for (int i = 0; i < model_n_tensors(a); i++) {
        ModelTensor ta, tb;
        model_tensor(a, i, &ta);
        model_tensor(b, i, &tb);
        ck_assert_str_eq(ta.name, tb.name);
        ck_assert_msg(memcmp(ta.data, tb.data, ta.numel * sizeof(float)) == 0, "%s: tensor %s differs", what, ta.name);
    }
    ck_assert_uint_eq(a->n_head, b->n_head);
    if (a->n_head) ck_assert_msg(memcmp(a->head, b->head, a->n_head * sizeof(float)) == 0, "%s: score differs", what);
}

/* A fixed LM batch (2 x 8), forward, and the logits copied out. */
static float *forward_logits(Model *m) {
    int ids[16], targets[16];
    for (int i = 0; i < 16; i++) ids[i] = (i * 37 + 5) % m->cfg.V, targets[i] = (i * 53 + 1) % m->cfg.V;
    Batch b = {2, 8, ids, targets, NULL, NULL};
    float loss = model_forward(m, &b, 0);
    ck_assert(isfinite(loss));
    size_t n = (size_t)16 * m->cfg.V;
    float *out = malloc(n * sizeof(float));
    ck_assert_ptr_nonnull(out);
    memcpy(out, model_logits(m, 0, 0), n * sizeof(float));
    return out;
}

static int is_mapped_into(const LoadedModel *lm) {
    const Model *m = &lm->model;
    return m->params_mapped && m->map && (const char *)m->params >= (const char *)m->map &&
           (const char *)(m->params + m->n_params) <= (const char *)m->map + m->map_len;
}

/* The /proc/self/smaps entry of the mapping that holds addr: perms, path, and Rss, Pss,
 * Shared_Clean in kB. Returns 0 when no mapping holds addr. */
typedef struct {
    char perms[8], path[512];
    long rss, pss, shared_clean;
} MapInfo;

static int smaps_entry(const void *addr, MapInfo *mi) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return 0;
    char line[1024];
    int in = 0, found = 0;
    memset(mi, 0, sizeof *mi);
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8], path[512] = "";
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %511s", &lo, &hi, perms, path) >= 3) {
            if (found) break; /* the next mapping's header */
            in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
            if (in) {
                found = 1;
                snprintf(mi->perms, sizeof mi->perms, "%s", perms);
                snprintf(mi->path, sizeof mi->path, "%s", path);
            }
            continue;
        }
        if (!in) continue;
        long v;
        if (sscanf(line, "Rss: %ld kB", &v) == 1) mi->rss = v;
        else if (sscanf(line, "Pss: %ld kB", &v) == 1) mi->pss = v;
        else if (sscanf(line, "Shared_Clean: %ld kB", &v) == 1) mi->shared_clean = v;
    }
    fclose(f);
    return found;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

START_TEST(test_map_matches_load) {
    char dir[96], path[160];
    tu_tmpdir_new(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    const float w[6] = {1.5f, -2.25f, 0.0f, -0.0f, INFINITY, 1e-40f};
    const uint16_t h[3] = {0x3f80, 0xc000, 0x7fc0};
    int64_t sw[2] = {2, 3}, sh[1] = {3};
    StWriter *wr = st_writer_new();
    st_writer_meta(wr, "format", "pt");
    st_writer_add_f32(wr, "w", 2, sw, w);
    st_writer_add_bf16(wr, "h", 1, sh, h);
    LLError err = {0};
    ck_assert_int_eq(st_writer_write(wr, path, &err), LL_OK);
    st_writer_free(wr);

    SafeTensors a, b;
    ck_assert_msg(st_load(path, &a, &err) == LL_OK, "%s", err.msg);
    ck_assert_msg(st_map(path, &b, &err) == LL_OK, "%s", err.msg);
    ck_assert_ptr_null(b.buf);
    ck_assert_ptr_nonnull(b.map);
    ck_assert_uint_eq(b.map_len, a.size);
    ck_assert_ptr_eq(b.data, (const char *)b.map + 8 + b.header_len);
    ck_assert_uint_eq(a.header_len, b.header_len);
    ck_assert_uint_eq(a.data_len, b.data_len);
    ck_assert_int_eq(a.n, b.n);
    for (int i = 0; i < a.n; i++) {
        ck_assert_str_eq(a.tensors[i].name, b.tensors[i].name);
        ck_assert_int_eq(a.tensors[i].dtype, b.tensors[i].dtype);
        ck_assert_uint_eq(a.tensors[i].begin, b.tensors[i].begin);
        ck_assert_uint_eq(a.tensors[i].end, b.tensors[i].end);
    }
    ck_assert_int_eq(memcmp(a.data, b.data, a.data_len), 0);
    ck_assert_str_eq(st_meta_get(&b, "format"), "pt");
    float got[6];
    ck_assert_int_eq(st_read_f32(&b, "w", 2, sw, got, &err), LL_OK);
    ck_assert_int_eq(memcmp(got, w, sizeof w), 0);
    st_free(&a);
    st_free(&b);
    st_free(&b); /* idempotent */

    /* A malformed file is refused with st_load's status and message; nothing stays mapped. */
    size_t len;
    char *bytes = tu_slurp(path, &len);
    const size_t cuts[3] = {len - 1, 5, 0};
    for (int k = 0; k < 3; k++) {
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(bytes, 1, cuts[k], f), cuts[k]);
        fclose(f);
        LLError e1 = {0}, e2 = {0};
        ck_assert_int_eq(st_load(path, &a, &e1), LL_ERR_FORMAT);
        ck_assert_int_eq(st_map(path, &b, &e2), LL_ERR_FORMAT);
        ck_assert_str_eq(e1.msg, e2.msg);
        ck_assert_ptr_null(b.map);
        ck_assert_ptr_null(b.tensors);
    }
    free(bytes);
    char missing[200];
    snprintf(missing, sizeof missing, "%s/none.safetensors", dir);
    ck_assert_int_eq(st_map(missing, &b, &err), LL_ERR_IO);
    ck_assert_msg(strstr(err.msg, missing) != NULL, "%s", err.msg);
    ck_assert_int_eq(st_map(dir, &b, &err), LL_ERR_IO); /* a folder */
}
END_TEST

/* checkpoint_save -> checkpoint_open maps the weights (the file's name-sorted layout), and
 * forward gives bitwise the copy path's logits; untied and tied. */
START_TEST(test_open_maps_saved_base) {
    for (int tied = 0; tied <= 1; tied++) {
        char dir[96], path[200];
        tu_tmpdir_new(dir, sizeof dir);
        Model saved;
        save_base(dir, tied, 0, &saved);
        weights_path(path, sizeof path, dir);

        LoadedModel lm;
        open_model(dir, 0, &lm);
        ck_assert_msg(is_mapped_into(&lm), "tied=%d: checkpoint_open did not map %s", tied, path);
        /* The layout is the file's: checkpoint_save sorts by name, so the final norm
         * ("model.norm") comes after every layer's tensors and lm_head before the embedding. */
        ck_assert_uint_gt(lm.model.off_lnf, lm.model.lay[1].w[MOD_V]);
        if (!tied) ck_assert_uint_lt(lm.model.off_lm, lm.model.off_embed);
        else ck_assert_uint_eq(lm.model.off_lm, lm.model.off_embed);
        MapInfo mi;
        char real[PATH_MAX];
        ck_assert_ptr_nonnull(realpath(path, real));
        ck_assert(smaps_entry(lm.model.params, &mi));
        ck_assert_msg(strcmp(mi.perms, "rw-p") == 0 && strcmp(mi.path, real) == 0,
                      "params lie in '%s' (%s), not a private mapping of %s", mi.path, mi.perms, real);

        Model cp;
        copy_load(dir, 0, &cp);
        same_weights(&saved, &cp, "copy path");
        same_weights(&saved, &lm.model, "mapped");
        float *l1 = forward_logits(&lm.model), *l2 = forward_logits(&cp);
        ck_assert_msg(memcmp(l1, l2, (size_t)16 * cp.cfg.V * sizeof(float)) == 0,
                      "tied=%d: mapped logits differ from the copy path's", tied);
        free(l1);
        free(l2);
        model_free(&cp);
        model_free(&saved);
        const float *gone = lm.model.params;
        checkpoint_close(&lm);
        ck_assert_ptr_null(lm.model.params);
        /* model_free unmapped the file (the address may since hold some other mapping) */
        ck_assert_msg(!smaps_entry(gone, &mi) || strcmp(mi.path, real) != 0, "%s is still mapped", real);
    }
}
END_TEST

/* Full fine-tuning on mapped weights: one AdamW step (as train_run sets it up) gives bitwise the
 * copy path's weights, the file's bytes do not change, and reopening gives the original weights. */
START_TEST(test_mapped_writes_stay_private) {
    char dir[96], path[200];
    tu_tmpdir_new(dir, sizeof dir);
    Model saved;
    save_base(dir, 0, 0, &saved);
    weights_path(path, sizeof path, dir);
    size_t len0;
    char *before = tu_slurp(path, &len0);

    LoadedModel lm;
    open_model(dir, 1, &lm);
    ck_assert(is_mapped_into(&lm));
    ck_assert_ptr_nonnull(lm.model.grads);
    Model cp;
    copy_load(dir, 1, &cp);
    Model *ms[2] = {&lm.model, &cp};
    for (int k = 0; k < 2; k++) {
        Model *m = ms[k];
        AdamW opt;
        adamw_init(&opt, 0.9f, 0.999f, 1e-8f, 0.01f);
        train_add_base_params(&opt, m);
        adamw_ready(&opt);
        adamw_zero_grad(&opt);
        free(forward_logits(m));
        int ids[16], targets[16];
        for (int i = 0; i < 16; i++) ids[i] = (i * 37 + 5) % m->cfg.V, targets[i] = (i * 53 + 1) % m->cfg.V;
        Batch b = {2, 8, ids, targets, NULL, NULL};
        model_backward(m, &b, 1.0f);
        adamw_step(&opt, 1e-2f);
        model_base_changed(m);
        adamw_free(&opt);
    }
    same_weights(&lm.model, &cp, "after one AdamW step");
    float *w = model_weight(&lm.model, 0, MOD_Q);
    ck_assert_msg(memcmp(w, model_weight(&saved, 0, MOD_Q), 16 * sizeof(float)) != 0, "the step changed nothing");

    size_t len1;
    char *after = tu_slurp(path, &len1);
    ck_assert_msg(len1 == len0 && memcmp(before, after, len0) == 0, "writing mapped weights changed %s", path);
    free(after); /* before the fork below: a child that _exits would report them lost under valgrind */
    after = NULL;
    LoadedModel again;
    open_model(dir, 0, &again);
    ck_assert(is_mapped_into(&again));
    same_weights(&saved, &again.model, "reopened after writes in another mapping");
    ck_assert(memcmp(model_weight(&lm.model, 0, MOD_Q), model_weight(&again.model, 0, MOD_Q), 16 * sizeof(float)) != 0);

    /* A forked child writes every weight of its (inherited, private) mapping: the parent's stay. */
    float w0 = model_weight(&again.model, 1, MOD_DOWN)[3];
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        for (size_t i = 0; i < again.model.n_params; i++) again.model.params[i] = 7.0f;
        _exit(again.model.params[0] == 7.0f ? 0 : 1);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_float_bits(model_weight(&again.model, 1, MOD_DOWN)[3], w0);
    same_weights(&saved, &again.model, "after a child wrote its copy");
    free(after);
    after = tu_slurp(path, &len1);
    ck_assert_msg(len1 == len0 && memcmp(before, after, len0) == 0, "a child's writes reached %s", path);

    free(before);
    free(after);
    checkpoint_close(&again);
    checkpoint_close(&lm);
    model_free(&cp);
    model_free(&saved);
}
END_TEST

/* Writes m's tensors (F32) in the order order[0..n) with the data in that order, the header
 * padded to a multiple of 8 and then `pad` more spaces (a data section that starts misaligned). */
static void write_in_order(const char *path, const Model *m, const int *order, int n, int pad) {
    char *hdr = malloc(64 * 1024);
    ck_assert_ptr_nonnull(hdr);
    size_t h = 0, off = 0;
    h += (size_t)sprintf(hdr + h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int k = 0; k < n; k++) {
        ModelTensor t;
        model_tensor(m, order[k], &t);
        size_t bytes = t.numel * sizeof(float);
        if (t.ndim == 2)
            h += (size_t)sprintf(hdr + h, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],\"data_offsets\":[%zu,%zu]}",
                                 t.name, (long long)t.shape[0], (long long)t.shape[1], off, off + bytes);
        else
            h += (size_t)sprintf(hdr + h, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],\"data_offsets\":[%zu,%zu]}",
                                 t.name, (long long)t.shape[0], off, off + bytes);
        off += bytes;
    }
    h += (size_t)sprintf(hdr + h, "}");
    while (h % 8) hdr[h++] = ' ';
    for (int k = 0; k < pad; k++) hdr[h++] = ' ';
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 8; i++) fputc((int)((uint64_t)h >> (8 * i) & 0xff), f);
    ck_assert_uint_eq(fwrite(hdr, 1, h, f), h);
    for (int k = 0; k < n; k++) {
        ModelTensor t;
        model_tensor(m, order[k], &t);
        ck_assert_uint_eq(fwrite(t.data, sizeof(float), t.numel, f), t.numel);
    }
    ck_assert_int_eq(fclose(f), 0);
    free(hdr);
}

/* Opens dir, checks mapped-or-not and the weights against `want` (and the copy path's logits). */
static void expect_open(const char *dir, int want_mapped, const Model *want, const char *what) {
    LoadedModel lm;
    open_model(dir, 0, &lm);
    ck_assert_msg(lm.model.params_mapped == want_mapped, "%s: params_mapped is %d", what, lm.model.params_mapped);
    if (want_mapped) ck_assert(is_mapped_into(&lm));
    same_weights(want, &lm.model, what);
    Model cp;
    copy_load(dir, 0, &cp);
    float *l1 = forward_logits(&lm.model), *l2 = forward_logits(&cp);
    ck_assert_msg(memcmp(l1, l2, (size_t)16 * cp.cfg.V * sizeof(float)) == 0, "%s: logits differ", what);
    free(l1);
    free(l2);
    model_free(&cp);
    checkpoint_close(&lm);
}

/* The name of the first tensor (other than skip) whose values differ between a and b, or NULL. */
static const char *first_differing_tensor(const Model *a, const Model *b, const char *skip) {
    static ModelTensor t;
    for (int i = 0; i < model_n_tensors(a); i++) {
        ModelTensor u;
        model_tensor(a, i, &t);
        model_tensor(b, i, &u);
        if (skip && strcmp(t.name, skip) == 0) continue;
        if (memcmp(t.data, u.data, t.numel * sizeof(float)) != 0) return t.name;
    }
    return NULL;
}

/* Layouts: any order of F32 tensors that tile one aligned range maps (the model adopts it); a
 * misaligned data section, BF16 tensors, a foreign tensor in the middle of the range, or a
 * classification folder without lm_head take the copy path, with the right values. */
START_TEST(test_open_layouts) {
    char dir[96], path[200];
    tu_tmpdir_new(dir, sizeof dir);
    Model saved;
    save_base(dir, 0, 0, &saved);
    weights_path(path, sizeof path, dir);
    int n = model_n_tensors(&saved);
    int *order = calloc((size_t)n, sizeof *order);
    ck_assert_ptr_nonnull(order);

    /* model_tensor order (model_init's layout), then reversed: mapped either way */
    for (int i = 0; i < n; i++) order[i] = i;
    write_in_order(path, &saved, order, n, 0);
    expect_open(dir, 1, &saved, "model order");
    for (int i = 0; i < n; i++) order[i] = n - 1 - i;
    write_in_order(path, &saved, order, n, 0);
    LoadedModel lm;
    open_model(dir, 0, &lm);
    ck_assert(is_mapped_into(&lm));
    ck_assert_uint_eq(lm.model.off_lm, 0); /* lm_head first, embedding last */
    ck_assert_uint_eq(lm.model.off_embed, lm.model.n_params - (size_t)saved.cfg.V * saved.cfg.C);
    checkpoint_close(&lm);
    expect_open(dir, 1, &saved, "reversed order");

    /* data section starting 2 bytes past a float boundary */
    for (int i = 0; i < n; i++) order[i] = i;
    write_in_order(path, &saved, order, n, 2);
    expect_open(dir, 0, &saved, "misaligned data");

    /* a foreign tensor inside the weights' byte range (sorted between layer 0's tensors) */
    StWriter *w = st_writer_new();
    for (int i = 0; i < n; i++) {
        ModelTensor t;
        model_tensor(&saved, i, &t);
        st_writer_add_f32(w, t.name, t.ndim, t.shape, t.data);
    }
    const float extra[4] = {1, 2, 3, 4};
    int64_t se[1] = {4};
    st_writer_add_f32(w, "model.layers.0.mlp.extra", 1, se, extra);
    LLError err;
    ck_assert_int_eq(st_writer_write(w, path, &err), LL_OK);
    st_writer_free(w);
    expect_open(dir, 0, &saved, "foreign tensor in the range");

    /* BF16 weights: the copy path converts them */
    Model rounded;
    mk_model(&rounded, 0, 0, 0, 11);
    w = st_writer_new();
    for (int i = 0; i < n; i++) {
        ModelTensor t, r;
        model_tensor(&saved, i, &t);
        model_tensor(&rounded, i, &r);
        for (size_t j = 0; j < t.numel; j++) r.data[j] = st_bf16_to_f32(st_f32_to_bf16(t.data[j]));
        st_writer_add_f32_as_bf16(w, t.name, t.ndim, t.shape, t.data);
    }
    ck_assert_int_eq(st_writer_write(w, path, &err), LL_OK);
    st_writer_free(w);
    expect_open(dir, 0, &rounded, "bf16");
    model_free(&rounded);
    free(order);
    model_free(&saved);

    /* classification folders: untied has no lm_head (copy path); tied maps; both load score */
    for (int tied = 0; tied <= 1; tied++) {
        char cdir[96];
        tu_tmpdir_new(cdir, sizeof cdir);
        Model cls;
        save_base(cdir, tied, 3, &cls);
        ck_assert_ptr_nonnull(cls.head);
        ModelOptions o = {2, 8, 0, 0};
        ck_assert_msg(checkpoint_open(cdir, &o, 0, &lm, &err) == LL_OK, "%s", err.msg);
        ck_assert_int_eq(lm.cfg.n_labels, 3);
        ck_assert_int_eq(lm.model.params_mapped, tied);
        ck_assert_msg(memcmp(lm.model.head, cls.head, cls.n_head * sizeof(float)) == 0, "tied=%d: score differs", tied);
        const char *bad = first_differing_tensor(&cls, &lm.model, "lm_head.weight"); /* not saved for cls */
        ck_assert_msg(!bad, "tied=%d: %s differs", tied, bad);
        checkpoint_close(&lm);
        model_free(&cls);
    }
}
END_TEST

/* Two processes that open the same base share the weights' pages: in each, the mapping that holds
 * params has Shared_Clean > 0 and Pss < Rss while both hold it. */
typedef struct {
    int mapped;
    MapInfo mi;
} ShareReport;

START_TEST(test_mapped_pages_shared) {
    char dir[96], path[200];
    tu_tmpdir_new(dir, sizeof dir);
    Model saved;
    save_base(dir, 0, 0, &saved);
    model_free(&saved);
    weights_path(path, sizeof path, dir);
    /* ready: each child has read all weights; go[k]: one byte lets child k read its smaps, EOF lets
     * it exit (one pipe per child, so that neither can take the other's byte); rep: the reports. */
    int ready[2], go[2][2], rep[2];
    ck_assert_int_eq(pipe(ready), 0);
    ck_assert_int_eq(pipe(go[0]), 0);
    ck_assert_int_eq(pipe(go[1]), 0);
    ck_assert_int_eq(pipe(rep), 0);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        ck_assert_int_ge(kids[k], 0);
        if (kids[k] == 0) {
            close(ready[0]), close(go[k][1]), close(go[1 - k][0]), close(go[1 - k][1]), close(rep[0]);
            ShareReport r = {0};
            LoadedModel lm;
            ModelOptions o = {2, 8, 0, 0};
            LLError err;
            if (checkpoint_open(dir, &o, 0, &lm, &err) != LL_OK) _exit(2);
            r.mapped = lm.model.params_mapped;
            volatile float sum = 0.0f; /* read every weight: every page resident */
            for (size_t i = 0; i < lm.model.n_params; i++) sum += lm.model.params[i];
            char c = 'r';
            if (write(ready[1], &c, 1) != 1 || read(go[k][0], &c, 1) != 1) _exit(3);
            smaps_entry(lm.model.params, &r.mi);
            if (write(rep[1], &r, sizeof r) != (ssize_t)sizeof r) _exit(4);
            while (read(go[k][0], &c, 1) > 0) {} /* hold the mapping until the parent has both */
            checkpoint_close(&lm);
            _exit(0);
        }
    }
    close(ready[1]), close(go[0][0]), close(go[1][0]), close(rep[1]);
    char c;
    for (int k = 0; k < 2; k++) ck_assert_int_eq(read(ready[0], &c, 1), 1);
    for (int k = 0; k < 2; k++) ck_assert_int_eq(write(go[k][1], "g", 1), 1);
    ShareReport r[2];
    for (int k = 0; k < 2; k++) ck_assert_int_eq(read(rep[0], &r[k], sizeof r[k]), (ssize_t)sizeof r[k]);
    close(go[0][1]), close(go[1][1]);
    for (int k = 0; k < 2; k++) {
        int status;
        ck_assert_int_eq(waitpid(kids[k], &status, 0), kids[k]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d failed (%d)", k, status);
    }
    close(ready[0]), close(rep[0]);
    for (int k = 0; k < 2; k++) {
        const MapInfo *mi = &r[k].mi;
        ck_assert_msg(r[k].mapped, "child %d: not mapped", k);
        ck_assert_msg(strcmp(mi->perms, "rw-p") == 0 && ends_with(mi->path, "/model.safetensors"),
                      "child %d: params in '%s' (%s)", k, mi->path, mi->perms);
        ck_assert_msg(mi->rss > 0 && mi->shared_clean > 0 && mi->pss < mi->rss,
                      "child %d: the mapping is not shared: Rss %ld kB, Pss %ld kB, Shared_Clean %ld kB", k, mi->rss,
                      mi->pss, mi->shared_clean);
    }
}
END_TEST

/* Run in a child under a seccomp filter: mmap of a file (fd != -1) fails with ENODEV (`what` 0),
 * or madvise fails with EINVAL (`what` 1). checkpoint_open must still succeed, copying (0) or
 * mapped (1), with the right weights. Exit codes name the step that went wrong. */
static int open_under_filter(const char *dir, int what) {
    struct sock_filter no_file_mmap[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[4])), /* fd, low half */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xffffffffu, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW), /* anonymous memory: malloc, threads */
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENODEV),
    };
    struct sock_filter no_madvise[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_madvise, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {
        (unsigned short)(what == 0 ? sizeof no_file_mmap / sizeof no_file_mmap[0] : sizeof no_madvise / sizeof no_madvise[0]),
        what == 0 ? no_file_mmap : no_madvise};
    Model cp; /* the expected weights, read before the filter (copy path only) */
    ModelConfig c;
    LLError err;
    ModelOptions o = {2, 8, 0, 0};
    if (checkpoint_load_config(dir, &c, &err) || model_init(&cp, &c, &o, &err) ||
        checkpoint_load_weights(dir, &cp, NULL, &err))
        return 10;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return 11; /* no seccomp here: the test cannot inject the failure */
    char path[200];
    weights_path(path, sizeof path, dir);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 12;
    void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (what == 0 && !(p == MAP_FAILED && errno == ENODEV)) return 13; /* the filter is not in force */
    if (what == 1 && (p == MAP_FAILED || posix_madvise(p, 4096, POSIX_MADV_WILLNEED) != EINVAL)) return 13;
    if (p != MAP_FAILED) munmap(p, 4096);
    LoadedModel lm;
    if (checkpoint_open(dir, &o, 0, &lm, &err) != LL_OK) return 14;
    if (lm.model.params_mapped != what) return 15;
    if (first_differing_tensor(&cp, &lm.model, NULL)) return 16;
    checkpoint_close(&lm);
    model_free(&cp);
    return 0;
}

START_TEST(test_map_failures_fall_back) {
    char dir[96];
    tu_tmpdir_new(dir, sizeof dir);
    Model saved;
    save_base(dir, 0, 0, &saved);
    model_free(&saved);
    /* Valgrind maps its own memory with mmap, which the filter would refuse it: nothing to learn. */
    const char *preload = getenv("LD_PRELOAD");
    if (preload && strstr(preload, "vgpreload")) {
        fprintf(stderr, "safetensors: under valgrind, the mmap-failure injection is skipped\n");
        return;
    }
    static const char *const why[] = {[10] = "reading the reference weights failed",
                                      [11] = "seccomp filters are unavailable, so the failure cannot be injected",
                                      [12] = "cannot open the weights", [13] = "the seccomp filter is not in force",
                                      [14] = "checkpoint_open failed", [15] = "params_mapped is wrong",
                                      [16] = "the weights differ"};
    for (int what = 0; what <= 1; what++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) _exit(open_under_filter(dir, what));
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status), "%s failure: the child died (status %d)", what ? "madvise" : "mmap", status);
        int code = WEXITSTATUS(status);
        ck_assert_msg(code == 0, "%s failure: %s (exit %d)", what ? "madvise" : "mmap",
                      code >= 10 && code <= 16 ? why[code] : "?", code);
    }
}
END_TEST

Suite *safetensors_suite(void) {
    Suite *s = suite_create("safetensors");
    TCase *core = tu_tcase(s, "core", 1, 0);
    tcase_add_test(core, test_round_trip);
    tcase_add_test(core, test_write_bytes_exact);
    tcase_add_test(core, test_write_reference_vectors);
    tcase_add_test(core, test_write_order_and_escapes);
    tcase_add_test(core, test_convert);
    tcase_add_test(core, test_dtype_table);
    tcase_add_test(core, test_accepts);
    tcase_add_test(core, test_read_errors);
    tcase_add_test(core, test_writer_errors);
    TCase *limits = tu_tcase(s, "limits", 1, 0);
    tcase_add_test(limits, test_truncated_prefixes);
    tcase_add_test(limits, test_header_length);
    tcase_add_test(limits, test_bad_json);
    tcase_add_test(limits, test_duplicate_keys);
    tcase_add_test(limits, test_bad_offsets);
    tcase_add_test(limits, test_bad_shapes);
    tcase_add_test(limits, test_unknown_dtype);
    tcase_add_test(limits, test_shape_overflow);
    tcase_add_test(limits, test_bad_metadata);
    tcase_add_test(limits, test_mutations);
    TCase *mapped = tu_tcase(s, "mapped", 1, 60);
    tcase_add_test(mapped, test_map_matches_load);
    tcase_add_test(mapped, test_open_maps_saved_base);
    tcase_add_test(mapped, test_mapped_writes_stay_private);
    tcase_add_test(mapped, test_open_layouts);
    tcase_add_test(mapped, test_mapped_pages_shared);
    tcase_add_test(mapped, test_map_failures_fall_back);
    return s;
}
