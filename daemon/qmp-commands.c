/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP command spellings: the typed wrappers around qmp_send() and the
 * parsers of their "return" values into plain C. Nothing else in the
 * daemon names a QMP command or argument. Parsers are strict about types
 * (-EBADMSG) but ignore members they do not know.
 */
#include "qmp-commands.h"
#include "util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);

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
