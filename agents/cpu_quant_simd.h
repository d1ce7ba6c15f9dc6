/* cpu_quant_simd.h — the SIMD body of cpu_quant.c, included there once per instruction set and
 * nowhere else. Before each include cpu_quant.c defines QN(name) (the set's suffix), QS_TARGET
 * (its target attribute), QS_ROWS / QS_ROWS_K (batch rows per pass), QS_Q8_UNSIGNED and the
 * set's primitives QN(dot4) (u8 x s8, four products into each int32 lane), QN(dot4_q8) (the
 * same for Q8_0's codes as repacked), QN(dot2) (s16 pairs), QN(fmadd), QN(fnmadd),
 * QN(gather) (an int32 from each column) and QN(half) (fp16 to float).
 *
 * A tile is 16 weight rows ("columns" of the output). Repacked, each 64-byte vector holds one
 * group of 4 consecutive codes of every column (lane c = column c), so one multiply-accumulate
 * advances 16 output elements by 4 values of k against 4 activation bytes broadcast to every
 * lane. Layouts in scratch, per block of the weight (T32_BYTES etc. in cpu_quant.c):
 *   Q8_0/Q4_0/Q5_0, per 32 values: u8 codes [8 groups][16], float d[16]
 *   Q4_K, per 256: u8 codes [8 sub-blocks][8 groups][16], int32 scale [8][16],
 *         int16 min pairs [4][16][2] (sub-blocks 2p, 2p+1), float d[16], float dmin[16]
 *   Q6_K, per 256: u8 codes [16 sub-blocks][4 groups][16], int32 scale [16][16], float d[16]
 */

static AI QS_TARGET qv_i32 QN(splat)(int32_t v)
{
    return (qv_i32){0} + v;
}

static AI QS_TARGET qv_i32 QN(load)(const uint8_t *p)
{
    return *(const qv_i32 *)p;
}

static AI QS_TARGET void QN(put)(uint8_t *p, qv_i32 v)
{
    *(qv_i32 *)p = v;
}

/* Decode reads 16 weight rows at once, a little of each at a time: too many streams for the
 * hardware prefetchers. The tile's rows are contiguous, and so are the next tile's: while
 * step `step` of `steps` of this tile is repacked, that share of the next one (t->ahead) is
 * asked for. */
static AI QS_TARGET void QN(prefetch)(const qtile_t *t, uint32_t step, uint32_t steps)
{
    uint64_t lines = (t->ahead_bytes + 63) / 64;
    for (uint64_t i = lines * step / steps; i < lines * (step + 1) / steps; i++)
        __builtin_prefetch(t->ahead + 64 * i, 0, 2);
}

/* [32 bytes at a | 32 bytes at b] */
static AI QS_TARGET qv_i32 QN(pair32)(const uint8_t *a, const uint8_t *b)
{
    return __builtin_shufflevector((qv_i32x8)*(const qv_i32x8_u *)a,
                                   (qv_i32x8)*(const qv_i32x8_u *)b, 0, 1, 2, 3, 4, 5, 6, 7, 8,
                                   9, 10, 11, 12, 13, 14, 15);
}

