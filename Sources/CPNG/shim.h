#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* libpng reports every error by longjmp to a setjmp its caller made. Swift cannot call setjmp, so every libpng
 * call that can fail is made from these static inline functions (compiled by clang as part of the importing
 * module): each sets png_jmpbuf before calling libpng and turns an error into a return value plus the message
 * libpng gave. Warnings are ignored, as PIL ignores them. */

#define VLM_PNG_MESSAGE 256

static inline void vlm_png_on_error(png_structp png, png_const_charp message) {
    char *buffer = (char *)png_get_error_ptr(png);
    if (buffer != NULL) {
        strncpy(buffer, message != NULL ? message : "libpng error", VLM_PNG_MESSAGE - 1);
        buffer[VLM_PNG_MESSAGE - 1] = 0;
    }
    png_longjmp(png, 1);
}

static inline void vlm_png_on_warning(png_structp png, png_const_charp message) {
    (void)png;
    (void)message;
}

/* ---------------------------------------------------------------- reading */

/* What IHDR and PLTE say; `row_bytes` is one raw row at full width (samples packed as stored, 16-bit big-endian). */
struct vlm_png_header {
    unsigned int width, height;
    int bit_depth, color_type, interlaced;
    int palette_entries;
    unsigned char palette[256 * 3];
    size_t row_bytes;
    /* Bytes from the first IDAT to the end of the file: an upper bound on the compressed image data. */
    size_t data_bytes;
};

struct vlm_png_reader {
    png_structp png;
    png_infop info;
    const unsigned char *data;
    size_t size, position;
    unsigned char *patched;
    int rows_clean;
    char message[VLM_PNG_MESSAGE];
};

static inline void vlm_png_read_memory(png_structp png, png_bytep out, size_t count) {
    struct vlm_png_reader *reader = (struct vlm_png_reader *)png_get_io_ptr(png);
    if (count > reader->size - reader->position) png_error(png, "Read beyond end of data");
    memcpy(out, reader->data + reader->position, count);
    reader->position += count;
}

/* Unknown chunks, critical ones included, are skipped as PIL skips them (libpng would reject a critical one). */
static inline int vlm_png_skip_chunk(png_structp png, png_unknown_chunkp chunk) {
    (void)png;
    (void)chunk;
    return 1;
}

static inline unsigned int vlm_png_be32(const unsigned char *p) {
    return (unsigned int)p[0] << 24 | (unsigned int)p[1] << 16 | (unsigned int)p[2] << 8 | (unsigned int)p[3];
}

static inline unsigned int vlm_png_crc32(const unsigned char *p, size_t n) {
    unsigned int c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return ~c;
}

static inline void vlm_png_put32(unsigned char *p, unsigned int v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16); p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

/* PIL takes a palette image's PLTE as it comes: the last one wins, a length that is no multiple of 3 is used as
 * far as it goes, none at all is all black; libpng refuses all of these (and, as PIL, more than 256 entries). When
 * a palette image's chunks before IDAT hold anything but exactly one valid PLTE, this returns a malloc'd copy of
 * the file in which those PLTE chunks are replaced by one valid PLTE with PIL's entries (missing ones black, as PIL
 * looks them up); NULL when no change is needed, or for what libpng should report (chunks that cannot be walked,
 * a PLTE with a bad CRC, one above 256 entries). */
