/* dtype.c — the dtype table: safetensors header names and element sizes in bits, ggml's block
 * types with their block geometry, and the ggml type ids GGUF files carry.
 *
 * Sizes of element types are in bits because safetensors has sub-byte types (F4, F6_*): a
 * tensor's byte size is numel * bits / 8, and the reference implementation rejects a tensor
 * whose numel * bits is not a whole number of bytes (st_read.c and st_write.c apply that rule).
 * Block types have no per-element size: a row is a whole number of blocks of `block_elems`
 * elements and `block_bytes` bytes each, as ggml's type_traits table gives them (the block
 * layouts are in ggml-common.h; agents/quant.h mirrors the ones the engine computes with).
 */
#include <strings.h>
#include <string.h>

#include "nx_loader.h"

#define NO_GGML (-1)

typedef struct dtype_info {
    const char *name;     /* as spelled in safetensors headers; ggml's name upper-cased */
    uint32_t bits;        /* per element; 0 for block types */
    uint32_t block_elems; /* 0 for element types (reported as 1) */
    uint32_t block_bytes; /* 0 for element types (reported as bits / 8) */
    bool safetensors;     /* a name safetensors headers may use */
    int32_t ggml;         /* ggml's type id, or NO_GGML */
} dtype_info_t;

#define ST(name, bits, ggml) {name, bits, 0, 0, true, ggml}
#define BLOCK(name, elems, bytes, ggml) {name, 0, elems, bytes, false, ggml}

static const dtype_info_t dtype_table[NX_DT__COUNT] = {
    [NX_DT_BOOL] = ST("BOOL", 8, NO_GGML),
    [NX_DT_U8] = ST("U8", 8, NO_GGML),
    [NX_DT_I8] = ST("I8", 8, 24),
    [NX_DT_F8_E5M2] = ST("F8_E5M2", 8, NO_GGML),
    [NX_DT_F8_E4M3] = ST("F8_E4M3", 8, NO_GGML),
    [NX_DT_F8_E8M0] = ST("F8_E8M0", 8, NO_GGML),
    [NX_DT_I16] = ST("I16", 16, 25),
    [NX_DT_U16] = ST("U16", 16, NO_GGML),
    [NX_DT_F16] = ST("F16", 16, 1),
    [NX_DT_BF16] = ST("BF16", 16, 30),
    [NX_DT_I32] = ST("I32", 32, 26),
    [NX_DT_U32] = ST("U32", 32, NO_GGML),
    [NX_DT_F32] = ST("F32", 32, 0),
    [NX_DT_F64] = ST("F64", 64, 28),
    [NX_DT_I64] = ST("I64", 64, 27),
    [NX_DT_U64] = ST("U64", 64, NO_GGML),
    [NX_DT_C64] = ST("C64", 64, NO_GGML),
    [NX_DT_F4] = ST("F4", 4, NO_GGML),
    [NX_DT_F6_E2M3] = ST("F6_E2M3", 6, NO_GGML),
    [NX_DT_F6_E3M2] = ST("F6_E3M2", 6, NO_GGML),
    [NX_DT_F8_E4M3FNUZ] = ST("F8_E4M3FNUZ", 8, NO_GGML),
    [NX_DT_F8_E5M2FNUZ] = ST("F8_E5M2FNUZ", 8, NO_GGML),
    /* ggml's block types: elements and bytes per block from ggml's type_traits. */
    [NX_DT_Q4_0] = BLOCK("Q4_0", 32, 18, 2),
    [NX_DT_Q4_1] = BLOCK("Q4_1", 32, 20, 3),
    [NX_DT_Q5_0] = BLOCK("Q5_0", 32, 22, 6),
    [NX_DT_Q5_1] = BLOCK("Q5_1", 32, 24, 7),
    [NX_DT_Q8_0] = BLOCK("Q8_0", 32, 34, 8),
    [NX_DT_Q8_1] = BLOCK("Q8_1", 32, 36, 9),
    [NX_DT_Q2_K] = BLOCK("Q2_K", 256, 84, 10),
    [NX_DT_Q3_K] = BLOCK("Q3_K", 256, 110, 11),
    [NX_DT_Q4_K] = BLOCK("Q4_K", 256, 144, 12),
    [NX_DT_Q5_K] = BLOCK("Q5_K", 256, 176, 13),
    [NX_DT_Q6_K] = BLOCK("Q6_K", 256, 210, 14),
    [NX_DT_Q8_K] = BLOCK("Q8_K", 256, 292, 15),
    [NX_DT_IQ2_XXS] = BLOCK("IQ2_XXS", 256, 66, 16),
    [NX_DT_IQ2_XS] = BLOCK("IQ2_XS", 256, 74, 17),
    [NX_DT_IQ3_XXS] = BLOCK("IQ3_XXS", 256, 98, 18),
    [NX_DT_IQ1_S] = BLOCK("IQ1_S", 256, 50, 19),
    [NX_DT_IQ4_NL] = BLOCK("IQ4_NL", 32, 18, 20),
    [NX_DT_IQ3_S] = BLOCK("IQ3_S", 256, 110, 21),
    [NX_DT_IQ2_S] = BLOCK("IQ2_S", 256, 82, 22),
    [NX_DT_IQ4_XS] = BLOCK("IQ4_XS", 256, 136, 23),
    [NX_DT_IQ1_M] = BLOCK("IQ1_M", 256, 56, 29),
    [NX_DT_TQ1_0] = BLOCK("TQ1_0", 256, 54, 34),
    [NX_DT_TQ2_0] = BLOCK("TQ2_0", 256, 66, 35),
    [NX_DT_MXFP4] = BLOCK("MXFP4", 32, 17, 39),
};

