/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The measure service (core/measure.h): a small cache keyed by file
 * identity, the notes of one check, and batches of `qemu-img measure`
 * children run one after the other from the event loop.
 */
#include <fcntl.h>
#include <json-c/json.h>
#include <sys/stat.h>

#include "config.h"
#include "core/measure.h"
#include "qemu/child.h"
#include "qemu/image.h"
#include "qemu/img.h"
#include "util/json-util.h"
#include "util/util.h"

#define MEASURE_CACHE_MAX 128

typedef struct MeasureEntry {
        char *path;
        DiskFormat format;
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtime;
        uint64_t bytes;
} MeasureEntry;

typedef struct MeasureNote {
        char *path;
        DiskFormat format;
} MeasureNote;

struct MeasureState {
        MeasureEntry entries[MEASURE_CACHE_MAX];
        size_t n_entries;
        MeasureNote *notes;
        size_t n_notes;
};

struct MeasureBatch {
        Manager *manager;
        MeasureNote *notes;
        size_t n_notes, next;
        struct stat st;      /* of the file being measured, when it started */
        Child *child;
        sd_event_source *defer;
        MeasureDoneFunc done;
        void *userdata;
};

static struct MeasureState *state(Manager *m) {
        if (!m->measure)
                m->measure = new0(struct MeasureState, 1);
        return m->measure;
}

static void notes_free(MeasureNote *notes, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(notes[i].path);
        free(notes);
}