static inline unsigned char *vlm_png_patch_palette(const unsigned char *data, size_t size, size_t *patched_size) {
    if (size < 33 || memcmp(data + 12, "IHDR", 4) != 0 || data[25] != 3) return NULL;
    int depth = data[24];
    unsigned char palette[256 * 3];
    memset(palette, 0, sizeof palette);
    int count = 0, valid = 0, too_long = 0;
    size_t first = 0, idat = 0, pos = 8, dropped = 0;
    while (pos + 8 <= size) {
        size_t length = vlm_png_be32(data + pos);
        if (memcmp(data + pos + 4, "IDAT", 4) == 0) {
            idat = pos;
            break;
        }
        if (length > size - pos - 12) return NULL;
        if (memcmp(data + pos + 4, "PLTE", 4) == 0) {
            if (vlm_png_crc32(data + pos + 4, length + 4) != vlm_png_be32(data + pos + 8 + length)) return NULL;
            if (count++ == 0) first = pos;
            valid = length > 0 && length % 3 == 0 && length <= sizeof palette;
            too_long = length > sizeof palette;
            size_t bytes = length / 3 * 3;
            if (bytes > sizeof palette) bytes = sizeof palette;
            memset(palette, 0, sizeof palette);
            memcpy(palette, data + pos + 8, bytes);
            dropped += 12 + length;
        }
        pos += 12 + length;
    }
    /* Above 256 entries PIL fails ("invalid palette size"), as libpng does. */
    if (idat == 0 || (count == 1 && valid) || too_long) return NULL;
    size_t entries = depth >= 1 && depth <= 8 ? (size_t)1 << depth : 256;
    size_t plte = 12 + entries * 3;
    size_t at = count > 0 ? first : idat;
    unsigned char *out = (unsigned char *)malloc(size - dropped + plte);
    if (out == NULL) return NULL;
    size_t o = 0;
    memcpy(out, data, 8);
    o = 8;
    for (pos = 8; pos < idat;) {
        size_t length = vlm_png_be32(data + pos);
        if (pos == at) {
            vlm_png_put32(out + o, (unsigned int)(entries * 3));
            memcpy(out + o + 4, "PLTE", 4);
            memcpy(out + o + 8, palette, entries * 3);
            vlm_png_put32(out + o + 8 + entries * 3, vlm_png_crc32(out + o + 4, entries * 3 + 4));
            o += plte;
        }
        if (memcmp(data + pos + 4, "PLTE", 4) != 0) {
            memcpy(out + o, data + pos, 12 + length);
            o += 12 + length;
        }
        pos += 12 + length;
    }
    if (at == idat) {
        vlm_png_put32(out + o, (unsigned int)(entries * 3));
        memcpy(out + o + 4, "PLTE", 4);
        memcpy(out + o + 8, palette, entries * 3);
        vlm_png_put32(out + o + 8 + entries * 3, vlm_png_crc32(out + o + 4, entries * 3 + 4));
        o += plte;
    }
    memcpy(out + o, data + idat, size - idat);
    *patched_size = o + size - idat;
    return out;
}

/* Parses the signature and every chunk up to the first IDAT (IHDR, PLTE, ...), CRC-checking each as PIL does when
 * opening. Always sets *out (NULL only when out of memory); release it with vlm_png_close. Returns 0, or -1 with
 * the message in (*out)->message. Allocates nothing for pixels. */
