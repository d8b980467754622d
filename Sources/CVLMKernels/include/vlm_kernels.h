#ifndef VLM_KERNELS_H
#define VLM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU runs `vlm_resample_line_avx2` (x86-64 with AVX2), else 0.
int vlm_has_avx2(void);

/// VLMImage's `ResampleKernel.line` in 32-byte AVX2 chunks, same integers: `byte_count` (>= 32) output bytes,
/// each the Q22 sum over `taps` lines `stride` bytes apart, `weights` holding per pair of taps 8 int16 high
/// parts then 8 int16 low parts. Call only when `vlm_has_avx2()` is 1.
void vlm_resample_line_avx2(const uint8_t *first, ptrdiff_t stride, ptrdiff_t taps, const int16_t *weights,
                            ptrdiff_t byte_count, uint8_t *out);

#endif
