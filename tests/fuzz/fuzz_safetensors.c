/* libFuzzer target for the safetensors reader (engine/safetensors.c). Built and run by `make fuzz`
 * (docs/TESTING.md), not by `make test`; by hand:
 *
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -I. -Iengine \
 *       $(pkg-config --cflags libcjson) tests/fuzz/fuzz_safetensors.c engine/safetensors.c \
 *       engine/core.c $(pkg-config --libs libcjson) -o build/fuzz_safetensors
 *   build/fuzz_safetensors -max_len=4096 tests/fuzz/safetensors/
 *
 * Seeds in tests/fuzz/safetensors/: valid files (a PEFT-style adapter, a mix of dtypes with a
 * scalar and a zero-size tensor) and near-valid ones (a hole, a duplicate key, a truncated
 * file). Besides memory errors (ASan), the target aborts when an accepted file breaks the
 * reader's promises: tensors tile the data buffer in order, and every float tensor converts.
 */
#include <stdint.h>
#include <stdlib.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    SafeTensors st;
    LLError err;
    LLStatus rc = st_parse(data, size, &st, &err);
    if (rc != LL_OK && rc != LL_ERR_FORMAT) abort(); /* a bad file is a format error, always */
    if (rc == LL_OK) {
        size_t covered = 0;
        for (int i = 0; i < st.n; i++) {
            const StTensor *t = &st.tensors[i];
            if (t->begin != covered || t->end < t->begin || t->end > st.data_len) abort();
            covered = t->end;
            if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 &&
                t->dtype != ST_F64)
                continue;
            /* Reading the bytes lets ASan check the offsets against the buffer. */
            float *out = malloc(st_tensor_numel(t) * sizeof(float) + 1);
            if (!out) abort();
            if (st_read_f32(&st, t->name, t->ndim, t->shape, out, &err) != LL_OK) abort();
            free(out);
        }
        if (covered != st.data_len) abort();
    }
    st_free(&st);
    return 0;
}