static inline int vlm_png_open(const unsigned char *data, size_t size, struct vlm_png_reader **out,
                               struct vlm_png_header *header) {
    struct vlm_png_reader *reader = (struct vlm_png_reader *)calloc(1, sizeof(struct vlm_png_reader));
    *out = reader;
    if (reader == NULL) return -1;
    reader->data = data;
    reader->size = size;
    size_t patched_size = 0;
    reader->patched = vlm_png_patch_palette(data, size, &patched_size);
    if (reader->patched != NULL) {
        reader->data = reader->patched;
        reader->size = patched_size;
    }
    reader->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, reader->message, vlm_png_on_error, vlm_png_on_warning);
    if (reader->png == NULL) {
        strcpy(reader->message, "png_create_read_struct failed");
        return -1;
    }
    reader->info = png_create_info_struct(reader->png);
    if (reader->info == NULL) {
        strcpy(reader->message, "png_create_info_struct failed");
        return -1;
    }
    if (setjmp(png_jmpbuf(reader->png))) return -1;
    png_set_read_fn(reader->png, reader, vlm_png_read_memory);
    png_set_read_user_chunk_fn(reader->png, NULL, vlm_png_skip_chunk);
    /* PIL's only size check is the pixel count (done by the caller); libpng's default caps are 1e6 per side. */
    png_set_user_limits(reader->png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
    png_set_benign_errors(reader->png, 1);
    /* Every chunk before the image data is CRC-checked, ancillary ones too (libpng would only warn). */
    png_set_crc_action(reader->png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    png_read_info(reader->png, reader->info);

    png_uint_32 width = 0, height = 0;
    int depth = 0, color = 0, interlace = 0;
    png_get_IHDR(reader->png, reader->info, &width, &height, &depth, &color, &interlace, NULL, NULL);
    header->width = width;
    header->height = height;
    header->bit_depth = depth;
    header->color_type = color;
    header->interlaced = interlace != PNG_INTERLACE_NONE;
    header->palette_entries = 0;
    memset(header->palette, 0, sizeof header->palette);
    png_colorp palette = NULL;
    int entries = 0;
    if (png_get_PLTE(reader->png, reader->info, &palette, &entries) != 0 && palette != NULL) {
        if (entries > 256) entries = 256;
        for (int i = 0; i < entries; i++) {
            header->palette[3 * i] = palette[i].red;
            header->palette[3 * i + 1] = palette[i].green;
            header->palette[3 * i + 2] = palette[i].blue;
        }
        header->palette_entries = entries;
    }
    header->row_bytes = png_get_rowbytes(reader->png, reader->info);
    /* png_read_info stops after the first IDAT's length and type. */
    header->data_bytes = reader->size - reader->position;
    return 0;
}

/* Reads every row, raw (no value transforms; Adam7 passes combined into full rows), into `out`:
 * `height` rows of `header.row_bytes` bytes. The CRC of IDAT and of everything after it is not checked (PIL does
 * not). An error raised after the last row was delivered (finishing the zlib stream, or reading past the image
 * data) is not an error: PIL stops reading once the image is full, too. Returns 0, or -1 with the message. */
static inline int vlm_png_read_rows(struct vlm_png_reader *reader, unsigned char *out, size_t row_bytes) {
    reader->rows_clean = 0;
    if (setjmp(png_jmpbuf(reader->png))) {
        png_structp png = reader->png;
        int done = png_get_interlace_type(png, reader->info) != PNG_INTERLACE_NONE
                       ? png_get_current_pass_number(png) >= 7
                       : png_get_current_row_number(png) >= png_get_image_height(png, reader->info);
        return done ? 0 : -1;
    }
    png_set_crc_action(reader->png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
    int passes = png_set_interlace_handling(reader->png);
    png_read_update_info(reader->png, reader->info);
    if (png_get_rowbytes(reader->png, reader->info) != row_bytes) {
        strcpy(reader->message, "unexpected row size");
        return -1;
    }
    png_uint_32 height = png_get_image_height(reader->png, reader->info);
    for (int pass = 0; pass < passes; pass++) {
        for (png_uint_32 y = 0; y < height; y++) png_read_row(reader->png, out + (size_t)y * row_bytes, NULL);
    }
    reader->rows_clean = 1;
    return 0;
}

/* The eXIf payload, if any. With `after_image` (and rows read cleanly) the chunks after the image data are read
 * first, errors there ignored. Returns the byte count (0: none) and the bytes, owned by the reader, in *bytes. */
static inline size_t vlm_png_exif(struct vlm_png_reader *reader, int after_image, const unsigned char **bytes) {
    png_uint_32 count = 0;
    png_bytep exif = NULL;
    *bytes = NULL;
    if (setjmp(png_jmpbuf(reader->png))) return 0;
    if (png_get_eXIf_1(reader->png, reader->info, &count, &exif) == 0 && after_image && reader->rows_clean) {
        png_read_end(reader->png, reader->info);
        if (png_get_eXIf_1(reader->png, reader->info, &count, &exif) == 0) return 0;
    }
    if (exif == NULL) return 0;
    *bytes = exif;
    return count;
}

static inline void vlm_png_close(struct vlm_png_reader *reader) {
    if (reader == NULL) return;
    if (reader->png != NULL) png_destroy_read_struct(&reader->png, reader->info != NULL ? &reader->info : NULL, NULL);
    free(reader->patched);
    free(reader);
}

#if defined(__SSE2__)
/* Paeth on one row of 3- or 4-byte pixels with the channels of a pixel side by side in 16-bit lanes (libpng's
 * `png_read_filter_row_paeth3_sse2`/`paeth4` method): the serial dependency is per pixel, not per byte.
 * smallest = min(pa, pb, pc); predictor a if smallest == pa, else b if smallest == pb, else c — the same choice
 * as the scalar rule (pa <= pb && pa <= pc ? a : pb <= pc ? b : c). */
static inline __attribute__((always_inline)) __m128i vlm_png_load(const unsigned char *p, size_t bpp) {
    uint32_t v = 0;
    memcpy(&v, p, bpp);
    return _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)v), _mm_setzero_si128());
}

