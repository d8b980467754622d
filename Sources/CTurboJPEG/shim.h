#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <turbojpeg.h>
#include <jpeglib.h>

/* Decoding a region of a JPEG through libjpeg's own API (same libjpeg-turbo 2.1 as TurboJPEG, whose tjDecompress2
 * in 2.1 has no cropping region): `jpeg_crop_scanline` for the columns, `jpeg_skip_scanlines` for the rows above,
 * and an abort after the last row needed. libjpeg reports errors by calling error_exit, which must not return:
 * here it longjmps back into these static inline functions (compiled by clang as part of the importing module),
 * never through a Swift frame. Settings as tjDecompress2 with flags 0: ISLOW IDCT, fancy upsampling, RGB out
 * (gray replicated by libjpeg), 4-channel JPEGs as CMYK. Warnings are ignored, as TurboJPEG's callers here do. */

struct vlm_jpeg_region {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr err;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    int created;
    /* The first row the region's reads give. */
    unsigned int first_row;
};

static inline void vlm_jpeg_region_on_error(j_common_ptr cinfo) {
    struct vlm_jpeg_region *r = (struct vlm_jpeg_region *)cinfo->client_data;
    (*cinfo->err->format_message)(cinfo, r->message);
    longjmp(r->jump, 1);
}

static inline void vlm_jpeg_region_on_message(j_common_ptr cinfo, int level) { (void)cinfo; (void)level; }

/* The number of scans when the file ends cleanly: the entropy-coded data of its last scan is followed directly by
 * an EOI marker, and no byte pair FF DA (start of scan) follows the EOI. Otherwise 0. A decoder that stops after
 * the rows it needs then misses nothing a full decode would report: no truncation (the data never runs out) and,
 * for a single-scan file, no marker the full decode would read after the scan. Entropy-coded data holds FF only
 * as FF 00 (a stuffed byte), FF D0..D7 (restart markers) or FF FF (fill before a marker). */
static inline int vlm_jpeg_clean_scans(const unsigned char *p, size_t n) {
    if (n < 4 || p[0] != 0xFF || p[1] != 0xD8) return 0;
    size_t i = 2;
    int scans = 0, after_scan = 0;
    while (i + 1 < n) {
        if (p[i] != 0xFF) return 0;
        unsigned char m = p[i + 1];
        if (m == 0xFF) { i += 1; continue; }
        if (m == 0xD9) {
            if (!after_scan) return 0;
            for (size_t j = i + 2; j + 1 < n; j++) {
                const unsigned char *f = memchr(p + j, 0xFF, n - 1 - j);
                if (!f) break;
                j = (size_t)(f - p);
                if (p[j + 1] == 0xDA) return 0;
            }
            return scans;
        }
        after_scan = 0;
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { i += 2; continue; }
        if (i + 3 >= n) return 0;
        size_t length = (size_t)p[i + 2] << 8 | p[i + 3];
        if (length < 2) return 0;
        i += 2 + length;
        if (m != 0xDA) continue;
        scans++;
        for (;;) {
            if (i >= n) return 0;
            const unsigned char *f = memchr(p + i, 0xFF, n - i);
            if (!f) return 0;
            i = (size_t)(f - p);
            if (i + 1 >= n) return 0;
            unsigned char c = p[i + 1];
            if (c == 0x00 || (c >= 0xD0 && c <= 0xD7)) { i += 2; continue; }
            if (c == 0xFF) { i += 1; continue; }
            break;
        }
        after_scan = 1;
    }
    return 0;
}

