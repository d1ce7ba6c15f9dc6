/* cpu_quant_simd.h — the SIMD body of cpu_quant.c, included there once per instruction set and
 * nowhere else. Before each include cpu_quant.c defines QN(name) (the set's suffix), QS_TARGET
 * (its target attribute), QS_ROWS / QS_ROWS_K (batch rows per pass over a repacked tile),
 * QS_FUSED_ROWS (batches up to this size decode the tile in registers), QS_Q8_UNSIGNED and the
 * set's primitives QN(dot4) (u8 x s8, four products into each int32 lane), QN(dot4_q8) (the
 * same for Q8_0's codes as decoded), QN(dot2) (s16 pairs), QN(fmadd), QN(fnmadd), QN(gather)
 * (an int32 from each row), QN(half) (the fp16 in each lane's low half to float) and
 * QN(lookup16) (lane c = table[index[c] & 15]).
 *
 * A tile is 16 weight rows ("columns" of the output). Decoded, each 64-byte vector holds one
 * group of 4 consecutive codes of every row (lane c = row c), so one multiply-accumulate
 * advances 16 output elements by 4 values of k against 4 activation bytes broadcast to every
 * lane. The weights are decoded a step of 64 values at a time into 16 such vectors: loads of
 * each row's bytes, a 16 x 8 int32 transpose, nibbles split. A batch of up to QS_FUSED_ROWS
 * rows (decode) uses them at once; a larger one has the whole tile decoded into scratch first
 * and then runs QS_ROWS rows per pass over it. Scratch layouts, per block of the weight
 * (T32_BYTES etc. in cpu_quant.c):
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

/* Decode reads 16 weight rows side by side, a step's few dozen bytes of each at a time: too
 * many streams for the hardware prefetchers. So each step asks for the bytes of every row that
 * the step QS_LEAD steps later will read, in this tile or, past its end, in the weight's next
 * tile: in the order the kernel consumes them (asking for the next tile front to back instead
 * leaves its last rows late: Q6_K 13-14 GB/s against 16.5, one core from memory). */
#define QS_LEAD 16

