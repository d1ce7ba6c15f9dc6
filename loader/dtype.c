/* dtype.c — the safetensors dtype table: header names and element sizes in bits.
 *
 * Sizes are in bits because the format has sub-byte types (F4, F6_*): a tensor's byte size is
 * numel * bits / 8, and the reference implementation rejects a tensor whose numel * bits is not
 * a whole number of bytes (st_read.c and st_write.c apply that rule).
 */
#include <string.h>

#include "nx_loader.h"

typedef struct dtype_info {
    const char *name; /* as spelled in safetensors headers */
    uint32_t bits;    /* per element */
} dtype_info_t;

static const dtype_info_t dtype_table[NX_DT__COUNT] = {
    [NX_DT_BOOL] = {"BOOL", 8},
    [NX_DT_U8] = {"U8", 8},
    [NX_DT_I8] = {"I8", 8},
    [NX_DT_F8_E5M2] = {"F8_E5M2", 8},
    [NX_DT_F8_E4M3] = {"F8_E4M3", 8},
    [NX_DT_F8_E8M0] = {"F8_E8M0", 8},
    [NX_DT_I16] = {"I16", 16},
    [NX_DT_U16] = {"U16", 16},
    [NX_DT_F16] = {"F16", 16},
    [NX_DT_BF16] = {"BF16", 16},
    [NX_DT_I32] = {"I32", 32},
    [NX_DT_U32] = {"U32", 32},
    [NX_DT_F32] = {"F32", 32},
    [NX_DT_F64] = {"F64", 64},
    [NX_DT_I64] = {"I64", 64},
    [NX_DT_U64] = {"U64", 64},
    [NX_DT_C64] = {"C64", 64},
    [NX_DT_F4] = {"F4", 4},
    [NX_DT_F6_E2M3] = {"F6_E2M3", 6},
    [NX_DT_F6_E3M2] = {"F6_E3M2", 6},
    [NX_DT_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [NX_DT_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8},
};

const char *nx_dtype_name(nx_dtype_t dtype)
{
    if ((unsigned)dtype >= NX_DT__COUNT || !dtype_table[dtype].name)
        return "?";
    return dtype_table[dtype].name;
}

bool nx_dtype_parse(const char *name, nx_dtype_t *dtype_out)
{
    if (!name)
        return false;
    for (int i = 0; i < NX_DT__COUNT; i++) {
        if (dtype_table[i].name && strcmp(dtype_table[i].name, name) == 0) {
            if (dtype_out)
                *dtype_out = (nx_dtype_t)i;
            return true;
        }
    }
    return false;
}

uint32_t nx_dtype_bits(nx_dtype_t dtype)
{
    if ((unsigned)dtype >= NX_DT__COUNT)
        return 0;
    return dtype_table[dtype].bits;
}