/* [16 bytes at a | at b | at c | at d] */
static AI QS_TARGET qv_i32 QN(quad16)(const uint8_t *a, const uint8_t *b, const uint8_t *c,
                                      const uint8_t *d)
{
    qv_i32x8 ab = __builtin_shufflevector(*(const qv_i32x4_u *)a, *(const qv_i32x4_u *)b, 0, 1,
                                          2, 3, 4, 5, 6, 7);
    qv_i32x8 cd = __builtin_shufflevector(*(const qv_i32x4_u *)c, *(const qv_i32x4_u *)d, 0, 1,
                                          2, 3, 4, 5, 6, 7);
    return __builtin_shufflevector(ab, cd, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

/* out[g] lane c = int32 g of column c, for z[j] = [8 int32 of column j | of column 8 + j]:
 * a 16 x 8 transpose that never mixes the two 256-bit halves (cheap on AVX2 too). Stage one
 * interleaves int32s, stage two int64s, stage three 128-bit lanes. */
static AI QS_TARGET void QN(transpose)(const qv_i32 z[8], qv_i32 out[8])
{
    qv_i32 u[8], v[8];
#pragma GCC unroll 4
    for (int j = 0; j < 8; j += 2) {
        u[j] = __builtin_shufflevector(z[j], z[j + 1], 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25,
                                       12, 28, 13, 29);
        u[j + 1] = __builtin_shufflevector(z[j], z[j + 1], 2, 18, 3, 19, 6, 22, 7, 23, 10, 26,
                                           11, 27, 14, 30, 15, 31);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) { /* columns 0-3 / 8-11 (h 0), 4-7 / 12-15 (h 1) */
        const qv_i32 *a = u + 4 * h;
        v[4 * h + 0] = __builtin_shufflevector(a[0], a[2], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24,
                                               25, 12, 13, 28, 29);
        v[4 * h + 1] = __builtin_shufflevector(a[0], a[2], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11,
                                               26, 27, 14, 15, 30, 31);
        v[4 * h + 2] = __builtin_shufflevector(a[1], a[3], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24,
                                               25, 12, 13, 28, 29);
        v[4 * h + 3] = __builtin_shufflevector(a[1], a[3], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11,
                                               26, 27, 14, 15, 30, 31);
    }
#pragma GCC unroll 4
    for (int e = 0; e < 4; e++) {
        out[e] = __builtin_shufflevector(v[e], v[4 + e], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11,
                                         24, 25, 26, 27);
        out[4 + e] = __builtin_shufflevector(v[e], v[4 + e], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13,
                                             14, 15, 28, 29, 30, 31);
    }
}

/* ------------------------------------------------------------------------------------------
 * Repacking a tile into scratch (per block: transposes of the codes, scales gathered)
 */
static AI QS_TARGET void QN(repack_q8_0)(const qtile_t *t, const uint8_t *const col[16],
                                         qv_i32 index)
{
    uint8_t *out = t->scratch;
    for (uint32_t b = 0; b < t->k / 32; b++, out += T32_BYTES) {
        uint64_t at = (uint64_t)b * sizeof(nx_bq8_0_t);
        QN(prefetch)(t, b, t->k / 32);
        qv_i32 z[8], g[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            z[j] = QN(pair32)(col[j] + at + 2, col[8 + j] + at + 2);
        QN(transpose)(z, g);
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            QN(put)(out + 64 * i, QS_Q8_UNSIGNED ? g[i] ^ (int32_t)0x80808080 : g[i]);
        *(qv_f32 *)(out + 512) = QN(half)(QN(gather)(t->w + at, index));
    }
}

/* Q4_0 and Q5_0 two blocks at a time (16 bytes of codes each); an odd last block is paired
 * with itself (scratch has room for the copy). */
static AI QS_TARGET void QN(repack_q4_0)(const qtile_t *t, const uint8_t *const col[16],
                                         qv_i32 index, bool q5)
{
    uint32_t blocks = t->k / 32, bytes = q5 ? sizeof(nx_bq5_0_t) : sizeof(nx_bq4_0_t);
    uint32_t codes_at = q5 ? 6 : 2;
    uint8_t *out = t->scratch;
    for (uint32_t b = 0; b < blocks; b += 2, out += 2 * T32_BYTES) {
        uint64_t at[2] = {(uint64_t)b * bytes, (uint64_t)(b + 1 < blocks ? b + 1 : b) * bytes};
        QN(prefetch)(t, b / 2, (blocks + 1) / 2);
        qv_i32 z[8], g[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            z[j] = QN(quad16)(col[j] + at[0] + codes_at, col[j] + at[1] + codes_at,
                              col[8 + j] + at[0] + codes_at, col[8 + j] + at[1] + codes_at);
        QN(transpose)(z, g); /* g[0..3]: block b's int32s 0..3, g[4..7]: the next block's */
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            uint8_t *o = out + h * T32_BYTES;
            qv_i32 qh = q5 ? QN(gather)(t->w + at[h] + 2, index) : (qv_i32){0};
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) { /* values 4i..4i+3: low nibbles, then high */
                qv_i32 code = (i < 4 ? g[4 * h + i] : g[4 * h + i - 4] >> 4) & 0x0f0f0f0f;
                if (q5) /* bits 4i..4i+3 of qh, one to bit 4 of each byte */
                    code |= (((qh >> (4 * i)) & 15) * 0x00204081 & 0x01010101) << 4;
                QN(put)(o + 64 * i, code);
            }
            *(qv_f32 *)(o + 512) = QN(half)(QN(gather)(t->w + at[h], index));
        }
    }
}

static AI QS_TARGET void QN(repack_q4_k)(const qtile_t *t, const uint8_t *const col[16],
                                         qv_i32 index)
{
    uint8_t *out = t->scratch;
    for (uint32_t b = 0; b < t->k / 256; b++, out += T4K_BYTES) {
        uint64_t at = (uint64_t)b * sizeof(nx_bq4_k_t);
#pragma GCC unroll 1
        for (int p = 0; p < 4; p++) { /* 32 bytes of codes: sub-blocks 2p (low), 2p+1 (high) */
            QN(prefetch)(t, 4 * b + p, t->k / 64);
            qv_i32 z[8], g[8];
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                z[j] = QN(pair32)(col[j] + at + 16 + 32 * p, col[8 + j] + at + 16 + 32 * p);
            QN(transpose)(z, g);
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                QN(put)(out + 64 * (16 * p + i), g[i] & 0x0f0f0f0f);
                QN(put)(out + 64 * (16 * p + 8 + i), (g[i] >> 4) & 0x0f0f0f0f);
            }
        }
        const uint8_t *blk = t->w + at;
        qv_i32 dd = QN(gather)(blk, index), s0 = QN(gather)(blk + 4, index);
        qv_i32 s1 = QN(gather)(blk + 8, index), s2 = QN(gather)(blk + 12, index);
        qv_i32 mins[8];
#pragma GCC unroll 8
        for (int s = 0; s < 8; s++) { /* unpacked as nx__q4k_scale_min does */
            int j = 8 * (s & 3);
            qv_i32 sc = s < 4 ? (s0 >> j) & 63 : ((s2 >> j) & 15) | ((s0 >> (j + 6)) & 3) << 4;
            mins[s] = s < 4 ? (s1 >> j) & 63 : ((s2 >> (j + 4)) & 15) | ((s1 >> (j + 6)) & 3) << 4;
            QN(put)(out + 4096 + 64 * s, sc);
        }
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++)
            QN(put)(out + 4608 + 64 * p, mins[2 * p] | mins[2 * p + 1] << 16);
        *(qv_f32 *)(out + 4864) = QN(half)(dd);
        *(qv_f32 *)(out + 4928) = QN(half)(dd >> 16);
    }
}