static AI QS_TARGET void QN(prefetch)(const qtile_t *t, const cols_t *cs, uint32_t step)
{
    uint32_t target = step + QS_LEAD;
    uint64_t at = (uint64_t)target * t->row_step;
    if (target >= t->steps) { /* the next tile's rows follow this one's 16 */
        if (!t->ahead || t->count < NX_Q_TILE_COLS || target - t->steps >= t->steps)
            return;
        at = NX_Q_TILE_COLS * t->row_bytes + (uint64_t)(target - t->steps) * t->row_step;
    }
#pragma GCC unroll 16
    for (int c = 0; c < NX_Q_TILE_COLS; c++) /* prefetcht2: to L2 (never faults past the end) */
        __builtin_prefetch(col_at(cs, c, at), 0, 1);
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

/* out[g] lane c = int32 g of row c's 8, for z[j] = [8 int32 of row j | of row 8 + j]: a
 * 16 x 8 transpose that never mixes the two 256-bit halves (cheap on AVX2 too). Stage one
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
    for (int h = 0; h < 2; h++) { /* rows 0-3 / 8-11 (h 0), 4-7 / 12-15 (h 1) */
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

/* The 32 bytes at `at` of every row, transposed: out[g] lane c = row c's int32 g. */
static AI QS_TARGET void QN(rows32)(const cols_t *cs, uint64_t at, qv_i32 out[8])
{
    qv_i32 z[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        z[j] = QN(pair32)(col_at(cs, j, at), col_at(cs, 8 + j, at));
    QN(transpose)(z, out);
}

/* The 16 bytes at `at` of every row, transposed: out[e] lane c = row c's int32 e. z[j] holds
 * rows j, j + 4, j + 8, j + 12, so the first two stages of the transpose above put them in
 * order. */
static AI QS_TARGET void QN(rows16)(const cols_t *cs, uint64_t at, qv_i32 out[4])
{
    qv_i32 z[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++)
        z[j] = QN(quad16)(col_at(cs, j, at), col_at(cs, 4 + j, at), col_at(cs, 8 + j, at),
                          col_at(cs, 12 + j, at));
    qv_i32 u0 = __builtin_shufflevector(z[0], z[1], 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25,
                                        12, 28, 13, 29);
    qv_i32 u1 = __builtin_shufflevector(z[0], z[1], 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27,
                                        14, 30, 15, 31);
    qv_i32 u2 = __builtin_shufflevector(z[2], z[3], 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25,
                                        12, 28, 13, 29);
    qv_i32 u3 = __builtin_shufflevector(z[2], z[3], 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27,
                                        14, 30, 15, 31);
    out[0] = __builtin_shufflevector(u0, u2, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13,
                                     28, 29);
    out[1] = __builtin_shufflevector(u0, u2, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15,
                                     30, 31);
    out[2] = __builtin_shufflevector(u1, u3, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13,
                                     28, 29);
    out[3] = __builtin_shufflevector(u1, u3, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15,
                                     30, 31);
}

/* The fp16 at `at` (high: at + 2) of every row, as floats. A Q6_K block ends with d, so it is
 * read as the high half of the 4 bytes before: never past the block. */
static AI QS_TARGET qv_f32 QN(half_at)(const cols_t *cs, uint64_t at, bool high)
{
    qv_i32 four = QN(gather)(cs->g[0] + at, cs->index);
    return QN(half)(high ? four >> 16 : four);
}

/* ------------------------------------------------------------------------------------------
 * Decoding a step: 64 values of every row into w[16] (u8 codes, groups of 4 per lane)
 */

/* Q8_0 blocks b and b2 (b2 = b for an odd last block): w[0..7] block b, w[8..15] block b2. */
static AI QS_TARGET void QN(codes_q8_0)(const cols_t *cs, uint32_t b, uint32_t b2, qv_i32 w[16])
{
    QN(rows32)(cs, (uint64_t)b * sizeof(nx_bq8_0_t) + 2, w);
    QN(rows32)(cs, (uint64_t)b2 * sizeof(nx_bq8_0_t) + 2, w + 8);
    if (QS_Q8_UNSIGNED) /* vpdpbusd wants unsigned weights: code + 128 */
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            w[i] ^= (int32_t)0x80808080;
}

/* Q4_0 (or Q5_0, q5) blocks b and b2: their 16 code bytes transposed together, then split
 * into low nibbles (values 0-15) and high (16-31); Q5_0 adds bit 4 from qh. */
static AI QS_TARGET void QN(codes_q4_0)(const qtile_t *t, const cols_t *cs, uint32_t b,
                                        uint32_t b2, bool q5, qv_i32 w[16])
{
    uint64_t bytes = q5 ? sizeof(nx_bq5_0_t) : sizeof(nx_bq4_0_t), codes = q5 ? 6 : 2;
    uint64_t at = b * bytes + codes, at2 = b2 * bytes + codes;
    qv_i32 z[8], g[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        z[j] = QN(quad16)(col_at(cs, j, at), col_at(cs, j, at2), col_at(cs, 8 + j, at),
                          col_at(cs, 8 + j, at2));
    QN(transpose)(z, g); /* g[0..3]: block b's int32s 0..3, g[4..7]: block b2's */
    /* 4 bits of qh -> bit 4 of each of 4 bytes: entry n has 0x10 in byte j where n has bit j */
    const qv_i32 spread = {0x00000000, 0x00000010, 0x00001000, 0x00001010, 0x00100000,
                           0x00100010, 0x00101000, 0x00101010, 0x10000000, 0x10000010,
                           0x10001000, 0x10001010, 0x10100000, 0x10100010, 0x10101000,
                           0x10101010};
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        qv_i32 qh = q5 ? QN(gather)(cs->g[0] + (h ? b2 : b) * bytes + 2, cs->index) : g[0];
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) { /* values 4i..4i+3: low nibbles, then high */
            qv_i32 code = (i < 4 ? g[4 * h + i] : g[4 * h + i - 4] >> 4) & 0x0f0f0f0f;
            if (q5) /* bits 4i..4i+3 of qh (the lookup reads the low 4 bits of each lane) */
                code |= QN(lookup16)(spread, qh >> (4 * i));
            w[8 * h + i] = code;
        }
    }
}

/* Q4_K block b, sub-blocks 2p (w[0..7], low nibbles) and 2p + 1 (w[8..15], high). With
 * QS_Q4K_HIGH16 the high nibbles stay in place, codes times 16 (no shift; vpdpbusd takes up
 * to 255 unsaturated), and q4k_scales multiplies the even sub-blocks' scales by 16 to match:
 * the super-block's sum comes out 16 times too large, exactly, and is shifted back. */
static AI QS_TARGET void QN(codes_q4_k)(const cols_t *cs, uint32_t b, int p, qv_i32 w[16])
{
    qv_i32 g[8];
    QN(rows32)(cs, (uint64_t)b * sizeof(nx_bq4_k_t) + 16 + 32 * p, g);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        w[i] = g[i] & 0x0f0f0f0f;
        w[8 + i] = QS_Q4K_HIGH16 ? g[i] & (int32_t)0xf0f0f0f0 : (g[i] >> 4) & 0x0f0f0f0f;
    }
}

