/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qemu-img command lines on descriptors (qemu/img.h): the json:
 * specifications of a chain of /proc/self/fd/N files and the placeholders
 * plans carry until the files are opened.
 */
#include <stdarg.h>

#include <json-c/json.h>

#include "config.h"
#include "qemu/img.h"
#include "util/json-util.h"
#include "util/util.h"

/* A byte no path and no qemu-img option holds. */
#define PLACEHOLDER_MARK '\x1f'

int img_cmd_init(ImgCmd *c, const char *subcommand) {
        *c = (ImgCmd) {};
        if (strv_extend(&c->argv, QEMU_IMG_BINARY) < 0 || strv_extend(&c->argv, subcommand) < 0) {
                img_cmd_done(c);
                return -ENOMEM;
        }
        return 0;
}

void img_cmd_done(ImgCmd *c) {
        strv_free(c->argv);
        for (size_t i = 0; i < c->n_fds; i++)
                safe_close(c->fds[i]);
        free(c->fds);
        *c = (ImgCmd) {};
}

int img_cmd_add(ImgCmd *c, ...) {
        const char *arg;
        va_list ap;
        int r = 0;

        va_start(ap, c);
        while (r >= 0 && (arg = va_arg(ap, const char *)))
                r = strv_extend(&c->argv, arg);
        va_end(ap);
        return r;
}

int img_cmd_add_strv(ImgCmd *c, char *const *args) {
        for (char *const *a = args; a && *a; a++)
                if (strv_extend(&c->argv, *a) < 0)
                        return -ENOMEM;
        return 0;
}

/* Takes fd: the name the child knows it by. */
static char *take_fd(ImgCmd *c, int fd) {
        int *f = reallocarray(c->fds, c->n_fds + 1, sizeof(int));

        if (!f || c->n_fds >= CHILD_MAX_FDS) {
                if (f)
                        c->fds = f;
                safe_close(fd);
                return NULL;
        }
        c->fds = f;
        c->fds[c->n_fds++] = fd;
        return strprintf("/proc/self/fd/%zu", 2 + c->n_fds);
}

int img_cmd_chain_name(ImgCmd *c, ImgLayer *layers, size_t n, char **ret) {
        _cleanup_(json_object_putp) json_object *top = NULL;
        json_object *parent = NULL;
        const char *text;
        int r = n > 0 ? 0 : -EINVAL;

        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *name = NULL;
                json_object *node, *file;
                int fd = TAKE_FD(layers[i].fd);

                /* Only a qcow2 layer has a layer below it. */
                if (r >= 0 && i + 1 < n && layers[i].format != DISK_FORMAT_QCOW2)
                        r = -EINVAL;
                if (r < 0) {
                        safe_close(fd);
                        continue;
                }
                name = take_fd(c, fd);
                node = json_object_new_object();
                file = json_object_new_object();
                if (!name || !node || !file) {
                        json_object_put(node);
                        json_object_put(file);
                        r = -ENOMEM;
                        continue;
                }
                json_object_object_add(file, "driver", json_object_new_string("file"));
                json_object_object_add(file, "filename", json_object_new_string(name));
                json_object_object_add(node, "driver",
                                       json_object_new_string(disk_format_to_string(layers[i].format) ?: "raw"));
                json_object_object_add(node, "file", file);
                /* The bottom reads nothing below it, whatever its header says. */
                if (i == n - 1 && layers[i].format == DISK_FORMAT_QCOW2)
                        json_object_object_add(node, "backing", NULL);
                if (parent)
                        json_object_object_add(parent, "backing", node);
                else
                        top = node;
                parent = node;
        }
        if (r < 0)
                return r;
        text = json_object_to_json_string_ext(top, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        *ret = text ? strjoin("json:", text) : NULL;
        return *ret ? 0 : -ENOMEM;
}

int img_cmd_add_chain(ImgCmd *c, ImgLayer *layers, size_t n) {
        _cleanup_free_ char *name = NULL;
        int r = img_cmd_chain_name(c, layers, n, &name);

        return r < 0 ? r : strv_extend(&c->argv, name);
}

