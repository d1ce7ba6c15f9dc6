/* fuzz_pull_listing.c — libFuzzer target for what `nexusctl pull` reads from a hub's API: the
 * revision record (`sha`, `siblings[]` with rfilename, size, blobId, lfs) and the selection
 * made from it (nx__pull_parse_listing). Byte 0 picks the options (a --file, an --include,
 * neither); the rest is the JSON body. It must never crash, leak or read out of bounds; a
 * refusal carries a message and selects nothing usable; an accepted listing has a 40-hex
 * commit and only files whose names are safe relative paths (no "..", ".", empty segment,
 * leading '/', backslash or control character) with hex ids of the right length, since the
 * names become paths under snapshots/.
 *
 * Build and run (clang with libFuzzer):
 *   make fuzz                                   # builds build/fuzz/fuzz_pull_listing
 *   mkdir -p var/fuzz/pull && cp -r tests/fuzz/corpus/fuzz_pull_listing/. var/fuzz/pull/
 *   build/fuzz/fuzz_pull_listing var/fuzz/pull -max_total_time=60
 */
#include <assert.h>
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pull_int.h"

static bool hex_of_len(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool safe(const char *p)
{
    if (!p[0] || p[0] == '/' || strstr(p, "//") || p[strlen(p) - 1] == '/')
        return false;
    for (const char *s = p; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == '\\')
            return false;
    size_t n = strlen(p);
    if (strcmp(p, "..") == 0 || strncmp(p, "../", 3) == 0 || strstr(p, "/../") ||
        (n >= 3 && strcmp(p + n - 3, "/..") == 0))
        return false;
    if (strcmp(p, ".") == 0 || strncmp(p, "./", 2) == 0 || strstr(p, "/./") ||
        (n >= 2 && strcmp(p + n - 2, "/.") == 0))
        return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const char *const includes[] = {"*.md", "sub/*"};
    nx_pull_opts_t opts = {.endpoint = "http://127.0.0.1:1", .repo = "Org/Name",
                           .revision = "main", .models_dir = "/nonexistent"};
    switch (data[0] % 3) {
    case 1:
        opts.file = "m-q4.gguf";
        break;
    case 2:
        opts.includes = includes;
        opts.include_count = 2;
        break;
    }
    nx__pull_ctx_t ctx = {.opts = &opts};
    snprintf(ctx.endpoint, sizeof ctx.endpoint, "%s", opts.endpoint);
    nx_err_t err = {0};
    int rc = nx__pull_parse_listing(&ctx, (const char *)data + 1, size - 1, &err);
    if (rc != NX_OK) {
        assert(rc < 0 && err.code == rc && err.msg[0]);
    } else {
        assert(hex_of_len(ctx.commit, 40));
        assert(ctx.file_count > 0);
        for (size_t i = 0; i < ctx.file_count; i++) {
            const nx__pull_file_t *f = &ctx.files[i];
            assert(safe(f->name));
            assert(hex_of_len(f->id, f->lfs ? 64 : 40));
        }
    }
    nx__pull_files_free(&ctx);
    return 0;
}