/* Starts decoding `data` for the columns [*x, *x + *width) and the rows from `top` down. A margin is added on
 * each side — one iMCU, at least 16 pixels — so that chroma upsampling at the needed pixels sees its real
 * neighbours: columns from one margin left of *x to one margin right of the last (libjpeg then widens them to
 * iMCU boundaries; the columns it will give are written back to *x and *width), rows from the iMCU-aligned row
 * one margin above `top` (`first_row`). `single_scan_ok`: the caller found vlm_jpeg_clean_scans() == 1; a
 * multi-scan file is read whole by jpeg_start_decompress, so for it a clean end (> 0) is enough. Writes the
 * image size and the output channels (3 RGB, 4 CMYK). Returns 0, -1 on an error (message set), or 1 when the file
 * turns out single-scan without that check (the caller decodes it whole). Close the region in every case. */
static inline int vlm_jpeg_region_open(struct vlm_jpeg_region *r, const unsigned char *data, size_t size,
                                       int single_scan_ok, unsigned int *x, unsigned int *width, unsigned int top,
                                       unsigned int *image_width, unsigned int *image_height, int *channels) {
    memset(r, 0, sizeof *r);
    r->cinfo.err = jpeg_std_error(&r->err);
    r->err.error_exit = vlm_jpeg_region_on_error;
    r->err.emit_message = vlm_jpeg_region_on_message;
    r->cinfo.client_data = r;
    if (setjmp(r->jump)) return -1;
    jpeg_create_decompress(&r->cinfo);
    r->created = 1;
    jpeg_mem_src(&r->cinfo, data, (unsigned long)size);
    jpeg_read_header(&r->cinfo, TRUE);
    *image_width = r->cinfo.image_width;
    *image_height = r->cinfo.image_height;
    if (r->cinfo.num_components == 4) {
        r->cinfo.out_color_space = JCS_CMYK;
        *channels = 4;
    } else {
        r->cinfo.out_color_space = JCS_EXT_RGB;
        *channels = 3;
    }
    jpeg_start_decompress(&r->cinfo);
    if (!jpeg_input_complete(&r->cinfo) && !single_scan_ok) return 1;
    unsigned int margin_x = 8u * (unsigned int)r->cinfo.max_h_samp_factor;
    unsigned int margin_y = 8u * (unsigned int)r->cinfo.max_v_samp_factor;
    if (margin_x < 16) margin_x = 16;
    if (margin_y < 16) margin_y = 16;
    unsigned int left = *x > margin_x ? *x - margin_x : 0;
    unsigned int right = *x + *width + margin_x;
    if (right > r->cinfo.output_width) right = r->cinfo.output_width;
    JDIMENSION cx = left, cw = right - left;
    if (cw < r->cinfo.output_width) jpeg_crop_scanline(&r->cinfo, &cx, &cw);
    *x = cx;
    *width = cw;
    unsigned int skip = top / margin_y * margin_y;
    skip = skip > margin_y ? skip - margin_y : 0;
    r->first_row = skip;
    if (skip > 0 && jpeg_skip_scanlines(&r->cinfo, skip) != skip) {
        strcpy(r->message, "cannot skip to the region's first row");
        return -1;
    }
    return 0;
}

/* The next `rows` rows of the region into `out`, `row_bytes` apart. 0, or -1 on an error (message set). */
static inline int vlm_jpeg_region_read(struct vlm_jpeg_region *r, unsigned char *out, size_t row_bytes,
                                       unsigned int rows) {
    if (setjmp(r->jump)) return -1;
    unsigned int done = 0;
    while (done < rows) {
        JSAMPROW row = out + (size_t)done * row_bytes;
        if (jpeg_read_scanlines(&r->cinfo, &row, 1) != 1) {
            strcpy(r->message, "the region's rows ended early");
            return -1;
        }
        done++;
    }
    return 0;
}

/* Stops decoding (the rows below the region are never decoded) and frees libjpeg's memory. */
static inline void vlm_jpeg_region_close(struct vlm_jpeg_region *r) {
    if (!r->created) return;
    if (setjmp(r->jump)) {
        jpeg_destroy_decompress(&r->cinfo);
        return;
    }
    jpeg_abort_decompress(&r->cinfo);
    jpeg_destroy_decompress(&r->cinfo);
}