/* Called with a constant `bpp` (3 or 4) so that the loads and the store are fixed-size moves, not memcpy calls. */
static inline __attribute__((always_inline)) void vlm_png_paeth_sse2(const unsigned char *src, const unsigned char *prior,
                                                                     unsigned char *row, size_t row_bytes, size_t bpp) {
    const __m128i zero = _mm_setzero_si128();
    __m128i a = zero, c = zero;
    for (size_t i = 0; i + bpp <= row_bytes; i += bpp) {
        __m128i b = vlm_png_load(prior + i, bpp);
        __m128i d = vlm_png_load(src + i, bpp);
        __m128i pa = _mm_sub_epi16(b, c);
        __m128i pb = _mm_sub_epi16(a, c);
        __m128i pc = _mm_add_epi16(pa, pb);
        pa = _mm_max_epi16(pa, _mm_sub_epi16(zero, pa));
        pb = _mm_max_epi16(pb, _mm_sub_epi16(zero, pb));
        pc = _mm_max_epi16(pc, _mm_sub_epi16(zero, pc));
        __m128i smallest = _mm_min_epi16(pc, _mm_min_epi16(pa, pb));
        __m128i isB = _mm_cmpeq_epi16(smallest, pb);
        __m128i nearest = _mm_or_si128(_mm_and_si128(isB, b), _mm_andnot_si128(isB, c));
        __m128i isA = _mm_cmpeq_epi16(smallest, pa);
        nearest = _mm_or_si128(_mm_and_si128(isA, a), _mm_andnot_si128(isA, nearest));
        /* Both lanes' high bytes are 0, so a byte add is the low byte mod 256 with the high byte kept 0. */
        d = _mm_add_epi8(d, nearest);
        uint32_t out = (uint32_t)_mm_cvtsi128_si32(_mm_packus_epi16(d, d));
        memcpy(row + i, &out, bpp);
        a = d;
        c = b;
    }
}
#endif

/* PNG row unfiltering (filter method 0: None, Sub, Up, Average, Paeth) of `height` rows, each a filter-type byte
 * then `row_bytes` bytes, into `out` (height * row_bytes bytes). `bpp` is bytes per complete pixel (at least 1).
 * The same integer arithmetic as libpng's `png_read_filter_row_*`. Returns 0, or -1 at the first filter type above
 * 4 (which libpng reports as "bad adaptive filter value"). */
