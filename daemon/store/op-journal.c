/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Operation journals under <state>/ops: path, crash-safe write, remove and
 * the start-up read shared by CreateSnapshot, Revert and Delete. What goes
 * into a journal and what recovery does with it stays with each operation.
 */
#include <unistd.h>

#include "store/op-journal.h"
#include "util/util.h"

/* Large enough for any journal we write; a bigger file is not ours. */
#define OP_JOURNAL_MAX (4U << 20)

char *op_journal_path(const char *state_dir, const char *id, const char *kind) {
        return strprintf("%s/ops/%s.%s", state_dir, id, kind);
}

int op_journal_write(const char *state_dir, const char *id, const char *kind, json_object *o) {
        _cleanup_free_ char *path = op_journal_path(state_dir, id, kind), *dir = NULL;
        const char *text;
        int r;

        text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
        dir = strprintf("%s/ops", state_dir);
        if (!path || !text || !dir)
                return -ENOMEM;
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        return write_file_atomic(path, text, strlen(text), 0600);
}

void op_journal_remove(const char *state_dir, const char *id, const char *kind) {
        _cleanup_free_ char *path = op_journal_path(state_dir, id, kind);

        if (path && unlink(path) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Failed to remove %s: %m", path);
}

bool op_journal_exists(const char *state_dir, const char *id, const char *kind) {
        _cleanup_free_ char *path = op_journal_path(state_dir, id, kind);

        return path && access(path, F_OK) >= 0;
}

int op_journal_read(const char *state_dir, const char *id, const char *kind, json_object **ret) {
        _cleanup_free_ char *path = op_journal_path(state_dir, id, kind), *text = NULL;
        json_object *o;
        int r;

        if (!path)
                return -ENOMEM;
        r = read_full_file(path, OP_JOURNAL_MAX, &text, NULL);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return log_error_errno(r, "Failed to read %s: %m", path);
        o = json_tokener_parse(text);
        if (!o) {
                log_error("Unreadable journal %s, removing it.", path);
                return -EBADMSG;
        }
        *ret = o;
        return 1;
}

const char *json_get_string(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                                                                 : NULL;
}

bool json_get_bool(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_boolean) &&
               json_object_get_boolean(v);
}

size_t json_get_array(json_object *o, const char *key, json_object **ret) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_array))
                return 0;
        *ret = v;
        return json_object_array_length(v);
}
