#ifndef DISTTRAIN_CIMAGE_SHIM_H
#define DISTTRAIN_CIMAGE_SHIM_H
// PNG (libpng's simplified API) and JPEG (libjpeg) reading and PNG writing,
// as static inline C: libjpeg reports errors by longjmp, which Swift cannot
// do, so the whole decode lives here. Every function returns 0 on success or
// -1 with a message in `err`.
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <png.h>
#include <jpeglib.h>

/// Reads a PNG as 8-bit gray (channels 1) or RGB (3): colour files give RGB,
/// gray ones gray. An alpha channel is composited onto black here (v * a):
/// a transparent pixel reads 0. (libpng's own alpha removal with no background
/// colour composites onto whatever the output buffer held.)
/// 16-bit files are read as linear 16-bit and scaled to 8 bits here (libpng's
/// own 16->8 path would apply an sRGB curve and change the intensities; its
/// linear formats with alpha come premultiplied, i.e. already on black).
/// Images of more than max_pixels pixels are refused before decoding.
/// *out is malloc'd.
static inline int disttrain_png_read(const char *path, unsigned char **out, int *w, int *h, int *c,
                                     long long max_pixels, char *err, int errlen) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&image, path)) {
        snprintf(err, errlen, "%s", image.message);
        return -1;
    }
    if ((long long)image.width * (long long)image.height > max_pixels) {
        snprintf(err, errlen, "%ux%u pixels is over the limit of %lld pixels (--max-pixels)",
                 image.width, image.height, max_pixels);
        png_image_free(&image);
        return -1;
    }
    int color = (image.format & PNG_FORMAT_FLAG_COLOR) != 0;
    int sixteen = (image.format & PNG_FORMAT_FLAG_LINEAR) != 0;
    int alpha = (image.format & PNG_FORMAT_FLAG_ALPHA) != 0;
    int channels = color ? 3 : 1, stored = channels + alpha;
    image.format = (color ? PNG_FORMAT_FLAG_COLOR : 0) | (alpha ? PNG_FORMAT_FLAG_ALPHA : 0) | (sixteen ? PNG_FORMAT_FLAG_LINEAR : 0);
    size_t pixelsCount = (size_t)image.width * image.height;
    size_t n = pixelsCount * channels;
    unsigned char *pixels = (unsigned char *)malloc(n ? n : 1);
    void *buffer = malloc(pixelsCount * stored * (sixteen ? 2 : 1) + 1);
    if (!pixels || !buffer) {
        snprintf(err, errlen, "out of memory");
        free(pixels); free(buffer); png_image_free(&image);
        return -1;
    }
    if (!png_image_finish_read(&image, NULL, buffer, 0, NULL)) {
        snprintf(err, errlen, "%s", image.message);
        free(pixels); free(buffer);
        return -1;
    }
    for (size_t p = 0; p < pixelsCount; p++) {
        for (int k = 0; k < channels; k++) {
            size_t i = p * stored + k;
            unsigned v;
            if (sixteen) {
                v = (((unsigned short *)buffer)[i] * 255u + 32767u) / 65535u;  /* premultiplied: already on black */
            } else {
                unsigned char *b = (unsigned char *)buffer;
                v = alpha ? (b[i] * b[p * stored + channels] + 127u) / 255u : b[i];
            }
            pixels[p * channels + k] = (unsigned char)v;
        }
    }
    free(buffer);
    *out = pixels; *w = (int)image.width; *h = (int)image.height; *c = channels;
    return 0;
}

/// Writes 8-bit gray (c = 1) or RGB (c = 3) pixels, rows top to bottom.
static inline int disttrain_png_write(const char *path, const unsigned char *pixels, int w, int h, int c,
                                      char *err, int errlen) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = (png_uint_32)w;
    image.height = (png_uint_32)h;
    image.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    if (!png_image_write_to_file(&image, path, 0, pixels, 0, NULL)) {
        snprintf(err, errlen, "%s", image.message);
        return -1;
    }
    return 0;
}

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} disttrain_jpeg_error;

static void disttrain_jpeg_error_exit(j_common_ptr cinfo) {
    disttrain_jpeg_error *e = (disttrain_jpeg_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->message);
    longjmp(e->jump, 1);
}

/// libjpeg's warnings (level -1: "Premature end of JPEG file", corrupt data)
/// are errors here: a truncated file must not be padded with gray silently.
static void disttrain_jpeg_emit_message(j_common_ptr cinfo, int level) {
    if (level < 0) disttrain_jpeg_error_exit(cinfo);
}

/// Reads a JPEG as 8-bit gray (file is grayscale) or RGB; images of more than
/// max_pixels pixels are refused after the header, before decoding. *out is malloc'd.
static inline int disttrain_jpeg_read(const char *path, unsigned char **out, int *w, int *h, int *c,
                                      long long max_pixels, char *err, int errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(err, errlen, "cannot open: %s", strerror(errno)); return -1; }
    struct jpeg_decompress_struct cinfo;
    disttrain_jpeg_error jerr;
    unsigned char *volatile pixels = NULL;
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = disttrain_jpeg_error_exit;
    jerr.pub.emit_message = disttrain_jpeg_emit_message;
    if (setjmp(jerr.jump)) {
        snprintf(err, errlen, "%s", jerr.message);
        jpeg_destroy_decompress(&cinfo);
        fclose(f);
        free(pixels);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_stdio_src(&cinfo, f);
    jpeg_read_header(&cinfo, TRUE);
    if ((long long)cinfo.image_width * (long long)cinfo.image_height > max_pixels) {
        snprintf(err, errlen, "%ux%u pixels is over the limit of %lld pixels (--max-pixels)",
                 (unsigned)cinfo.image_width, (unsigned)cinfo.image_height, max_pixels);
        jpeg_destroy_decompress(&cinfo);
        fclose(f);
        return -1;
    }
    int gray = cinfo.jpeg_color_space == JCS_GRAYSCALE;
    cinfo.out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    int channels = cinfo.output_components;
    size_t stride = (size_t)cinfo.output_width * channels;
    pixels = (unsigned char *)malloc(stride * cinfo.output_height);
    if (!pixels) { snprintf(err, errlen, "out of memory"); jpeg_destroy_decompress(&cinfo); fclose(f); return -1; }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pixels + stride * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    *w = (int)cinfo.output_width; *h = (int)cinfo.output_height; *c = channels;
    jpeg_destroy_decompress(&cinfo);
    fclose(f);
    *out = pixels;
    return 0;
}
#endif
