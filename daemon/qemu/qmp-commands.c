/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP command spellings: the typed wrappers around qmp_send() and the
 * parsers of their "return" values into plain C. Nothing else in the
 * daemon names a QMP command or argument. Parsers are strict about types
 * (-EBADMSG) but ignore members they do not know.
 */
#include "qemu/qmp-commands.h"
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>

#include "util/json-util.h"
#include "util/util.h"

int64_t qmp_cmd_query_status(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        return qmp_send(qmp, "query-status", NULL, cb, userdata);
}

int64_t qmp_cmd_stop(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        return qmp_send(qmp, "stop", NULL, cb, userdata);
}

int64_t qmp_cmd_cont(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        return qmp_send(qmp, "cont", NULL, cb, userdata);
}

int64_t qmp_cmd_quit(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        return qmp_send(qmp, "quit", NULL, cb, userdata);
}

int64_t qmp_cmd_system_powerdown(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        return qmp_send(qmp, "system_powerdown", NULL, cb, userdata);
}

int64_t qmp_cmd_human_monitor_command(Qmp *qmp, const char *command_line, qmp_reply_func_t cb, void *userdata) {
        _cleanup_(json_object_putp) json_object *args = NULL;
        json_object *s;

        if (!command_line)
                return -EINVAL;

        args = json_object_new_object();
        s = json_object_new_string(command_line);
        if (!args || !s || json_object_object_add(args, "command-line", s) < 0) {
                json_object_put(s);
                return -ENOMEM;
        }
        return qmp_send(qmp, "human-monitor-command", TAKE_PTR(args), cb, userdata);
}

int64_t qmp_cmd_query_block(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        return qmp_send(qmp, "query-block", NULL, cb, userdata);
}

static const struct {
        const char *name;
        QmpRunState state;
} run_state_table[] = {
        { "running",         QMP_RUN_STATE_RUNNING  },
        { "paused",          QMP_RUN_STATE_PAUSED   },
        { "prelaunch",       QMP_RUN_STATE_PAUSED   },
        { "postmigrate",     QMP_RUN_STATE_PAUSED   },
        { "finish-migrate",  QMP_RUN_STATE_PAUSED   },
        { "restore-vm",      QMP_RUN_STATE_PAUSED   },
        { "inmigrate",       QMP_RUN_STATE_PAUSED   },
        { "suspended",       QMP_RUN_STATE_PAUSED   },
        { "io-error",        QMP_RUN_STATE_PAUSED   },
        { "debug",           QMP_RUN_STATE_PAUSED   },
        { "save-vm",         QMP_RUN_STATE_PAUSED   },
        { "colo",            QMP_RUN_STATE_PAUSED   },
        { "watchdog",        QMP_RUN_STATE_PAUSED   },
        { "guest-panicked",  QMP_RUN_STATE_CRASHED  },
        { "internal-error",  QMP_RUN_STATE_CRASHED  },
        { "shutdown",        QMP_RUN_STATE_SHUTDOWN },
};

/* Member `key` of o as a string: 0 and *ret = NULL when absent or null,
 * -EBADMSG when it has another type. */
static int json_get_string(json_object *o, const char *key, const char **ret) {
        json_object *v = NULL;

        json_object_object_get_ex(o, key, &v);
        if (v && !json_object_is_type(v, json_type_string))
                return -EBADMSG;
        *ret = v ? json_object_get_string(v) : NULL;
        return 0;
}

int qmp_parse_query_status(json_object *result, QmpRunState *ret_state, char **ret_status_text) {
        QmpRunState state = QMP_RUN_STATE_PAUSED;
        const char *status;
        char *text = NULL;

        if (!json_object_is_type(result, json_type_object) || json_get_string(result, "status", &status) < 0 ||
            !status)
                return log_debug_errno(EBADMSG, "query-status reply lacks a \"status\" string.");

        /* A state newer QEMUs invent stops the guest at worst: call it paused. */
        for (size_t i = 0; i < ELEMENTSOF(run_state_table); i++)
                if (streq(run_state_table[i].name, status)) {
                        state = run_state_table[i].state;
                        break;
                }

        if (ret_status_text) {
                text = strdup(status);
                if (!text)
                        return -ENOMEM;
                *ret_status_text = text;
        }
        if (ret_state)
                *ret_state = state;
        return 0;
}

int qmp_parse_string(json_object *result, const char **ret) {
        if (!json_object_is_type(result, json_type_string))
                return -EBADMSG;
        *ret = json_object_get_string(result);
        return 0;
}

void qmp_block_info_free_many(QmpBlockInfo *infos, size_t n) {
        if (!infos)
                return;
        for (size_t i = 0; i < n; i++) {
                free(infos[i].qdev);
                free(infos[i].node_name);
                free(infos[i].file);
        }
        free(infos);
}

static int strdup_or_null(const char *s, char **ret) {
        *ret = NULL;
        if (s && !(*ret = strdup(s)))
                return -ENOMEM;
        return 0;
}

int qmp_parse_query_block(json_object *result, QmpBlockInfo **ret, size_t *ret_n) {
        QmpBlockInfo *infos;
        size_t n = 0, m;
        int r = 0;

        if (!json_object_is_type(result, json_type_array))
                return log_debug_errno(EBADMSG, "query-block reply is not an array.");

        m = json_object_array_length(result);
        infos = calloc(m + 1, sizeof(QmpBlockInfo)); /* + the NULL entry */
        if (!infos)
                return -ENOMEM;

        for (size_t i = 0; i < m; i++) {
                json_object *e = json_object_array_get_idx(result, i), *inserted = NULL;
                const char *qdev, *node_name = NULL, *file = NULL;

                if (!json_object_is_type(e, json_type_object) || json_get_string(e, "qdev", &qdev) < 0) {
                        r = -EBADMSG;
                        break;
                }
                if (!qdev) /* a -drive without a device: nothing of ours */
                        continue;

                json_object_object_get_ex(e, "inserted", &inserted);
                if (inserted && (!json_object_is_type(inserted, json_type_object) ||
                                 json_get_string(inserted, "node-name", &node_name) < 0 ||
                                 json_get_string(inserted, "file", &file) < 0)) {
                        r = -EBADMSG;
                        break;
                }

                if (strdup_or_null(qdev, &infos[n].qdev) < 0 ||
                    strdup_or_null(node_name, &infos[n].node_name) < 0 ||
                    strdup_or_null(file, &infos[n].file) < 0) {
                        n++;
                        r = -ENOMEM;
                        break;
                }
                n++;
        }
        if (r < 0) {
                qmp_block_info_free_many(infos, n);
                return r == -EBADMSG ? log_debug_errno(r, "Malformed query-block reply.") : r;
        }

        *ret = infos;
        if (ret_n)
                *ret_n = n;
        return 0;
}

