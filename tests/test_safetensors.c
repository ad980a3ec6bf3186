/* Tests for engine/safetensors: round trips, byte-exact output against hand-made bytes and the
 * reference writer's own published vectors, exact dtype conversions, and refusal (status and
 * message) of every malformed-file case of reference/peft-spec.md section 6. Files go to a
 * mkdtemp folder under /tmp per test case, created and removed (recursively) by an unchecked
 * fixture, which runs in the runner process and so also cleans up after a failed test. */
#define _XOPEN_SOURCE 700
#include <check.h>
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetensors.h"

/* ------------------------------------------------------------------------------------------ */
/* helpers                                                                                     */

static char tmp_root[64]; /* the test case's folder; set in the runner before the fork */

static void tmp_root_setup(void) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/loralab_st_XXXXXX");
    if (!mkdtemp(tmp_root)) tmp_root[0] = '\0';
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void tmp_root_teardown(void) {
    if (tmp_root[0]) nftw(tmp_root, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* A fresh folder per test inside the test case's folder. */
static void tmpdir_new(char *dir, size_t cap) {
    ck_assert_msg(tmp_root[0] != '\0', "no temporary folder under /tmp");
    snprintf(dir, cap, "%s/tXXXXXX", tmp_root);
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static int dir_count(const char *dir) {
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void tmpdir_remove(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    char p[512];
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

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
    tmpdir_new(dir, sizeof dir);
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
    ck_assert_int_eq(dir_count(dir), 1); /* the atomic write left no temporary behind */

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
    ck_assert_int_eq(dir_count(dir), 1);
    tmpdir_remove(dir);
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
    tmpdir_new(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    ck_assert_int_eq(st_writer_write(w, path, &err), LL_OK);
    st_writer_free(w);
    char *file;
    ck_assert_int_eq(ll_read_file(path, &file, &len, &err), LL_OK);
    ck_assert_uint_eq(len, sizeof want - 1);
    ck_assert_int_eq(memcmp(file, want, len), 0);
    free(file);
    tmpdir_remove(dir);
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
    tmpdir_new(dir, sizeof dir);
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
    tmpdir_remove(dir);
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
    tmpdir_new(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    ck_assert_int_eq(ll_write_file_atomic(path, file, len - 1, &err), LL_OK);
    SafeTensors st;
    ck_assert_int_eq(st_load(path, &st, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, "tensor 's'"), "%s", err.msg);
    tmpdir_remove(dir);
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

Suite *safetensors_suite(void) {
    Suite *s = suite_create("safetensors");
    TCase *core = tcase_create("core");
    tcase_add_unchecked_fixture(core, tmp_root_setup, tmp_root_teardown);
    tcase_add_test(core, test_round_trip);
    tcase_add_test(core, test_write_bytes_exact);
    tcase_add_test(core, test_write_reference_vectors);
    tcase_add_test(core, test_write_order_and_escapes);
    tcase_add_test(core, test_convert);
    tcase_add_test(core, test_dtype_table);
    tcase_add_test(core, test_accepts);
    tcase_add_test(core, test_read_errors);
    tcase_add_test(core, test_writer_errors);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_unchecked_fixture(limits, tmp_root_setup, tmp_root_teardown);
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
    suite_add_tcase(s, limits);
    return s;
}