/* s1 as the kernels accumulate it (16 times the sum with QS_Q4K_HIGH16; |16 s1| < 2^29)
 * back to the super-block's sum: an exact shift. */
static AI QS_TARGET qv_i32 QN(q4k_sum)(qv_i32 s1)
{
    return QS_Q4K_HIGH16 ? s1 >> 4 : s1;
}

/* Q4_K's 8 scales and mins of every row from its block header (rows16 of the block's first
 * 16 bytes: d|dmin, then the 12 scale bytes), unpacked as nx__q4k_scale_min does: scale[s],
 * and the mins as int16 pairs (sub-blocks 2p, 2p + 1) for vpdpwssd. */
static AI QS_TARGET void QN(q4k_scales)(const qv_i32 h[4], qv_i32 scale[8], qv_i32 min_pair[4])
{
    qv_i32 mins[8];
#pragma GCC unroll 8
    for (int s = 0; s < 8; s++) {
        int j = 8 * (s & 3);
        scale[s] = s < 4 ? (h[1] >> j) & 63 : ((h[3] >> j) & 15) | ((h[1] >> (j + 6)) & 3) << 4;
        if (QS_Q4K_HIGH16 && s % 2 == 0) /* the low nibbles' sub-block: see codes_q4_k */
            scale[s] <<= 4;
        mins[s] = s < 4 ? (h[2] >> j) & 63 : ((h[3] >> (j + 4)) & 15) | ((h[2] >> (j + 6)) & 3) << 4;
    }
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++)
        min_pair[p] = mins[2 * p] | mins[2 * p + 1] << 16;
}

/* Q6_K block b, half hf (values 128 hf + ...), quarters q = qq and qq + 2 (each 32 values:
 * two sub-blocks of 16, 4 groups each): w[0..7] quarter qq, w[8..15] quarter qq + 2. high[]
 * holds the half's transposed qh bytes: computed when qq is 0, reused for qq 1. */
static AI QS_TARGET void QN(codes_q6_k)(const cols_t *cs, uint32_t b, int hf, int qq,
                                        qv_i32 high[8], qv_i32 w[16])
{
    uint64_t at = (uint64_t)b * sizeof(nx_bq6_k_t);
    qv_i32 low[8];
    if (qq == 0)
        QN(rows32)(cs, at + 128 + 32 * hf, high);
    QN(rows32)(cs, at + 64 * hf + 32 * qq, low); /* ql: value l low bits, l + 64 high bits */
#pragma GCC unroll 2
    for (int k = 0; k < 2; k++) {
        int q = qq + 2 * k;
#pragma GCC unroll 8
        for (int d = 0; d < 8; d++) {
            /* bits 2q, 2q + 1 of each qh byte moved to bits 4, 5: one shift (none for q 2)
             * and a mask, then (low & 0x0f) | top is one vpternlogd */
            qv_i32 top = q == 2 ? high[d] : q < 2 ? high[d] << (4 - 2 * q) : high[d] >> 2;
            w[8 * k + d] = ((k ? low[d] >> 4 : low[d]) & 0x0f0f0f0f) | (top & 0x30303030);
        }
    }
}

/* Q6_K's 16 int8 scales of every row, sign-extended. */
static AI QS_TARGET void QN(q6k_scales)(const cols_t *cs, uint32_t b, qv_i32 scale[16])
{
    qv_i32 h[4];
    QN(rows16)(cs, (uint64_t)b * sizeof(nx_bq6_k_t) + 192, h);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            scale[4 * i + j] = (qv_i32)((qv_u32)h[i] << (24 - 8 * j)) >> 24;
}

/* ------------------------------------------------------------------------------------------
 * Small batches (decode): each step decoded and used at once, never stored. Hot path.
 */
static AI QS_TARGET void QN(store)(const qtile_t *t, uint32_t row, qv_f32 acc)
{
    for (uint32_t c = 0; c < t->count; c++)
        store_out(t, row, c, acc[c]);
}

