// The one kernel Swift cannot compile for AVX2 alone: Swift has no per-function target features, and building a
// module with AVX2 could leave AVX2 code in specializations that baseline code links to. Here only the functions
// marked `target("avx2")` use it, and VLMImage calls them after `vlm_has_avx2()`.
#include "vlm_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

int vlm_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}

__attribute__((target("avx2")))
void vlm_resample_line_avx2(const uint8_t *first, ptrdiff_t stride, ptrdiff_t taps, const int16_t *weights,
                            ptrdiff_t byte_count, uint8_t *out) {
    const __m256i zero = _mm256_setzero_si256();
    for (ptrdiff_t i = 0; i < byte_count; i += 32) {
        // The last chunk overlaps the one before; in-lane unpacks and packs keep the bytes in order.
        const ptrdiff_t at = i < byte_count - 32 ? i : byte_count - 32;
        __m256i high[4] = {zero, zero, zero, zero};
        __m256i low[4];
        for (int j = 0; j < 4; j++) low[j] = _mm256_set1_epi32(1 << 21);
        for (ptrdiff_t k = 0; k < taps; k += 2) {
            const __m256i a = _mm256_loadu_si256((const __m256i *)(first + k * stride + at));
            // An odd last tap pairs with itself under weight 0.
            const __m256i b = k + 1 < taps ? _mm256_loadu_si256((const __m256i *)(first + (k + 1) * stride + at)) : a;
            const __m256i wh = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(weights + k * 8)));
            const __m256i wl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(weights + k * 8 + 8)));
            const __m256i a0 = _mm256_unpacklo_epi8(a, zero), a1 = _mm256_unpackhi_epi8(a, zero);
            const __m256i b0 = _mm256_unpacklo_epi8(b, zero), b1 = _mm256_unpackhi_epi8(b, zero);
            const __m256i pairs[4] = {_mm256_unpacklo_epi16(a0, b0), _mm256_unpackhi_epi16(a0, b0),
                                      _mm256_unpacklo_epi16(a1, b1), _mm256_unpackhi_epi16(a1, b1)};
            for (int j = 0; j < 4; j++) {
                high[j] = _mm256_add_epi32(high[j], _mm256_madd_epi16(pairs[j], wh));
                low[j] = _mm256_add_epi32(low[j], _mm256_madd_epi16(pairs[j], wl));
            }
        }
        __m256i sum[4];
        for (int j = 0; j < 4; j++) {
            sum[j] = _mm256_srai_epi32(_mm256_add_epi32(_mm256_slli_epi32(high[j], 15), low[j]), 22);
        }
        // clip8: the shifted sums fit int16, and packus clamps int16 to 0...255.
        const __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(sum[0], sum[1]), _mm256_packs_epi32(sum[2], sum[3]));
        _mm256_storeu_si256((__m256i *)(out + at), bytes);
    }
}

#else

int vlm_has_avx2(void) { return 0; }

void vlm_resample_line_avx2(const uint8_t *first, ptrdiff_t stride, ptrdiff_t taps, const int16_t *weights,
                            ptrdiff_t byte_count, uint8_t *out) {
    (void)first; (void)stride; (void)taps; (void)weights; (void)byte_count; (void)out;
    __builtin_trap();
}

#endif