static AI QS_TARGET void QN(repack_q6_k)(const qtile_t *t, const uint8_t *const col[16],
                                         qv_i32 index)
{
    uint8_t *out = t->scratch;
    for (uint32_t b = 0; b < t->k / 256; b++, out += T6K_BYTES) {
        uint64_t at = (uint64_t)b * sizeof(nx_bq6_k_t);
#pragma GCC unroll 1
        for (int h = 0; h < 2; h++) { /* values 128h..128h+127 */
            qv_i32 z[8], low0[8], low1[8], high[8];
            uint64_t ql = at + 64 * h, qh = at + 128 + 32 * h;
            QN(prefetch)(t, 2 * b + h, t->k / 128);
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                z[j] = QN(pair32)(col[j] + ql, col[8 + j] + ql);
            QN(transpose)(z, low0);
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                z[j] = QN(pair32)(col[j] + ql + 32, col[8 + j] + ql + 32);
            QN(transpose)(z, low1);
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                z[j] = QN(pair32)(col[j] + qh, col[8 + j] + qh);
            QN(transpose)(z, high);
            /* value 128h + 32q + l (l = 4d + byte): low bits from ql byte l (+32 for odd q),
             * high nibble for q >= 2; top bits 2q, 2q+1 of qh byte l */
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++)
#pragma GCC unroll 8
                for (int d = 0; d < 8; d++) {
                    qv_i32 low = (q & 1) ? low1[d] : low0[d];
                    low = (q >= 2 ? low >> 4 : low) & 0x0f0f0f0f;
                    qv_i32 top = (high[d] >> (2 * q)) & 0x03030303;
                    int sub = 8 * h + 2 * q + d / 4, group = d % 4;
                    QN(put)(out + 64 * (4 * sub + group), low | top << 4);
                }
        }
        const uint8_t *blk = t->w + at;
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) { /* int8 scales 4i..4i+3, sign-extended */
            qv_u32 four = (qv_u32)QN(gather)(blk + 192 + 4 * i, index);
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++)
                QN(put)(out + 4096 + 64 * (4 * i + j), (qv_i32)(four << (24 - 8 * j)) >> 24);
        }
        /* d is the last 2 bytes of the block: read the 4 ending there, not past it */
        *(qv_f32 *)(out + 5120) = QN(half)(QN(gather)(blk + 206, index) >> 16);
    }
}