/* Independent integer chains per batch row: vpdpbusd's latency is several cycles, so a lone
 * row splits its sums over 2 accumulators (integers: any grouping gives the same sum). */
#define QS_CHAINS(rows) ((rows) == 1 ? 2 : 1)

/* Q8_0 (q8), Q4_0, Q5_0 (q5): per block isum = offset_mul * offset + codes . x. */
static AI QS_TARGET void QN(fused_32)(const qtile_t *t, const cols_t *cs, int rows,
                                      int32_t offset_mul, bool q8, bool q5)
{
    const int chains = QS_CHAINS(rows);
    const int32_t *xq[QS_FUSED_ROWS], *xo[QS_FUSED_ROWS];
    const float *xd[QS_FUSED_ROWS];
    qv_f32 acc[QS_FUSED_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++) {
        qrow_t x = qrow(t->a, r);
        xq[r] = (const int32_t *)x.qs, xo[r] = x.offset, xd[r] = x.d;
        acc[r] = (qv_f32){0};
    }
    uint32_t blocks = t->k / 32;
    uint64_t bytes = q8 ? sizeof(nx_bq8_0_t) : q5 ? sizeof(nx_bq5_0_t) : sizeof(nx_bq4_0_t);
    for (uint32_t b = 0; b < blocks; b += 2) {
        uint32_t b2 = b + 1 < blocks ? b + 1 : b;
        QN(prefetch)(t, cs, b / 2);
        qv_i32 w[16];
        if (q8)
            QN(codes_q8_0)(cs, b, b2, w);
        else
            QN(codes_q4_0)(t, cs, b, b2, q5, w);
#pragma GCC unroll 2
        for (uint32_t h = 0; h < 2; h++) {
            uint32_t blk = h ? b2 : b;
            if (h && b2 == b)
                break;
            qv_f32 dw = QN(half_at)(cs, blk * bytes, false);
            qv_i32 isum[QS_FUSED_ROWS][2];
#pragma GCC unroll 4
            for (int r = 0; r < rows; r++)
                isum[r][0] = QN(splat)(xo[r][blk] * offset_mul), isum[r][1] = (qv_i32){0};
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
#pragma GCC unroll 4
                for (int r = 0; r < rows; r++) {
                    qv_i32 *sum = &isum[r][i % chains];
                    qv_i32 x = QN(splat)(xq[r][8 * blk + i]);
                    *sum = q8 ? QN(dot4_q8)(*sum, w[8 * h + i], x) : QN(dot4)(*sum, w[8 * h + i], x);
                }
#pragma GCC unroll 4
            for (int r = 0; r < rows; r++)
                acc[r] = QN(fmadd)(__builtin_convertvector(isum[r][0] + isum[r][1], qv_f32),
                                   dw * xd[r][blk], acc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
        QN(store)(t, r, acc[r]);
}

/* Q4_K: s1 = sum over sub-blocks of scale * (codes . x), s2 = sum of min * (sum of x). */
static AI QS_TARGET void QN(fused_4k)(const qtile_t *t, const cols_t *cs, int rows)
{
    const int chains = QS_CHAINS(rows);
    const int32_t *xq[QS_FUSED_ROWS], *xs[QS_FUSED_ROWS];
    const float *xd[QS_FUSED_ROWS];
    qv_f32 acc[QS_FUSED_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++) {
        qrow_t x = qrow(t->a, r);
        xq[r] = (const int32_t *)x.qs, xs[r] = (const int32_t *)x.sum32, xd[r] = x.d;
        acc[r] = (qv_f32){0};
    }
    for (uint32_t b = 0; b < t->k / 256; b++) {
        qv_i32 h[4], scale[8], min_pair[4], s1[QS_FUSED_ROWS], s2[QS_FUSED_ROWS];
        QN(rows16)(cs, (uint64_t)b * sizeof(nx_bq4_k_t), h);
        QN(q4k_scales)(h, scale, min_pair);
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++)
            s1[r] = s2[r] = (qv_i32){0};
#pragma GCC unroll 1
        for (int p = 0; p < 4; p++) {
            QN(prefetch)(t, cs, 4 * b + p);
            qv_i32 w[16], lo[QS_FUSED_ROWS][2], hi[QS_FUSED_ROWS][2];
            QN(codes_q4_k)(cs, b, p, w);
#pragma GCC unroll 4
            for (int r = 0; r < rows; r++)
                lo[r][0] = lo[r][1] = hi[r][0] = hi[r][1] = (qv_i32){0};
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
#pragma GCC unroll 4
                for (int r = 0; r < rows; r++) {
                    const int32_t *xr = xq[r] + 64 * b + 16 * p;
                    lo[r][i % chains] = QN(dot4)(lo[r][i % chains], w[i], QN(splat)(xr[i]));
                    hi[r][i % chains] = QN(dot4)(hi[r][i % chains], w[8 + i], QN(splat)(xr[8 + i]));
                }
#pragma GCC unroll 4
            for (int r = 0; r < rows; r++)
                s1[r] += (lo[r][0] + lo[r][1]) * scale[2 * p] +
                         (hi[r][0] + hi[r][1]) * scale[2 * p + 1];
        }
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++)
#pragma GCC unroll 4
            for (int r = 0; r < rows; r++)
                s2[r] = QN(dot2)(s2[r], min_pair[p], QN(splat)(xs[r][4 * b + p]));
        qv_f32 d = QN(half)(h[0]), dmin = QN(half)(h[0] >> 16);
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            acc[r] = QN(fmadd)(__builtin_convertvector(QN(q4k_sum)(s1[r]), qv_f32),
                               d * xd[r][b], acc[r]);
            acc[r] = QN(fnmadd)(__builtin_convertvector(s2[r], qv_f32), dmin * xd[r][b], acc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
        QN(store)(t, r, acc[r]);
}

/* Q6_K: s1 = sum over sub-blocks of scale * (codes . x - 32 * sum of x). */
static AI QS_TARGET void QN(fused_6k)(const qtile_t *t, const cols_t *cs, int rows)
{
    const int32_t *xq[QS_FUSED_ROWS], *xo[QS_FUSED_ROWS];
    const float *xd[QS_FUSED_ROWS];
    qv_f32 acc[QS_FUSED_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++) {
        qrow_t x = qrow(t->a, r);
        xq[r] = (const int32_t *)x.qs, xo[r] = x.offset, xd[r] = x.d;
        acc[r] = (qv_f32){0};
    }
    for (uint32_t b = 0; b < t->k / 256; b++) {
        qv_i32 scale[16], s1[QS_FUSED_ROWS], high[8] = {{0}}; /* filled by step 0 */
        QN(q6k_scales)(cs, b, scale);
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++)
            s1[r] = (qv_i32){0};
#pragma GCC unroll 1
        for (int step = 0; step < 4; step++) {
            int hf = step / 2, qq = step % 2;
            QN(prefetch)(t, cs, 4 * b + step);
            qv_i32 w[16];
            QN(codes_q6_k)(cs, b, hf, qq, high, w);
#pragma GCC unroll 4
            for (int s = 0; s < 4; s++) { /* sub-block 8 hf + 2 (qq + 2 (s / 2)) + s % 2 */
                int sub = 8 * hf + 2 * (qq + 2 * (s / 2)) + s % 2;
#pragma GCC unroll 4
                for (int r = 0; r < rows; r++) {
                    qv_i32 part = QN(splat)(xo[r][16 * b + sub]);
#pragma GCC unroll 4
                    for (int g = 0; g < 4; g++)
                        part = QN(dot4)(part, w[4 * s + g],
                                        QN(splat)(xq[r][64 * b + 4 * sub + g]));
                    s1[r] += part * scale[sub];
                }
            }
        }
        qv_f32 d = QN(half_at)(cs, (uint64_t)b * sizeof(nx_bq6_k_t) + 206, true);
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++)
            acc[r] = QN(fmadd)(__builtin_convertvector(s1[r], qv_f32), d * xd[r][b], acc[r]);
    }
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
        QN(store)(t, r, acc[r]);
}

/* ------------------------------------------------------------------------------------------
 * Larger batches: the tile decoded into scratch once, then every row against it
 */
static AI QS_TARGET void QN(repack_32)(const qtile_t *t, const cols_t *cs, bool q8, bool q5)
{
    uint32_t blocks = t->k / 32;
    uint64_t bytes = q8 ? sizeof(nx_bq8_0_t) : q5 ? sizeof(nx_bq5_0_t) : sizeof(nx_bq4_0_t);
    for (uint32_t b = 0; b < blocks; b += 2) {
        uint32_t b2 = b + 1 < blocks ? b + 1 : b;
        QN(prefetch)(t, cs, b / 2);
        qv_i32 w[16];
        if (q8)
            QN(codes_q8_0)(cs, b, b2, w);
        else
            QN(codes_q4_0)(t, cs, b, b2, q5, w);
#pragma GCC unroll 2
        for (uint32_t h = 0; h < 2; h++) { /* an odd last block is written twice: room for it */
            uint8_t *out = t->scratch + (size_t)(b + h) * T32_BYTES;
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                QN(put)(out + 64 * i, w[8 * h + i]);
            *(qv_f32 *)(out + 512) = QN(half_at)(cs, (h ? b2 : b) * bytes, false);
        }
    }
}

static AI QS_TARGET void QN(repack_4k)(const qtile_t *t, const cols_t *cs)
{
    uint8_t *out = t->scratch;
    for (uint32_t b = 0; b < t->k / 256; b++, out += T4K_BYTES) {
#pragma GCC unroll 1
        for (int p = 0; p < 4; p++) {
            QN(prefetch)(t, cs, 4 * b + p);
            qv_i32 w[16];
            QN(codes_q4_k)(cs, b, p, w);
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                QN(put)(out + 64 * (16 * p + i), w[i]);
        }
        qv_i32 h[4], scale[8], min_pair[4];
        QN(rows16)(cs, (uint64_t)b * sizeof(nx_bq4_k_t), h);
        QN(q4k_scales)(h, scale, min_pair);
#pragma GCC unroll 8
        for (int s = 0; s < 8; s++)
            QN(put)(out + 4096 + 64 * s, scale[s]);
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++)
            QN(put)(out + 4608 + 64 * p, min_pair[p]);
        *(qv_f32 *)(out + 4864) = QN(half)(h[0]);
        *(qv_f32 *)(out + 4928) = QN(half)(h[0] >> 16);
    }
}