static bool same_file(const MeasureEntry *e, const struct stat *st) {
        return e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
               e->mtime.tv_sec == st->st_mtim.tv_sec && e->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

static MeasureEntry *entry_find(struct MeasureState *s, const char *path, DiskFormat format) {
        for (size_t i = 0; i < s->n_entries; i++)
                if (s->entries[i].format == format && streq(s->entries[i].path, path))
                        return s->entries + i;
        return NULL;
}

static void entry_store(Manager *m, const char *path, DiskFormat format, const struct stat *st, uint64_t bytes) {
        struct MeasureState *s = state(m);
        MeasureEntry *e;

        if (!s)
                return;
        e = entry_find(s, path, format);
        if (!e) {
                if (s->n_entries == MEASURE_CACHE_MAX) {
                        /* The oldest goes. */
                        free(s->entries[0].path);
                        memmove(s->entries, s->entries + 1, (MEASURE_CACHE_MAX - 1) * sizeof(MeasureEntry));
                        s->n_entries--;
                }
                e = s->entries + s->n_entries;
                *e = (MeasureEntry) { .path = strdup(path), .format = format };
                if (!e->path)
                        return;
                s->n_entries++;
        }
        e->dev = st->st_dev;
        e->ino = st->st_ino;
        e->size = st->st_size;
        e->mtime = st->st_mtim;
        e->bytes = bytes;
}

int measure_lookup(Manager *m, const char *file, DiskFormat format, uint64_t *ret) {
        struct MeasureState *s = state(m);
        MeasureEntry *e;
        MeasureNote *n;
        struct stat st;

        if (stat(file, &st) < 0 || !S_ISREG(st.st_mode)) {
                *ret = 0;
                return 0;
        }
        e = s ? entry_find(s, file, format) : NULL;
        if (e && same_file(e, &st)) {
                *ret = e->bytes;
                return 1;
        }
        *ret = (uint64_t) st.st_blocks * 512;
        if (!s)
                return 0;
        for (size_t i = 0; i < s->n_notes; i++)
                if (s->notes[i].format == format && streq(s->notes[i].path, file))
                        return 0;
        n = reallocarray(s->notes, s->n_notes + 1, sizeof(MeasureNote));
        if (!n)
                return 0;
        s->notes = n;
        n[s->n_notes] = (MeasureNote) { .path = strdup(file), .format = format };
        if (n[s->n_notes].path)
                s->n_notes++;
        return 0;
}

void measure_notes_reset(Manager *m) {
        struct MeasureState *s = m->measure;

        if (!s)
                return;
        notes_free(s->notes, s->n_notes);
        s->notes = NULL;
        s->n_notes = 0;
}

bool measure_notes_any(Manager *m) {
        return m->measure && m->measure->n_notes > 0;
}

void measure_state_free(Manager *m) {
        struct MeasureState *s = m->measure;

        if (!s)
                return;
        measure_notes_reset(m);
        for (size_t i = 0; i < s->n_entries; i++)
                free(s->entries[i].path);
        free(s);
        m->measure = NULL;
}

MeasureBatch *measure_batch_free(MeasureBatch *b) {
        if (!b)
                return NULL;
        child_free(b->child);
        sd_event_source_disable_unref(b->defer);
        notes_free(b->notes, b->n_notes);
        manager_busy_unref(b->manager);
        free(b);
        return NULL;
}

static void on_measured(Child *c, int status, const char *output, void *userdata);
static void batch_next(MeasureBatch *b);

/* `qemu-img measure` of the file alone, without its backing chain (-U:
 * QEMU may hold it open), spelled as an image-opts json: name so that the
 * header's backing name is never opened. */
/* `qemu-img measure` of the file alone ("backing": null: what merging its
 * own data takes), on the descriptor opened here (qemu/img.h): no header
 * leads qemu-img elsewhere. *st: the file measured, for the cache. */
static int measure_spawn(MeasureBatch *b, const MeasureNote *n) {
        _cleanup_(img_cmd_done) ImgCmd c = {};
        ImgLayer layer = { .fd = image_open_nofollow(n->path), .format = n->format };
        int r;

        if (layer.fd < 0)
                return layer.fd;
        if (fstat(layer.fd, &b->st) < 0) {
                r = -errno;
                safe_close(layer.fd);
                return r;
        }
        r = img_cmd_init(&c, "measure");
        if (r >= 0)
                r = img_cmd_add(&c, "-U", "--output=json", "-O", "qcow2", NULL);
        if (r >= 0)
                r = img_cmd_add_chain(&c, &layer, 1);
        else
                safe_close(layer.fd);
        if (r >= 0)
                r = img_cmd_spawn(&c, b->manager->event, NULL, on_measured, b, &b->child);
        return r;
}


static void on_measured(Child *c, int status, const char *output, void *userdata) {
        MeasureBatch *b = userdata;
        const MeasureNote *n = b->notes + b->next - 1;
        _cleanup_(json_object_putp) json_object *o = NULL;
        uint64_t bytes = (uint64_t) b->st.st_blocks * 512;
        json_object *required;

        /* output is the child's: read it before the child goes. */
        if (status == 0 && (o = json_tokener_parse(output)) && json_object_object_get_ex(o, "required", &required))
                bytes = (uint64_t) json_object_get_int64(required);
        else
                log_debug("qemu-img measure of %s gave no answer (%s); counting its allocated size.", n->path,
                          strna(output));
        b->child = child_free(b->child);
        entry_store(b->manager, n->path, n->format, &b->st, bytes);
        batch_next(b);
}

static int on_batch_done(sd_event_source *s, void *userdata) {
        MeasureBatch *b = userdata;

        b->defer = sd_event_source_disable_unref(b->defer);
        b->done(b->userdata);
        return 0;
}

static void batch_next(MeasureBatch *b) {
        while (b->next < b->n_notes) {
                const MeasureNote *n = b->notes + b->next++;
                int r;

                b->st = (struct stat) {};
                r = measure_spawn(b, n);
                if (r >= 0)
                        return;
                log_debug_errno(r, "Cannot run qemu-img measure of %s: %m", n->path);
                if (b->st.st_ino == 0)
                        continue; /* gone, or no regular file: nothing to count */
                entry_store(b->manager, n->path, n->format, &b->st, (uint64_t) b->st.st_blocks * 512);
        }
        /* All measured: told from the loop, never from inside a call. */
        if (sd_event_add_defer(b->manager->event, &b->defer, on_batch_done, b) < 0)
                b->done(b->userdata);
}

int measure_start(Manager *m, MeasureDoneFunc done, void *userdata, MeasureBatch **ret) {
        struct MeasureState *s = m->measure;
        MeasureBatch *b;

        if (!s || s->n_notes == 0)
                return 0;
        b = new0(MeasureBatch, 1);
        if (!b)
                return -ENOMEM;
        b->manager = m;
        b->notes = TAKE_PTR(s->notes);
        b->n_notes = s->n_notes;
        s->n_notes = 0;
        b->done = done;
        b->userdata = userdata;
        manager_busy_ref(m);
        *ret = b;
        batch_next(b);
        return 1;
}