static inline int vlm_png_unfilter(const unsigned char *filtered, size_t height, size_t row_bytes, size_t bpp,
                                   unsigned char *out) {
    for (size_t y = 0; y < height; y++) {
        const unsigned char *in = filtered + y * (row_bytes + 1);
        unsigned char *row = out + y * row_bytes;
        const unsigned char *prior = y > 0 ? row - row_bytes : NULL;
        const unsigned char *src = in + 1;
        size_t i;
        switch (in[0]) {
        case 0:
            memcpy(row, src, row_bytes);
            break;
        case 1:
            for (i = 0; i < bpp && i < row_bytes; i++) row[i] = src[i];
            for (; i < row_bytes; i++) row[i] = (unsigned char)(src[i] + row[i - bpp]);
            break;
        case 2:
            if (prior == NULL) {
                memcpy(row, src, row_bytes);
            } else {
                for (i = 0; i < row_bytes; i++) row[i] = (unsigned char)(src[i] + prior[i]);
            }
            break;
        case 3:
            if (prior == NULL) {
                for (i = 0; i < bpp && i < row_bytes; i++) row[i] = src[i];
                for (; i < row_bytes; i++) row[i] = (unsigned char)(src[i] + (row[i - bpp] >> 1));
            } else {
                for (i = 0; i < bpp && i < row_bytes; i++) row[i] = (unsigned char)(src[i] + (prior[i] >> 1));
                for (; i < row_bytes; i++) row[i] = (unsigned char)(src[i] + ((row[i - bpp] + prior[i]) >> 1));
            }
            break;
        case 4:
            if (prior == NULL) {
                /* Above and upper-left are 0: the predictor is the left byte (Sub). */
                for (i = 0; i < bpp && i < row_bytes; i++) row[i] = src[i];
                for (; i < row_bytes; i++) row[i] = (unsigned char)(src[i] + row[i - bpp]);
            } else {
#if defined(__SSE2__)
                if (bpp == 3 && row_bytes % 3 == 0) {
                    vlm_png_paeth_sse2(src, prior, row, row_bytes, 3);
                    break;
                }
                if (bpp == 4 && row_bytes % 4 == 0) {
                    vlm_png_paeth_sse2(src, prior, row, row_bytes, 4);
                    break;
                }
#endif
                for (i = 0; i < bpp && i < row_bytes; i++) row[i] = (unsigned char)(src[i] + prior[i]);
                for (; i < row_bytes; i++) {
                    int a = row[i - bpp], b = prior[i], c = prior[i - bpp];
                    int pa = b - c, pb = a - c;
                    int pc = pa + pb;
                    if (pa < 0) pa = -pa;
                    if (pb < 0) pb = -pb;
                    if (pc < 0) pc = -pc;
                    int predictor = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
                    row[i] = (unsigned char)(src[i] + predictor);
                }
            }
            break;
        default:
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- writing */

struct vlm_png_buffer {
    unsigned char *bytes;
    size_t size, capacity;
};

static inline void vlm_png_write_memory(png_structp png, png_bytep data, size_t count) {
    struct vlm_png_buffer *buffer = (struct vlm_png_buffer *)png_get_io_ptr(png);
    if (count > buffer->capacity - buffer->size) {
        size_t capacity = buffer->capacity < 4096 ? 4096 : buffer->capacity;
        while (capacity - buffer->size < count) capacity *= 2;
        unsigned char *grown = (unsigned char *)realloc(buffer->bytes, capacity);
        if (grown == NULL) png_error(png, "out of memory for the encoded PNG");
        buffer->bytes = grown;
        buffer->capacity = capacity;
    }
    memcpy(buffer->bytes + buffer->size, data, count);
    buffer->size += count;
}

static inline void vlm_png_flush(png_structp png) { (void)png; }

/* Encodes 8-bit RGB (channels 3) or gray (channels 1) rows, no interlace, default compression. Returns 0 with a
 * malloc'd buffer in *out (release with vlm_png_free), or -1 with the message in `message` (VLM_PNG_MESSAGE bytes). */
static inline int vlm_png_write(const unsigned char *pixels, unsigned int width, unsigned int height, int channels,
                                unsigned char **out, size_t *out_size, char *message) {
    struct vlm_png_buffer *buffer = (struct vlm_png_buffer *)calloc(1, sizeof(struct vlm_png_buffer));
    *out = NULL;
    *out_size = 0;
    message[0] = 0;
    if (buffer == NULL) {
        strcpy(message, "out of memory");
        return -1;
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, message, vlm_png_on_error, vlm_png_on_warning);
    png_infop info = png != NULL ? png_create_info_struct(png) : NULL;
    if (png == NULL || info == NULL) {
        if (png != NULL) png_destroy_write_struct(&png, NULL);
        free(buffer);
        strcpy(message, "png_create_write_struct failed");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(buffer->bytes);
        free(buffer);
        return -1;
    }
    png_set_write_fn(png, buffer, vlm_png_write_memory, vlm_png_flush);
    png_set_IHDR(png, info, width, height, 8, channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)width * (size_t)channels;
    for (png_uint_32 y = 0; y < height; y++) png_write_row(png, pixels + (size_t)y * stride);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *out = buffer->bytes;
    *out_size = buffer->size;
    free(buffer);
    return 0;
}

static inline void vlm_png_free(void *bytes) { free(bytes); }