static AI QS_TARGET void QN(repack_6k)(const qtile_t *t, const cols_t *cs)
{
    uint8_t *out = t->scratch;
    for (uint32_t b = 0; b < t->k / 256; b++, out += T6K_BYTES) {
        qv_i32 high[8] = {{0}}; /* filled by step 0 */
#pragma GCC unroll 1
        for (int step = 0; step < 4; step++) {
            int hf = step / 2, qq = step % 2;
            QN(prefetch)(t, cs, 4 * b + step);
            qv_i32 w[16];
            QN(codes_q6_k)(cs, b, hf, qq, high, w);
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) { /* w[4s + g]: sub-block as in fused_6k, group g */
                int s = i / 4, sub = 8 * hf + 2 * (qq + 2 * (s / 2)) + s % 2;
                QN(put)(out + 64 * (4 * sub + i % 4), w[i]);
            }
        }
        qv_i32 scale[16];
        QN(q6k_scales)(cs, b, scale);
#pragma GCC unroll 16
        for (int s = 0; s < 16; s++)
            QN(put)(out + 4096 + 64 * s, scale[s]);
        *(qv_f32 *)(out + 5120) = QN(half_at)(cs, (uint64_t)b * sizeof(nx_bq6_k_t) + 206, true);
    }
}

/* Q8_0 (q8: its dot), Q4_0, Q5_0: per block isum = offset_mul * offset + codes . x. */
static AI QS_TARGET void QN(rows_32)(const qtile_t *t, uint32_t r0, int rows, int32_t offset_mul,
                                     bool q8)
{
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
        qv_i32 isum[QS_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++)
            isum[r] = QN(splat)(xo[r][b] * offset_mul);
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            qv_i32 w = QN(load)(tb + 64 * g);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++)
                isum[r] = q8 ? QN(dot4_q8)(isum[r], w, QN(splat)(xq[r][8 * b + g]))
                             : QN(dot4)(isum[r], w, QN(splat)(xq[r][8 * b + g]));
        }
        qv_f32 dw = *(const qv_f32 *)(tb + 512);
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++)
            acc[r] = QN(fmadd)(__builtin_convertvector(isum[r], qv_f32), dw * xd[r][b], acc[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
        QN(store)(t, r0 + r, acc[r]);
}

static AI QS_TARGET void QN(rows_4k)(const qtile_t *t, uint32_t r0, int rows)
{
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
            qv_i32 part[QS_ROWS_K];
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++)
                part[r] = (qv_i32){0};
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) {
                qv_i32 w = QN(load)(tb + 64 * (8 * s + g));
#pragma GCC unroll 8
                for (int r = 0; r < rows; r++)
                    part[r] = QN(dot4)(part[r], w, QN(splat)(xq[r][64 * b + 8 * s + g]));
            }
            qv_i32 scale = QN(load)(tb + 4096 + 64 * s);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++)
                s1[r] += part[r] * scale;
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
            acc[r] = QN(fmadd)(__builtin_convertvector(QN(q4k_sum)(s1[r]), qv_f32),
                               d * xd[r][b], acc[r]);
            acc[r] = QN(fnmadd)(__builtin_convertvector(s2[r], qv_f32), dmin * xd[r][b], acc[r]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
        QN(store)(t, r0 + r, acc[r]);
}