/* One layer of img_cmd_chain_name()'s spec: "driver", "file" (a "file"
 * driver on /proc/self/fd/N) and optionally "backing" (null or the next). */
static bool fd_layer_ok(json_object *node, unsigned depth) {
        json_object *file = NULL, *v = NULL;
        const char *name;
        size_t n = 0;

        if (depth > 256 || !json_object_is_type(node, json_type_object))
                return false;
        json_object_object_foreach(node, key, val) {
                (void) val;
                if (!STR_IN_SET(key, "driver", "file", "backing"))
                        return false;
        }
        if (!json_object_object_get_ex(node, "driver", &v) || !json_object_is_type(v, json_type_string) ||
            !json_object_object_get_ex(node, "file", &file) || !json_object_is_type(file, json_type_object))
                return false;
        json_object_object_foreach(file, fkey, fval) {
                (void) fval;
                if (!STR_IN_SET(fkey, "driver", "filename"))
                        return false;
        }
        if (!json_object_object_get_ex(file, "driver", &v) || !json_object_is_type(v, json_type_string) ||
            !streq(json_object_get_string(v), "file") || !json_object_object_get_ex(file, "filename", &v) ||
            !json_object_is_type(v, json_type_string))
                return false;
        name = json_object_get_string(v);
        if (strncmp(name, "/proc/self/fd/", strlen("/proc/self/fd/")) != 0)
                return false;
        name += strlen("/proc/self/fd/");
        n = strspn(name, "0123456789");
        if (n == 0 || name[n])
                return false;
        if (!json_object_object_get_ex(node, "backing", &v) || !v)
                return true;
        return fd_layer_ok(v, depth + 1);
}

bool img_name_is_fd_chain(const char *name) {
        _cleanup_(json_object_putp) json_object *o = NULL;

        if (!name || strncmp(name, "json:", strlen("json:")) != 0)
                return false;
        o = json_tokener_parse(name + strlen("json:"));
        return o && fd_layer_ok(o, 0);
}

int img_cmd_run(ImgCmd *c, char **ret_output) {
        return child_run_fds(c->argv, c->fds, c->n_fds, ret_output);
}

int img_cmd_spawn(ImgCmd *c, sd_event *e, ChildOutputFunc output, ChildDoneFunc done, void *userdata, Child **ret) {
        return child_spawn_fds(e, c->argv, c->fds, c->n_fds, output, done, userdata, ret);
}

char *img_placeholder(ImgPlaceholder kind, const char *path, DiskFormat format) {
        return strprintf("%c%c%s:%s", PLACEHOLDER_MARK, kind == IMG_CHAIN ? 'C' : kind == IMG_LAYER ? 'L' : 'F',
                         disk_format_to_string(format) ?: "raw", path);
}

int img_placeholder_parse(const char *arg, ImgPlaceholder *ret_kind, DiskFormat *ret_format, const char **ret_path) {
        const char *colon;
        char fmt[16];

        if (!arg || arg[0] != PLACEHOLDER_MARK || !IN_SET(arg[1], 'C', 'L', 'F') || !(colon = strchr(arg + 2, ':')) ||
            (size_t) (colon - arg - 2) >= sizeof(fmt))
                return 0;
        memcpy(fmt, arg + 2, (size_t) (colon - arg - 2));
        fmt[colon - arg - 2] = 0;
        if (disk_format_from_string(fmt) < 0)
                return 0;
        *ret_kind = arg[1] == 'C' ? IMG_CHAIN : arg[1] == 'L' ? IMG_LAYER : IMG_FILE;
        *ret_format = disk_format_from_string(fmt);
        *ret_path = colon + 1;
        return 1;
}

const char *img_arg_display(const char *arg) {
        ImgPlaceholder kind;
        DiskFormat format;
        const char *path;

        return img_placeholder_parse(arg, &kind, &format, &path) > 0 ? path : arg;
}