static bool in_range(nx_dtype_t dtype)
{
    return (unsigned)dtype < NX_DT__COUNT && dtype_table[dtype].name;
}

const char *nx_dtype_name(nx_dtype_t dtype)
{
    return in_range(dtype) ? dtype_table[dtype].name : "?";
}

bool nx_dtype_parse(const char *name, nx_dtype_t *dtype_out)
{
    if (!name)
        return false;
    for (int i = 0; i < NX_DT__COUNT; i++) {
        const dtype_info_t *info = &dtype_table[i];
        if (info->name && info->safetensors && strcmp(info->name, name) == 0) {
            if (dtype_out)
                *dtype_out = (nx_dtype_t)i;
            return true;
        }
    }
    return false;
}

bool nx_dtype_parse_any(const char *name, nx_dtype_t *dtype_out)
{
    if (!name)
        return false;
    for (int i = 0; i < NX_DT__COUNT; i++) {
        if (dtype_table[i].name && strcasecmp(dtype_table[i].name, name) == 0) {
            if (dtype_out)
                *dtype_out = (nx_dtype_t)i;
            return true;
        }
    }
    return false;
}

uint32_t nx_dtype_bits(nx_dtype_t dtype)
{
    return in_range(dtype) ? dtype_table[dtype].bits : 0;
}

bool nx_dtype_is_block(nx_dtype_t dtype)
{
    return in_range(dtype) && dtype_table[dtype].block_elems != 0;
}

uint32_t nx_dtype_block_elems(nx_dtype_t dtype)
{
    if (!in_range(dtype))
        return 0;
    return nx_dtype_is_block(dtype) ? dtype_table[dtype].block_elems : 1;
}

uint32_t nx_dtype_block_bytes(nx_dtype_t dtype)
{
    if (!in_range(dtype))
        return 0;
    const dtype_info_t *info = &dtype_table[dtype];
    if (info->block_elems)
        return info->block_bytes;
    return info->bits % 8 == 0 ? info->bits / 8 : 0; /* F4 and F6_* have no whole byte */
}

bool nx_dtype_from_ggml(uint32_t ggml_type, nx_dtype_t *dtype_out)
{
    for (int i = 0; i < NX_DT__COUNT; i++) {
        if (dtype_table[i].name && dtype_table[i].ggml == (int64_t)ggml_type) {
            if (dtype_out)
                *dtype_out = (nx_dtype_t)i;
            return true;
        }
    }
    return false;
}

int32_t nx_dtype_to_ggml(nx_dtype_t dtype)
{
    return in_range(dtype) ? dtype_table[dtype].ggml : NO_GGML;
}