static AI QS_TARGET void QN(rows_6k)(const qtile_t *t, uint32_t r0, int rows)
{
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
            qv_i32 part[QS_ROWS_K];
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++)
                part[r] = QN(splat)(xo[r][16 * b + s]);
#pragma GCC unroll 4
            for (int g = 0; g < 4; g++) {
                qv_i32 w = QN(load)(tb + 64 * (4 * s + g));
#pragma GCC unroll 8
                for (int r = 0; r < rows; r++)
                    part[r] = QN(dot4)(part[r], w, QN(splat)(xq[r][64 * b + 4 * s + g]));
            }
            qv_i32 scale = QN(load)(tb + 4096 + 64 * s);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++)
                s1[r] += part[r] * scale;
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

/* `call` for every group of rows: `most` rows at a time, then what is left; each case passes a
 * constant `rows`, so every shape keeps its accumulators in registers. */
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

/* `call` with a constant `rows` = t->n, for t->n <= QS_FUSED_ROWS (at most 4). */
#define QS_FEW_ROWS(call)                                                                      \
    do {                                                                                       \
        switch (t->n) {                                                                        \
        case 4: { enum { rows = QS_FUSED_ROWS >= 4 ? 4 : 1 }; call; } break;                   \
        case 3: { enum { rows = QS_FUSED_ROWS >= 3 ? 3 : 1 }; call; } break;                   \
        case 2: { enum { rows = QS_FUSED_ROWS >= 2 ? 2 : 1 }; call; } break;                   \
        default: { enum { rows = 1 }; call; } break;                                           \
        }                                                                                      \
    } while (0)