/* ---- block graph, snapshots, jobs, migration ---- */

/* Builds {k1: v1, …} from (key, json_object*) pairs ending in NULL; takes
 * every value, even on failure. */
static json_object *json_build(const char *key, ...) {
        json_object *o = json_object_new_object();
        bool failed = !o;
        va_list ap;

        va_start(ap, key);
        for (const char *k = key; k; k = va_arg(ap, const char *)) {
                json_object *v = va_arg(ap, json_object *);
                /* NULL is JSON null ("backing": null). */
                if (failed || json_object_object_add(o, k, v) < 0) {
                        json_object_put(v);
                        failed = true;
                }
        }
        va_end(ap);
        if (failed) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

#define JSTR(s) json_object_new_string(s)

static json_object *json_string_array(const char *const *l, size_t n) {
        json_object *a = json_object_new_array();

        for (size_t i = 0; a && i < n; i++) {
                json_object *s = JSTR(l[i]);
                if (!s || json_object_array_add(a, s) < 0) {
                        json_object_put(s);
                        json_object_put(a);
                        return NULL;
                }
        }
        return a;
}

int64_t qmp_cmd_blockdev_del(Qmp *qmp, const char *node, qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("node-name", JSTR(node), NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "blockdev-del", args, cb, userdata);
}

int64_t qmp_cmd_transaction_blockdev_snapshot(Qmp *qmp, const char *const *nodes, const char *const *overlays, size_t n,
                                              qmp_reply_func_t cb, void *userdata) {
        json_object *actions = json_object_new_array(), *args;

        for (size_t i = 0; actions && i < n; i++) {
                json_object *a = json_build("type", JSTR("blockdev-snapshot"),
                                            "data", json_build("node", JSTR(nodes[i]), "overlay", JSTR(overlays[i]), NULL),
                                            NULL);
                if (!a || json_object_array_add(actions, a) < 0) {
                        json_object_put(a);
                        json_object_put(actions);
                        return -ENOMEM;
                }
        }
        if (!actions)
                return -ENOMEM;
        args = json_build("actions", actions, NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "transaction", args, cb, userdata);
}

/* snapshot-save and snapshot-load take the same arguments. */
static int64_t snapshot_vmstate_job(Qmp *qmp, const char *command, const char *job_id, const char *tag,
                                    const char *vmstate_node, const char *const *devices, size_t n,
                                    qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("job-id", JSTR(job_id), "tag", JSTR(tag), "vmstate", JSTR(vmstate_node),
                                       "devices", json_string_array(devices, n), NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, command, args, cb, userdata);
}

int64_t qmp_cmd_snapshot_save(Qmp *qmp, const char *job_id, const char *tag, const char *vmstate_node,
                              const char *const *devices, size_t n, qmp_reply_func_t cb, void *userdata) {
        return snapshot_vmstate_job(qmp, "snapshot-save", job_id, tag, vmstate_node, devices, n, cb, userdata);
}

int64_t qmp_cmd_snapshot_delete(Qmp *qmp, const char *job_id, const char *tag, const char *const *devices, size_t n,
                                qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("job-id", JSTR(job_id), "tag", JSTR(tag), "devices", json_string_array(devices, n),
                                       NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "snapshot-delete", args, cb, userdata);
}

int64_t qmp_cmd_snapshot_load(Qmp *qmp, const char *job_id, const char *tag, const char *vmstate_node,
                              const char *const *devices, size_t n, qmp_reply_func_t cb, void *userdata) {
        return snapshot_vmstate_job(qmp, "snapshot-load", job_id, tag, vmstate_node, devices, n, cb, userdata);
}

int64_t qmp_cmd_job_dismiss(Qmp *qmp, const char *job_id, qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("id", JSTR(job_id), NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "job-dismiss", args, cb, userdata);
}

int64_t qmp_cmd_query_jobs(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        return qmp_send(qmp, "query-jobs", NULL, cb, userdata);
}

int64_t qmp_cmd_migrate_enable_events(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        json_object *cap = json_build("capability", JSTR("events"), "state", json_object_new_boolean(true), NULL);
        json_object *caps = json_object_new_array(), *args;

        if (!cap || !caps || json_object_array_add(caps, cap) < 0) {
                json_object_put(cap);
                json_object_put(caps);
                return -ENOMEM;
        }
        args = json_build("capabilities", caps, NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "migrate-set-capabilities", args, cb, userdata);
}

int64_t qmp_cmd_migrate_incoming(Qmp *qmp, const char *uri, qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("uri", JSTR(uri), NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "migrate-incoming", args, cb, userdata);
}

int64_t qmp_cmd_query_migrate(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        return qmp_send(qmp, "query-migrate", NULL, cb, userdata);
}

int64_t qmp_cmd_migrate_cancel(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        return qmp_send(qmp, "migrate_cancel", NULL, cb, userdata);
}

int qmp_parse_query_migrate(json_object *result, const char **ret_status, const char **ret_error) {
        const char *status, *error;

        if (!json_object_is_type(result, json_type_object) || json_get_string(result, "status", &status) < 0 ||
            json_get_string(result, "error-desc", &error) < 0)
                return -EBADMSG;
        *ret_status = status ?: "none";
        *ret_error = error;
        return 0;
}

int64_t qmp_cmd_query_chardev(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        return qmp_send(qmp, "query-chardev", NULL, cb, userdata);
}

int64_t qmp_cmd_add_client(Qmp *qmp, const char *protocol, const char *fdname, qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("protocol", JSTR(protocol), "fdname", JSTR(fdname), "skipauth",
                                       json_object_new_boolean(false), NULL);
        return args ? qmp_send(qmp, "add_client", args, cb, userdata) : -ENOMEM;
}

const char *qmp_parse_chardev_pty(json_object *result, const char *label) {
        for (size_t i = 0; json_object_is_type(result, json_type_array) && i < json_object_array_length(result); i++) {
                json_object *e = json_object_array_get_idx(result, i);
                const char *l, *filename;

                if (json_object_is_type(e, json_type_object) && json_get_string(e, "label", &l) >= 0 &&
                    json_get_string(e, "filename", &filename) >= 0 && streq_ptr(l, label) && filename &&
                    strncmp(filename, "pty:", 4) == 0)
                        return filename + 4;
        }
        return NULL;
}

int qmp_parse_query_jobs(json_object *result, const char *job_id, QmpJobInfo *ret) {
        if (!json_object_is_type(result, json_type_array))
                return -EBADMSG;
        for (size_t i = 0; i < json_object_array_length(result); i++) {
                json_object *e = json_object_array_get_idx(result, i), *v;
                const char *id, *type, *status, *error;

                if (!json_object_is_type(e, json_type_object) || json_get_string(e, "id", &id) < 0 ||
                    json_get_string(e, "type", &type) < 0 || json_get_string(e, "status", &status) < 0 ||
                    json_get_string(e, "error", &error) < 0)
                        return -EBADMSG;
                if (!id || !streq(id, job_id))
                        continue;
                *ret = (QmpJobInfo) { .id = id, .type = type, .status = status, .error = error };
                if (json_object_object_get_ex(e, "current-progress", &v))
                        ret->current = (uint64_t) json_object_get_int64(v);
                if (json_object_object_get_ex(e, "total-progress", &v))
                        ret->total = (uint64_t) json_object_get_int64(v);
                return 1;
        }
        return 0;
}

int qmp_parse_job_status_change(json_object *data, const char **ret_id, const char **ret_status) {
        const char *id, *status;

        if (!json_object_is_type(data, json_type_object) || json_get_string(data, "id", &id) < 0 ||
            json_get_string(data, "status", &status) < 0 || !id || !status)
                return -EBADMSG;
        *ret_id = id;
        *ret_status = status;
        return 0;
}

int qmp_parse_migration_event(json_object *data, const char **ret_status) {
        const char *status;

        if (!json_object_is_type(data, json_type_object) || json_get_string(data, "status", &status) < 0 || !status)
                return -EBADMSG;
        *ret_status = status;
        return 0;
}

int64_t qmp_cmd_qom_get(Qmp *qmp, const char *path, const char *property, qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("path", JSTR(path), "property", JSTR(property), NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "qom-get", args, cb, userdata);
}

int64_t qmp_cmd_disk_root_node(Qmp *qmp, const char *device_id, qmp_reply_func_t cb, void *userdata) {
        _cleanup_free_ char *path = strprintf("/machine/peripheral/%s/virtio-backend", device_id);

        /* O(1), unlike query-block, whose reply nests the whole backing
         * chain and grows with its depth. */
        if (!path)
                return -ENOMEM;
        return qmp_cmd_qom_get(qmp, path, "drive", cb, userdata);
}

int64_t qmp_cmd_flush_disk(Qmp *qmp, const char *device_id, qmp_reply_func_t cb, void *userdata) {
        _cleanup_free_ char *line = strprintf("qemu-io -d /machine/peripheral/%s/virtio-backend \"flush\"", device_id);

        /* QMP (7.2) has no flush command. HMP qemu-io flushes the device's
         * root node with its qcow2 metadata caches, then fdatasync()s. */
        if (!line)
                return -ENOMEM;
        return qmp_cmd_human_monitor_command(qmp, line, cb, userdata);
}

/* ---- block jobs (job.c) ---- */

/* Adds key: s when s is not NULL. Takes nothing. */
static int json_add_string_opt(json_object *o, const char *key, const char *s) {
        json_object *v;

        if (!s)
                return 0;
        v = JSTR(s);
        if (!v || json_object_object_add(o, key, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

static int json_add_speed(json_object *o, uint64_t speed) {
        json_object *v;

        if (speed == 0)
                return 0;
        if (speed > INT64_MAX)
                return -EINVAL;
        v = json_object_new_int64((int64_t) speed);
        if (!v || json_object_object_add(o, "speed", v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

/* {"job-id": …, "device": …, "auto-finalize": false, "auto-dismiss": false} */
static json_object *json_block_job_args(const char *job_id, const char *device, uint64_t speed) {
        json_object *args;

        if (!job_id || !device || speed > INT64_MAX)
                return NULL;
        args = json_build("job-id", JSTR(job_id),
                          "device", JSTR(device),
                          "auto-finalize", json_object_new_boolean(false),
                          "auto-dismiss", json_object_new_boolean(false),
                          NULL);
        if (args && json_add_speed(args, speed) < 0) {
                json_object_put(args);
                return NULL;
        }
        return args;
}

int64_t qmp_cmd_block_stream(Qmp *qmp, const char *job_id, const char *device, const char *base_node,
                             const char *backing_file, uint64_t speed, qmp_reply_func_t cb, void *userdata) {
        _cleanup_(json_object_putp) json_object *args = NULL;

        if (!job_id || !device || speed > INT64_MAX)
                return -EINVAL;
        args = json_block_job_args(job_id, device, speed);
        if (!args || json_add_string_opt(args, "base-node", base_node) < 0 ||
            json_add_string_opt(args, "backing-file", backing_file) < 0)
                return -ENOMEM;
        return qmp_send(qmp, "block-stream", TAKE_PTR(args), cb, userdata);
}

int64_t qmp_cmd_block_commit(Qmp *qmp, const char *job_id, const char *device, const char *top_node,
                             const char *base_node, const char *backing_file, uint64_t speed, qmp_reply_func_t cb,
                             void *userdata) {
        _cleanup_(json_object_putp) json_object *args = NULL;

        if (!job_id || !device || speed > INT64_MAX)
                return -EINVAL;
        args = json_block_job_args(job_id, device, speed);
        if (!args || json_add_string_opt(args, "top-node", top_node) < 0 ||
            json_add_string_opt(args, "base-node", base_node) < 0 ||
            json_add_string_opt(args, "backing-file", backing_file) < 0)
                return -ENOMEM;
        return qmp_send(qmp, "block-commit", TAKE_PTR(args), cb, userdata);
}

int64_t qmp_cmd_blockdev_mirror(Qmp *qmp, const char *job_id, const char *device, const char *target,
                                const char *sync, uint64_t speed, qmp_reply_func_t cb, void *userdata) {
        _cleanup_(json_object_putp) json_object *args = NULL;

        if (!job_id || !device || !target || !sync || speed > INT64_MAX)
                return -EINVAL;
        args = json_block_job_args(job_id, device, speed);
        if (!args || json_add_string_opt(args, "target", target) < 0 || json_add_string_opt(args, "sync", sync) < 0)
                return -ENOMEM;
        return qmp_send(qmp, "blockdev-mirror", TAKE_PTR(args), cb, userdata);
}

int64_t qmp_cmd_blockdev_mirror_copy(Qmp *qmp, const char *job_id, const char *device, const char *target,
                                     const char *sync, uint64_t speed, bool write_blocking, uint64_t buf_size,
                                     qmp_reply_func_t cb, void *userdata) {
        _cleanup_(json_object_putp) json_object *args = NULL;
        json_object *v;

        if (!job_id || !device || !target || !sync || speed > INT64_MAX || buf_size > INT64_MAX)
                return -EINVAL;
        args = json_block_job_args(job_id, device, speed);
        if (!args || json_add_string_opt(args, "target", target) < 0 || json_add_string_opt(args, "sync", sync) < 0 ||
            (write_blocking && json_add_string_opt(args, "copy-mode", "write-blocking") < 0))
                return -ENOMEM;
        if (buf_size > 0) {
                v = json_object_new_int64((int64_t) buf_size);
                if (!v || json_object_object_add(args, "buf-size", v) < 0) {
                        json_object_put(v);
                        return -ENOMEM;
                }
        }
        return qmp_send(qmp, "blockdev-mirror", TAKE_PTR(args), cb, userdata);
}

static int64_t qmp_cmd_job_verb(Qmp *qmp, const char *command, const char *job_id, qmp_reply_func_t cb, void *userdata) {
        json_object *args;

        if (!job_id)
                return -EINVAL;
        args = json_build("id", JSTR(job_id), NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, command, args, cb, userdata);
}

int64_t qmp_cmd_job_complete(Qmp *qmp, const char *job_id, qmp_reply_func_t cb, void *userdata) {
        return qmp_cmd_job_verb(qmp, "job-complete", job_id, cb, userdata);
}

int64_t qmp_cmd_job_finalize(Qmp *qmp, const char *job_id, qmp_reply_func_t cb, void *userdata) {
        return qmp_cmd_job_verb(qmp, "job-finalize", job_id, cb, userdata);
}

int64_t qmp_cmd_job_pause(Qmp *qmp, const char *job_id, qmp_reply_func_t cb, void *userdata) {
        return qmp_cmd_job_verb(qmp, "job-pause", job_id, cb, userdata);
}

int64_t qmp_cmd_job_resume(Qmp *qmp, const char *job_id, qmp_reply_func_t cb, void *userdata) {
        return qmp_cmd_job_verb(qmp, "job-resume", job_id, cb, userdata);
}

int64_t qmp_cmd_job_cancel(Qmp *qmp, const char *job_id, qmp_reply_func_t cb, void *userdata) {
        return qmp_cmd_job_verb(qmp, "job-cancel", job_id, cb, userdata);
}

int64_t qmp_cmd_block_job_cancel(Qmp *qmp, const char *job_id, bool force, qmp_reply_func_t cb, void *userdata) {
        json_object *args;

        if (!job_id)
                return -EINVAL;
        args = force ? json_build("device", JSTR(job_id), "force", json_object_new_boolean(true), NULL)
                     : json_build("device", JSTR(job_id), NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "block-job-cancel", args, cb, userdata);
}

int64_t qmp_cmd_block_job_set_speed(Qmp *qmp, const char *job_id, uint64_t speed, qmp_reply_func_t cb, void *userdata) {
        json_object *args;

        /* Here 0 is sent: it lifts the limit. */
        if (!job_id || speed > INT64_MAX)
                return -EINVAL;
        args = json_build("device", JSTR(job_id), "speed", json_object_new_int64((int64_t) speed), NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "block-job-set-speed", args, cb, userdata);
}

int64_t qmp_cmd_query_block_jobs(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        return qmp_send(qmp, "query-block-jobs", NULL, cb, userdata);
}

/* Member `key` as a non-negative integer: 0 and *ret untouched when
 * absent, 1 when set, -EBADMSG for another type or a negative value. */
static int json_get_uint64(json_object *o, const char *key, uint64_t *ret) {
        json_object *v;
        int64_t i;

        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return 0;
        if (!json_object_is_type(v, json_type_int))
                return -EBADMSG;
        i = json_object_get_int64(v);
        if (i < 0)
                return -EBADMSG;
        *ret = (uint64_t) i;
        return 1;
}

int qmp_parse_query_jobs_all(json_object *result, QmpJobInfo **ret, size_t *ret_n) {
        _cleanup_free_ QmpJobInfo *infos = NULL;
        size_t n;

        if (!json_object_is_type(result, json_type_array))
                return log_debug_errno(EBADMSG, "query-jobs reply is not an array.");
        n = json_object_array_length(result);
        infos = new0(QmpJobInfo, n);
        if (!infos)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(result, i);
                QmpJobInfo *info = infos + i;

                if (!json_object_is_type(e, json_type_object) || json_get_string(e, "id", &info->id) < 0 ||
                    json_get_string(e, "type", &info->type) < 0 || json_get_string(e, "status", &info->status) < 0 ||
                    json_get_string(e, "error", &info->error) < 0 || !info->id || !info->status ||
                    json_get_uint64(e, "current-progress", &info->current) < 0 ||
                    json_get_uint64(e, "total-progress", &info->total) < 0)
                        return log_debug_errno(EBADMSG, "Malformed query-jobs entry #%zu.", i);
        }
        *ret = TAKE_PTR(infos);
        *ret_n = n;
        return 0;
}

int qmp_parse_query_block_jobs(json_object *result, QmpBlockJobInfo **ret, size_t *ret_n) {
        _cleanup_free_ QmpBlockJobInfo *infos = NULL;
        size_t n;

        if (!json_object_is_type(result, json_type_array))
                return log_debug_errno(EBADMSG, "query-block-jobs reply is not an array.");
        n = json_object_array_length(result);
        infos = new0(QmpBlockJobInfo, n);
        if (!infos)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(result, i), *v;
                QmpBlockJobInfo *info = infos + i;

                if (!json_object_is_type(e, json_type_object) || json_get_string(e, "device", &info->id) < 0 ||
                    json_get_string(e, "type", &info->type) < 0 || !info->id ||
                    json_get_uint64(e, "len", &info->len) < 0 || json_get_uint64(e, "offset", &info->offset) < 0 ||
                    json_get_uint64(e, "speed", &info->speed) < 0)
                        return log_debug_errno(EBADMSG, "Malformed query-block-jobs entry #%zu.", i);
                if (json_object_object_get_ex(e, "paused", &v)) {
                        if (!json_object_is_type(v, json_type_boolean))
                                return log_debug_errno(EBADMSG, "Malformed query-block-jobs entry #%zu.", i);
                        info->paused = json_object_get_boolean(v);
                }
        }
        *ret = TAKE_PTR(infos);
        *ret_n = n;
        return 0;
}

int qmp_parse_block_job_event(json_object *data, QmpBlockJobEvent *ret) {
        QmpBlockJobEvent e = {};
        int a, b;

        if (!json_object_is_type(data, json_type_object) || json_get_string(data, "device", &e.id) < 0 ||
            json_get_string(data, "type", &e.type) < 0 || json_get_string(data, "error", &e.error) < 0 ||
            json_get_string(data, "operation", &e.operation) < 0 || json_get_string(data, "action", &e.action) < 0)
                return -EBADMSG;
        if (!e.id && json_get_string(data, "id", &e.id) < 0)
                return -EBADMSG;
        if (!e.id)
                return -EBADMSG;
        a = json_get_uint64(data, "len", &e.len);
        b = json_get_uint64(data, "offset", &e.offset);
        if (a < 0 || b < 0 || json_get_uint64(data, "speed", &e.speed) < 0)
                return -EBADMSG;
        e.has_progress = a > 0 && b > 0;
        *ret = e;
        return 0;
}

int64_t qmp_cmd_query_named_block_nodes(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("flat", json_object_new_boolean(true), NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "query-named-block-nodes", args, cb, userdata);
}

int qmp_node_file(json_object *entry, char **ret) {
        _cleanup_(json_object_putp) json_object *spec = NULL;
        json_object *file = NULL, *filename = NULL;
        const char *f;

        if (json_get_string(entry, "file", &f) < 0 || !f)
                return -EBADMSG;
        /* A node whose backing differs from what its header names (a
         * relative name written by block-stream/-commit) is shown as
         * json:{…, "file": {"driver": "file", "filename": …}}. */
        if (strncmp(f, "json:", 5) == 0) {
                spec = json_tokener_parse(f + 5);
                if (!spec || !json_object_object_get_ex(spec, "file", &file) ||
                    !json_object_object_get_ex(file, "filename", &filename) ||
                    !json_object_is_type(filename, json_type_string))
                        return -EBADMSG;
                f = json_object_get_string(filename);
        }
        return (*ret = strdup(f)) ? 0 : -ENOMEM;
}

int qmp_find_format_node(json_object *result, const char *file, const char **ret_node) {
        if (!json_object_is_type(result, json_type_array))
                return -EBADMSG;
        for (size_t i = 0; i < json_object_array_length(result); i++) {
                json_object *e = json_object_array_get_idx(result, i);
                _cleanup_free_ char *f = NULL;
                const char *node, *drv;

                if (!json_object_is_type(e, json_type_object) || json_get_string(e, "node-name", &node) < 0 ||
                    json_get_string(e, "drv", &drv) < 0)
                        return -EBADMSG;
                if (qmp_node_file(e, &f) == -ENOMEM)
                        return -ENOMEM;
                /* The protocol node ("file") has the same file name; we want the format node. */
                if (node && drv && f && !streq(drv, "file") && streq(f, file)) {
                        *ret_node = node;
                        return 1;
                }
        }
        return 0;
}

/* ---- descriptors ---- */

char *qmp_fdset_path(unsigned fdset_id) {
        return strprintf("/dev/fdset/%u", fdset_id);
}

int qmp_parse_fdset_path(const char *filename, unsigned *ret_fdset_id) {
        static const char prefix[] = "/dev/fdset/";
        const char *p = filename;
        char *end;
        unsigned long v;

        if (!p || strncmp(p, prefix, strlen(prefix)) != 0)
                return -EINVAL;
        p += strlen(prefix);
        if (*p < '0' || *p > '9')
                return -EINVAL;
        errno = 0;
        v = strtoul(p, &end, 10);
        if (errno != 0 || *end || v > UINT_MAX)
                return -EINVAL;
        *ret_fdset_id = (unsigned) v;
        return 0;
}

int64_t qmp_cmd_add_fd(Qmp *qmp, unsigned fdset_id, int fd, const char *opaque, qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("fdset-id", json_object_new_int64(fdset_id), NULL);

        if (!args || json_add_string_opt(args, "opaque", opaque) < 0) {
                json_object_put(args);
                return -ENOMEM;
        }
        return qmp_send_with_fd(qmp, "add-fd", args, fd, cb, userdata);
}

int64_t qmp_cmd_remove_fd(Qmp *qmp, unsigned fdset_id, qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("fdset-id", json_object_new_int64(fdset_id), NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "remove-fd", args, cb, userdata);
}

int64_t qmp_cmd_getfd(Qmp *qmp, const char *name, int fd, qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("fdname", JSTR(name), NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send_with_fd(qmp, "getfd", args, fd, cb, userdata);
}

int64_t qmp_cmd_closefd(Qmp *qmp, const char *name, qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("fdname", JSTR(name), NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "closefd", args, cb, userdata);
}

int64_t qmp_cmd_migrate_to_fd(Qmp *qmp, const char *fdname, qmp_reply_func_t cb, void *userdata) {
        _cleanup_free_ char *uri = strjoin("fd:", fdname);
        json_object *args;

        if (!uri)
                return -ENOMEM;
        args = json_build("uri", JSTR(uri), NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "migrate", args, cb, userdata);
}

int64_t qmp_cmd_migrate_incoming_fd(Qmp *qmp, const char *fdname, qmp_reply_func_t cb, void *userdata) {
        _cleanup_free_ char *uri = strjoin("fd:", fdname);
        return uri ? qmp_cmd_migrate_incoming(qmp, uri, cb, userdata) : -ENOMEM;
}

/* ---- backups ---- */

static json_object *bitmap_action(const QmpBitmapAction *a);

/* x-perf (QEMU 6.0+, unstable): for a bulk copy, 8 requests of up to
 * 8 MiB in flight instead of 64 of 1 MiB (docs/decisions.md). */
static int json_add_bulk_perf(json_object *o) {
        json_object *perf = json_build("max-workers", json_object_new_int(8), "max-chunk",
                                       json_object_new_int64(8 << 20), NULL);

        if (!perf || json_object_object_add(o, "x-perf", perf) < 0) {
                json_object_put(perf);
                return -ENOMEM;
        }
        return 0;
}

static json_object *json_backup_action(const QmpBackupAction *a, bool has_perf) {
        json_object *data = NULL;
        const char *type = NULL;

        switch (a->type) {
        case QMP_BACKUP_BITMAP:
                return bitmap_action(&a->bitmap_action);
        case QMP_BACKUP_BLOCKDEV_BACKUP:
                type = "blockdev-backup";
                data = json_build("job-id", JSTR(a->name), "device", JSTR(a->node), "target", JSTR(a->target),
                                  "sync", JSTR(a->sync),
                                  "auto-finalize", json_object_new_boolean(false),
                                  "auto-dismiss", json_object_new_boolean(false), NULL);
                if (data && (json_add_string_opt(data, "bitmap", a->bitmap) < 0 || json_add_speed(data, a->speed) < 0 ||
                             json_add_string_opt(data, "filter-node-name", a->filter_node) < 0 ||
                             (a->bulk && has_perf && json_add_bulk_perf(data) < 0))) {
                        json_object_put(data);
                        data = NULL;
                }
                break;
        }
        if (!data)
                return NULL;
        return json_build("type", JSTR(type), "data", data, NULL);
}

int64_t qmp_cmd_transaction_backup(Qmp *qmp, const QmpBackupAction *actions, size_t n, qmp_reply_func_t cb,
                                   void *userdata) {
        json_object *list = json_object_new_array(), *args;

        for (size_t i = 0; list && i < n; i++) {
                json_object *a = json_backup_action(actions + i, qmp_version_at_least(qmp, 6, 0));
                if (!a || json_object_array_add(list, a) < 0) {
                        json_object_put(a);
                        json_object_put(list);
                        return -ENOMEM;
                }
        }
        if (!list)
                return -ENOMEM;
        args = json_build("actions", list, NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "transaction", args, cb, userdata);
}

int64_t qmp_cmd_block_dirty_bitmap_remove(Qmp *qmp, const char *node, const char *name, qmp_reply_func_t cb,
                                          void *userdata) {
        json_object *args = json_build("node", JSTR(node), "name", JSTR(name), NULL);
        return args ? qmp_send(qmp, "block-dirty-bitmap-remove", args, cb, userdata) : -ENOMEM;
}

int64_t qmp_cmd_nbd_server_start(Qmp *qmp, const char *unix_path, const char *host, const char *port,
                                 const char *tls_creds, qmp_reply_func_t cb, void *userdata) {
        json_object *addr, *args;

        /* The legacy SocketAddress form {"type", "data"} (measured). */
        if (unix_path)
                addr = json_build("type", JSTR("unix"), "data", json_build("path", JSTR(unix_path), NULL), NULL);
        else if (host && port)
                addr = json_build("type", JSTR("inet"),
                                  "data", json_build("host", JSTR(host), "port", JSTR(port), NULL), NULL);
        else
                return -EINVAL;
        args = json_build("addr", addr, NULL);
        if (args && json_add_string_opt(args, "tls-creds", tls_creds) < 0) {
                json_object_put(args);
                args = NULL;
        }
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "nbd-server-start", args, cb, userdata);
}

int64_t qmp_cmd_nbd_server_stop(Qmp *qmp, qmp_reply_func_t cb, void *userdata) {
        return qmp_send(qmp, "nbd-server-stop", NULL, cb, userdata);
}

int64_t qmp_cmd_block_export_add_nbd(Qmp *qmp, const char *id, const char *node, const char *name, const char *bitmap,
                                     const char *bitmap_node, qmp_reply_func_t cb, void *userdata) {
        json_object *args, *a = NULL;

        /* ["name"], or [{"node", "name"}] for a bitmap on another node than the exported one */
        if (bitmap && !(a = json_object_new_array()))
                return -ENOMEM;
        if (a && json_object_array_add(a, bitmap_node ? json_build("node", JSTR(bitmap_node), "name", JSTR(bitmap), NULL)
                                                      : JSTR(bitmap)) < 0) {
                json_object_put(a);
                return -ENOMEM;
        }
        args = json_build("type", JSTR("nbd"), "id", JSTR(id), "node-name", JSTR(node), "name", JSTR(name),
                          "writable", json_object_new_boolean(false), a ? "bitmaps" : NULL, a, NULL);
        return args ? qmp_send(qmp, "block-export-add", args, cb, userdata) : -ENOMEM;
}

int64_t qmp_cmd_blockdev_add_snapshot_access(Qmp *qmp, const char *node, const char *filter, qmp_reply_func_t cb,
                                             void *userdata) {
        json_object *args = json_build("driver", JSTR("snapshot-access"), "node-name", JSTR(node), "file", JSTR(filter),
                                       NULL);
        return args ? qmp_send(qmp, "blockdev-add", args, cb, userdata) : -ENOMEM;
}

int64_t qmp_cmd_object_add_tls_creds_x509(Qmp *qmp, const char *id, const char *dir, qmp_reply_func_t cb,
                                          void *userdata) {
        json_object *args = json_build("qom-type", JSTR("tls-creds-x509"), "id", JSTR(id), "dir", JSTR(dir),
                                       "endpoint", JSTR("server"), "verify-peer", json_object_new_boolean(true), NULL);
        return args ? qmp_send(qmp, "object-add", args, cb, userdata) : -ENOMEM;
}

int64_t qmp_cmd_object_del(Qmp *qmp, const char *id, qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("id", JSTR(id), NULL);
        return args ? qmp_send(qmp, "object-del", args, cb, userdata) : -ENOMEM;
}

/* ---- dirty bitmaps ---- */

static json_object *bitmap_action(const QmpBitmapAction *a) {
        json_object *data, *sources;

        switch (a->type) {
        case QMP_BITMAP_ADD:
                data = json_build("node", JSTR(a->node), "name", JSTR(a->name), "persistent",
                                  json_object_new_boolean(a->persistent), NULL);
                if (data && a->disabled && json_object_object_add(data, "disabled", json_object_new_boolean(true)) < 0)
                        return json_object_put(data), NULL;
                if (data && a->granularity > 0 &&
                    json_object_object_add(data, "granularity", json_object_new_int64((int64_t) a->granularity)) < 0)
                        return json_object_put(data), NULL;
                return json_build("type", JSTR("block-dirty-bitmap-add"), "data", data, NULL);
        case QMP_BITMAP_REMOVE:
        case QMP_BITMAP_DISABLE:
                data = json_build("node", JSTR(a->node), "name", JSTR(a->name), NULL);
                return json_build("type",
                                  JSTR(a->type == QMP_BITMAP_REMOVE ? "block-dirty-bitmap-remove"
                                                                    : "block-dirty-bitmap-disable"),
                                  "data", data, NULL);
        case QMP_BITMAP_MERGE:
                sources = json_object_new_array();
                for (size_t i = 0; sources && i < a->n_sources; i++) {
                        json_object *s = json_build("node", JSTR(a->sources[i].node), "name", JSTR(a->sources[i].name),
                                                    NULL);
                        if (!s || json_object_array_add(sources, s) < 0) {
                                json_object_put(s);
                                json_object_put(sources);
                                sources = NULL;
                        }
                }
                if (!sources)
                        return NULL;
                data = json_build("node", JSTR(a->node), "target", JSTR(a->name), "bitmaps", sources, NULL);
                return json_build("type", JSTR("block-dirty-bitmap-merge"), "data", data, NULL);
        }
        return NULL;
}

int qmp_bitmap_actions_append(json_object *actions, const QmpBitmapAction *a, size_t n) {
        for (size_t i = 0; i < n; i++) {
                json_object *o = bitmap_action(a + i);
                if (!o || json_object_array_add(actions, o) < 0) {
                        json_object_put(o);
                        return -ENOMEM;
                }
        }
        return 0;
}

int64_t qmp_cmd_transaction_bitmaps(Qmp *qmp, const QmpBitmapAction *a, size_t n, qmp_reply_func_t cb, void *userdata) {
        return qmp_cmd_transaction_snapshot_bitmaps(qmp, NULL, NULL, 0, a, n, cb, userdata);
}

int qmp_recorded_bitmap_adds(json_object *actions, const char *node, char ***ret) {
        *ret = NULL;
        for (size_t i = 0; json_object_is_type(actions, json_type_array) && i < json_object_array_length(actions); i++) {
                json_object *a = json_object_array_get_idx(actions, i), *data = NULL;
                const char *type = NULL, *on = NULL, *name = NULL;

                if (json_get_string(a, "type", &type) >= 0 && streq_ptr(type, "block-dirty-bitmap-add") &&
                    json_object_object_get_ex(a, "data", &data) && json_get_string(data, "node", &on) >= 0 &&
                    json_get_string(data, "name", &name) >= 0 && name && streq_ptr(on, node) && strv_extend(ret, name) < 0)
                        return -ENOMEM; /* the caller frees *ret */
        }
        return 0;
}

int64_t qmp_cmd_transaction_recorded(Qmp *qmp, json_object *actions, qmp_reply_func_t cb, void *userdata) {
        json_object *args = json_build("actions", json_object_get(actions), NULL);

        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "transaction", args, cb, userdata);
}

int64_t qmp_cmd_transaction_snapshot_bitmaps(Qmp *qmp, const char *const *nodes, const char *const *overlays, size_t n,
                                             const QmpBitmapAction *a, size_t n_actions, qmp_reply_func_t cb,
                                             void *userdata) {
        json_object *actions = json_object_new_array(), *args;

        for (size_t i = 0; actions && i < n; i++) {
                json_object *o = json_build("type", JSTR("blockdev-snapshot"),
                                            "data", json_build("node", JSTR(nodes[i]), "overlay", JSTR(overlays[i]), NULL),
                                            NULL);
                if (!o || json_object_array_add(actions, o) < 0) {
                        json_object_put(o);
                        json_object_put(actions);
                        return -ENOMEM;
                }
        }
        if (!actions || qmp_bitmap_actions_append(actions, a, n_actions) < 0) {
                json_object_put(actions);
                return -ENOMEM;
        }
        args = json_build("actions", actions, NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "transaction", args, cb, userdata);
}

int64_t qmp_cmd_blockdev_reopen(Qmp *qmp, const char *node, const char *file_node, const char *backing_node,
                                bool read_only, qmp_reply_func_t cb, void *userdata) {
        json_object *opts, *list, *args;

        opts = json_build("driver", JSTR("qcow2"), "node-name", JSTR(node), "file", JSTR(file_node),
                          "backing", backing_node ? JSTR(backing_node) : NULL,
                          "read-only", json_object_new_boolean(read_only), NULL);
        list = opts ? json_object_new_array() : NULL;
        if (!list || json_object_array_add(list, opts) < 0) {
                json_object_put(opts);
                json_object_put(list);
                return -ENOMEM;
        }
        args = json_build("options", list, NULL);
        if (!args)
                return -ENOMEM;
        return qmp_send(qmp, "blockdev-reopen", args, cb, userdata);
}

void qmp_nodes_free(QmpNode *nodes, size_t n) {
        for (size_t i = 0; nodes && i < n; i++) {
                for (size_t k = 0; k < nodes[i].n_bitmaps; k++)
                        free(nodes[i].bitmaps[k].name);
                free(nodes[i].bitmaps);
                free(nodes[i].node);
                free(nodes[i].drv);
                free(nodes[i].file);
        }
        free(nodes);
}

static int parse_node_bitmaps(json_object *e, QmpNode *n) {
        json_object *bitmaps = NULL;

        if (!json_object_object_get_ex(e, "dirty-bitmaps", &bitmaps) || !json_object_is_type(bitmaps, json_type_array))
                return 0;
        n->bitmaps = new0(QmpNodeBitmap, json_object_array_length(bitmaps) + 1);
        if (!n->bitmaps)
                return -ENOMEM;
        for (size_t k = 0; k < json_object_array_length(bitmaps); k++) {
                json_object *b = json_object_array_get_idx(bitmaps, k);
                QmpNodeBitmap *nb = n->bitmaps + n->n_bitmaps;
                const char *name = NULL;

                if (json_get_string(b, "name", &name) < 0 || !name)
                        continue; /* a job's own */
                *nb = (QmpNodeBitmap) {
                        .name = strdup(name),
                        .recording = json_get_bool_member(b, "recording"),
                        .persistent = json_get_bool_member(b, "persistent"),
                        .inconsistent = json_get_bool_member(b, "inconsistent"),
                        .busy = json_get_bool_member(b, "busy"),
                        .count = json_get_u64_member(b, "count"),
                        .granularity = json_get_u64_member(b, "granularity"),
                };
                if (!nb->name)
                        return -ENOMEM;
                n->n_bitmaps++;
        }
        return 0;
}

int qmp_named_nodes_bitmap_count(json_object *result, const char *node, const char *name, uint64_t *ret) {
        if (!json_object_is_type(result, json_type_array))
                return -EBADMSG;
        for (size_t i = 0; i < json_object_array_length(result); i++) {
                json_object *e = json_object_array_get_idx(result, i), *bitmaps = NULL;
                const char *n = NULL;

                if (!json_object_is_type(e, json_type_object) || json_get_string(e, "node-name", &n) < 0 ||
                    !streq_ptr(n, node))
                        continue;
                if (!json_object_object_get_ex(e, "dirty-bitmaps", &bitmaps) ||
                    !json_object_is_type(bitmaps, json_type_array))
                        return -ENOENT;
                for (size_t k = 0; k < json_object_array_length(bitmaps); k++) {
                        json_object *b = json_object_array_get_idx(bitmaps, k);

                        if (json_get_string(b, "name", &n) < 0 || !streq_ptr(n, name))
                                continue;
                        *ret = json_get_u64_member(b, "count");
                        return 0;
                }
                return -ENOENT;
        }
        return -ENOENT;
}

int qmp_parse_named_nodes(json_object *result, QmpNode **ret, size_t *ret_n) {
        QmpNode *nodes;
        size_t n = 0;

        if (!json_object_is_type(result, json_type_array))
                return -EBADMSG;
        nodes = new0(QmpNode, json_object_array_length(result) + 1);
        if (!nodes)
                return -ENOMEM;
        for (size_t i = 0; i < json_object_array_length(result); i++) {
                json_object *e = json_object_array_get_idx(result, i);
                const char *node = NULL, *drv = NULL;
                QmpNode *q = nodes + n;
                int r;

                if (!json_object_is_type(e, json_type_object) || json_get_string(e, "node-name", &node) < 0 ||
                    json_get_string(e, "drv", &drv) < 0 || !node)
                        continue;
                q->node = strdup(node);
                q->drv = strdup(strempty(drv));
                q->read_only = json_get_bool_member(e, "ro");
                n++;
                r = qmp_node_file(e, &q->file);
                if (r == -ENOMEM || !q->node || !q->drv || parse_node_bitmaps(e, q) < 0) {
                        qmp_nodes_free(nodes, n);
                        return -ENOMEM;
                }
        }
        *ret = nodes;
        *ret_n = n;
        return 0;
}
