/* model.h — internal: how the loader builds model handles (model.c).
 *
 * A model's region mirrors its files' data sections: file i's data section starts at
 * file_base[i] in the region (4 KiB aligned, or at the data section's own offset within its
 * 4 KiB page where the pool is host memory: see nx__model_layout), so tensor t lives at
 * region + file_base[t.file_index] + t.begin.
 */
#ifndef NX_MODEL_INTERNAL_H
#define NX_MODEL_INTERNAL_H

#include "nx_loader.h"

/* Region offsets for every file of st (file_base_out has nx_st_file_count entries) and the
 * region bytes they need in all (at least 4 KiB). With mirror_page_offset, each file's data
 * section starts at the same offset within a 4 KiB page as in its file (Hugging Face files
 * start theirs on an 8-byte boundary), so that O_DIRECT reads land in the region directly
 * instead of through a staging buffer and a copy. Only for host memory: CPU kernels load
 * unaligned, while GPU kernels' vector loads need the 4 KiB-aligned base. */
void nx__model_layout(const nx_st_t *st, bool mirror_page_offset, uint64_t *file_base_out,
                      uint64_t *total_out);

/* A handle over a filled region. Takes ownership of st and region (both freed by
 * nx__model_free / given back by nx__model_take_region). file_base is copied.
 * identity and files are the host cache's view of the checkpoint (copied). */
nx_model_t *nx__model_new(const char *path, nx_st_t *st, nx_region_t *region,
                          const uint64_t *file_base, uint64_t layout_bytes, const char *key,
                          const char *identity, const char *files, nx_err_t *err);

/* Detach the region (the caller frees it), then free the handle and its checkpoint. */
nx_region_t *nx__model_take_region(nx_model_t *model);
void nx__model_free(nx_model_t *model);

uint64_t nx__model_layout_bytes(const nx_model_t *model);
const char *nx__model_cache_key(const nx_model_t *model);
const char *nx__model_identity(const nx_model_t *model);
const char *nx__model_files(const nx_model_t *model);

#endif