static QS_TARGET void QN(tile)(const qtile_t *t, const cols_t *cs)
{
    bool few = t->n <= QS_FUSED_ROWS;
    switch (t->dtype) {
    case NX_DT_Q8_0:
        if (few) {
            QS_FEW_ROWS(QN(fused_32)(t, cs, rows, QS_Q8_UNSIGNED ? 128 : 0, true, false));
            break;
        }
        QN(repack_32)(t, cs, true, false);
        QS_ALL_ROWS(QS_ROWS, QN(rows_32)(t, r0, rows, QS_Q8_UNSIGNED ? 128 : 0, true));
        break;
    case NX_DT_Q4_0:
        if (few) {
            QS_FEW_ROWS(QN(fused_32)(t, cs, rows, 8, false, false));
            break;
        }
        QN(repack_32)(t, cs, false, false);
        QS_ALL_ROWS(QS_ROWS, QN(rows_32)(t, r0, rows, 8, false));
        break;
    case NX_DT_Q5_0:
        if (few) {
            QS_FEW_ROWS(QN(fused_32)(t, cs, rows, 16, false, true));
            break;
        }
        QN(repack_32)(t, cs, false, true);
        QS_ALL_ROWS(QS_ROWS, QN(rows_32)(t, r0, rows, 16, false));
        break;
    case NX_DT_Q4_K:
        if (few) {
            QS_FEW_ROWS(QN(fused_4k)(t, cs, rows));
            break;
        }
        QN(repack_4k)(t, cs);
        QS_ALL_ROWS(QS_ROWS_K, QN(rows_4k)(t, r0, rows));
        break;
    default:
        if (few) {
            QS_FEW_ROWS(QN(fused_6k)(t, cs, rows));
            break;
        }
        QN(repack_6k)(t, cs);
        QS_ALL_ROWS(QS_ROWS_K, QN(rows_6k)(t, r0, rows));
        break;
    }
}

#undef QS_ALL_ROWS
#undef QS_FEW_ROWS
#undef QS_CHAINS
#undef QS_LEAD