/* ------------------------------------------------------------------------------------------
 * The kernels: `rows` batch rows (a constant after inlining) against the repacked tile
 */
static AI QS_TARGET void QN(store)(const qtile_t *t, uint32_t row, qv_f32 acc)
{
    for (uint32_t c = 0; c < t->count; c++)
        store_out(t, row, c, acc[c]);
}

/* Independent integer chains per batch row: vpdpbusd's latency is several cycles, so a lone
 * row splits its sums over 4 accumulators (integers: any grouping gives the same sum). */
#define QS_CHAINS(rows) ((rows) >= 4 ? 1 : (rows) >= 2 ? 2 : 4)

/* Q8_0 (q8: its dot), Q4_0, Q5_0: per block isum = offset_mul * offset + sum of codes * x. */
static AI QS_TARGET void QN(rows_32)(const qtile_t *t, uint32_t r0, int rows, int32_t offset_mul,
                                     bool q8)
{
    const int chains = QS_CHAINS(rows);
    const int32_t *xq[QS_ROWS], *xo[QS_ROWS];
    const float *xd[QS_ROWS];
    qv_f32 acc[QS_ROWS];
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++) {
        qrow_t x = qrow(t->a, r0 + r);
        xq[r] = (const int32_t *)x.qs, xo[r] = x.offset, xd[r] = x.d;
        acc[r] = (qv_f32){0};
    }
    const uint8_t *tb = t->scratch;
    for (uint32_t b = 0; b < t->k / 32; b++, tb += T32_BYTES) { /* hot */
        qv_i32 isum[QS_ROWS][4];
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
            for (int c = 0; c < chains; c++)
                isum[r][c] = c == 0 ? QN(splat)(xo[r][b] * offset_mul) : (qv_i32){0};
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            qv_i32 w = QN(load)(tb + 64 * g);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) {
                qv_i32 *sum = &isum[r][g % chains];
                *sum = q8 ? QN(dot4_q8)(*sum, w, QN(splat)(xq[r][8 * b + g]))
                          : QN(dot4)(*sum, w, QN(splat)(xq[r][8 * b + g]));
            }
        }
        qv_f32 dw = *(const qv_f32 *)(tb + 512);
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) {
#pragma GCC unroll 4
            for (int c = 1; c < chains; c++)
                isum[r][0] += isum[r][c];
            acc[r] = QN(fmadd)(__builtin_convertvector(isum[r][0], qv_f32), dw * xd[r][b],
                               acc[r]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
        QN(store)(t, r0 + r, acc[r]);
}

/* Q4_K: s1 = sum over sub-blocks of scale * (codes . x), s2 = sum of min * (sum of x). */
static AI QS_TARGET void QN(rows_4k)(const qtile_t *t, uint32_t r0, int rows)
{
    const int chains = QS_CHAINS(rows);
    const int32_t *xq[QS_ROWS_K], *xs[QS_ROWS_K];
    const float *xd[QS_ROWS_K];
    qv_f32 acc[QS_ROWS_K];
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++) {
        qrow_t x = qrow(t->a, r0 + r);
        xq[r] = (const int32_t *)x.qs, xs[r] = (const int32_t *)x.sum32, xd[r] = x.d;
        acc[r] = (qv_f32){0};
    }
    const uint8_t *tb = t->scratch;
    for (uint32_t b = 0; b < t->k / 256; b++, tb += T4K_BYTES) { /* hot */
        qv_i32 s1[QS_ROWS_K], s2[QS_ROWS_K];
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++)
            s1[r] = s2[r] = (qv_i32){0};
#pragma GCC unroll 1
        for (int s = 0; s < 8; s++) {
            qv_i32 part[QS_ROWS_K][4];
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
                for (int c = 0; c < chains; c++)
                    part[r][c] = (qv_i32){0};
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) {
                qv_i32 w = QN(load)(tb + 64 * (8 * s + g));
#pragma GCC unroll 8
                for (int r = 0; r < rows; r++)
                    part[r][g % chains] = QN(dot4)(part[r][g % chains], w,
                                                   QN(splat)(xq[r][64 * b + 8 * s + g]));
            }
            qv_i32 scale = QN(load)(tb + 4096 + 64 * s);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) {
#pragma GCC unroll 4
                for (int c = 1; c < chains; c++)
                    part[r][0] += part[r][c];
                s1[r] += part[r][0] * scale;
            }
        }
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            qv_i32 mins = QN(load)(tb + 4608 + 64 * p);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++)
                s2[r] = QN(dot2)(s2[r], mins, QN(splat)(xs[r][4 * b + p]));
        }
        qv_f32 d = *(const qv_f32 *)(tb + 4864), dmin = *(const qv_f32 *)(tb + 4928);
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) {
            acc[r] = QN(fmadd)(__builtin_convertvector(s1[r], qv_f32), d * xd[r][b], acc[r]);
            acc[r] = QN(fnmadd)(__builtin_convertvector(s2[r], qv_f32), dmin * xd[r][b], acc[r]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
        QN(store)(t, r0 + r, acc[r]);
}

/* Q6_K: s1 = sum over sub-blocks of scale * (codes . x - 32 * sum of x). */
static AI QS_TARGET void QN(rows_6k)(const qtile_t *t, uint32_t r0, int rows)
{
    const int chains = QS_CHAINS(rows) > 2 ? 2 : QS_CHAINS(rows); /* 4 products a sub-block */
    const int32_t *xq[QS_ROWS_K], *xo[QS_ROWS_K];
    const float *xd[QS_ROWS_K];
    qv_f32 acc[QS_ROWS_K];
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++) {
        qrow_t x = qrow(t->a, r0 + r);
        xq[r] = (const int32_t *)x.qs, xo[r] = x.offset, xd[r] = x.d;
        acc[r] = (qv_f32){0};
    }
    const uint8_t *tb = t->scratch;
    for (uint32_t b = 0; b < t->k / 256; b++, tb += T6K_BYTES) { /* hot */
        qv_i32 s1[QS_ROWS_K];
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++)
            s1[r] = (qv_i32){0};
#pragma GCC unroll 2
        for (int s = 0; s < 16; s++) {
            qv_i32 part[QS_ROWS_K][2];
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
                for (int c = 0; c < chains; c++)
                    part[r][c] = c == 0 ? QN(splat)(xo[r][16 * b + s]) : (qv_i32){0};
#pragma GCC unroll 4
            for (int g = 0; g < 4; g++) {
                qv_i32 w = QN(load)(tb + 64 * (4 * s + g));
#pragma GCC unroll 8
                for (int r = 0; r < rows; r++)
                    part[r][g % chains] = QN(dot4)(part[r][g % chains], w,
                                                   QN(splat)(xq[r][64 * b + 4 * s + g]));
            }
            qv_i32 scale = QN(load)(tb + 4096 + 64 * s);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) {
                if (chains > 1)
                    part[r][0] += part[r][1];
                s1[r] += part[r][0] * scale;
            }
        }
        qv_f32 d = *(const qv_f32 *)(tb + 5120);
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++)
            acc[r] = QN(fmadd)(__builtin_convertvector(s1[r], qv_f32), d * xd[r][b], acc[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
        QN(store)(t, r0 + r, acc[r]);
}

/* Every batch row against the repacked tile, `most` rows per pass; the last pass takes what
 * is left (each case a constant, so every shape keeps its accumulators in registers). */
#define QS_ALL_ROWS(most, call)                                                                \
    do {                                                                                       \
        uint32_t r0 = 0;                                                                       \
        for (; r0 + (most) <= t->n; r0 += (most)) {                                            \
            enum { rows = (most) };                                                            \
            call;                                                                              \
        }                                                                                      \
        switch (t->n - r0) {                                                                   \
        case 7: if (7 < (most)) { enum { rows = 7 < (most) ? 7 : 1 }; call; } break;           \
        case 6: if (6 < (most)) { enum { rows = 6 < (most) ? 6 : 1 }; call; } break;           \
        case 5: if (5 < (most)) { enum { rows = 5 < (most) ? 5 : 1 }; call; } break;           \
        case 4: if (4 < (most)) { enum { rows = 4 < (most) ? 4 : 1 }; call; } break;           \
        case 3: if (3 < (most)) { enum { rows = 3 < (most) ? 3 : 1 }; call; } break;           \
        case 2: if (2 < (most)) { enum { rows = 2 < (most) ? 2 : 1 }; call; } break;           \
        case 1: { enum { rows = 1 }; call; } break;                                            \
        default: break;                                                                        \
        }                                                                                      \
    } while (0)

static QS_TARGET void QN(tile)(const qtile_t *t)
{
    const uint8_t *col[16];
    qv_i32 index;
    for (uint32_t c = 0; c < 16; c++) { /* columns past the weight repeat its last one */
        uint32_t real = c < t->count ? c : t->count - 1;
        col[c] = t->w + real * t->row_bytes;
        index[c] = (int32_t)(real * t->row_bytes);
    }
    switch (t->dtype) {
    case NX_DT_Q8_0:
        QN(repack_q8_0)(t, col, index);
        QS_ALL_ROWS(QS_ROWS, QN(rows_32)(t, r0, rows, QS_Q8_UNSIGNED ? 128 : 0, true));
        break;
    case NX_DT_Q4_0:
    case NX_DT_Q5_0: {
        bool q5 = t->dtype == NX_DT_Q5_0;
        if (q5)
            QN(repack_q4_0)(t, col, index, true);
        else
            QN(repack_q4_0)(t, col, index, false);
        QS_ALL_ROWS(QS_ROWS, QN(rows_32)(t, r0, rows, q5 ? 16 : 8, false));
        break;
    }
    case NX_DT_Q4_K:
        QN(repack_q4_k)(t, col, index);
        QS_ALL_ROWS(QS_ROWS_K, QN(rows_4k)(t, r0, rows));
        break;
    default:
        QN(repack_q6_k)(t, col, index);
        QS_ALL_ROWS(QS_ROWS_K, QN(rows_6k)(t, r0, rows));
        break;
    }
}

#undef QS_ALL_ROWS
#undef QS_CHAINS
