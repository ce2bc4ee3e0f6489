/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The libvirt <domainbackup> codec: text in, BackupDef out, and back. It
 * checks what libvirt's domainbackup.rng and backup_conf.c check (plus
 * what qsnapd relies on: absolute paths, a port number, unique disks),
 * keeps unknown content verbatim, writes in the order of libvirt's
 * virDomainBackupDefFormat(), and aligns a definition with the domain's
 * disks. The hardened parser and the escaping writer are xml-util.c's.
 * Nothing here logs or keeps state between calls.
 */

#include <inttypes.h>
#include <stdio.h>

#include "util/string-table.h"
#include "util/util.h"
#include "store/xml-backup.h"
#include "store/xml-checkpoint.h"
#include "store/xml-util.h"

#define LEVEL_CHILD 1
#define LEVEL_DISK 2

/* NBD's limit for an export name (NBD_MAX_STRING_SIZE in QEMU). */
#define EXPORT_NAME_MAX 4096U

static const char *const backup_mode_table[_BACKUP_MODE_MAX] = {
        [BACKUP_MODE_PUSH] = "push",
        [BACKUP_MODE_PULL] = "pull",
};

static const char *const backup_transport_table[_BACKUP_TRANSPORT_MAX] = {
        [BACKUP_TRANSPORT_TCP] = "tcp",
        [BACKUP_TRANSPORT_UNIX] = "unix",
};

static const char *const backup_disk_type_table[_BACKUP_DISK_TYPE_MAX] = {
        [BACKUP_DISK_TYPE_FILE] = "file",
        [BACKUP_DISK_TYPE_BLOCK] = "block",
};

static const char *const backup_disk_mode_table[_BACKUP_DISK_MODE_MAX] = {
        [BACKUP_DISK_MODE_DEFAULT] = "default",
        [BACKUP_DISK_MODE_FULL] = "full",
        [BACKUP_DISK_MODE_INCREMENTAL] = "incremental",
};

DEFINE_STRING_TABLE_LOOKUP(backup_mode, BackupMode);
DEFINE_STRING_TABLE_LOOKUP(backup_transport, BackupTransport);
DEFINE_STRING_TABLE_LOOKUP(backup_disk_type, BackupDiskType);
DEFINE_STRING_TABLE_LOOKUP(backup_disk_mode, BackupDiskMode);

static void backup_server_free(BackupServer *s) {
        if (!s)
                return;
        free(s->name);
        free(s->socket);
        strv_free(s->extra_attributes);
        free(s);
}

static void backup_disk_done(BackupDisk *d) {
        free(d->name);
        free(d->incremental);
        free(d->export_name);
        free(d->export_bitmap);
        free(d->path);
        strv_free(d->extra_path_elements);
        strv_free(d->extra_path_attributes);
        strv_free(d->extra_attributes);
        strv_free(d->extra_elements);
        *d = (BackupDisk) { .format = _DISK_FORMAT_INVALID };
}

static void disk_item_done(void *item) {
        backup_disk_done(item);
}

static void backup_disks_free(BackupDisk *disks, size_t n) {
        xml_items_free(disks, n, sizeof(BackupDisk), disk_item_done);
}

BackupDef *backup_def_free(BackupDef *def) {
        if (!def)
                return NULL;
        free(def->incremental);
        backup_server_free(def->server);
        backup_disks_free(def->disks, def->n_disks);
        strv_free(def->extra_attributes);
        strv_free(def->extra_elements);
        free(def);
        return NULL;
}

/* ---- Checks shared by parser and writer ----------------------------------- */

/* libvirt's schema: <disk name> is a target, never a path. */
static const char *check_target(const char *s) {
        if (isempty(s) || xml_is_blank(s))
                return "is empty";
        if (strchr(s, '/'))
                return "is not a disk target such as 'vda'";
        return NULL;
}

static const char *check_export_name(const char *s) {
        if (isempty(s))
                return "is empty";
        if (strlen(s) > EXPORT_NAME_MAX)
                return "is longer than 4096 bytes, NBD's limit";
        return NULL;
}

/* The element naming a disk's destination, and its path attribute. */
static const char *path_element(BackupMode mode) {
        return mode == BACKUP_MODE_PULL ? "scratch" : "target";
}

static const char *path_attribute(BackupDiskType type) {
        return type == BACKUP_DISK_TYPE_BLOCK ? "dev" : "file";
}

static const char *disk_name_get(const void *item) {
        return ((const BackupDisk *) item)->name;
}

static int find_duplicate_disk(const BackupDisk *disks, size_t n, size_t *ret_first, size_t *ret_second) {
        _cleanup_free_ XmlNameRef *refs = NULL;
        size_t n_refs;
        int r;

        if (n < 2)
                return 0;
        r = xml_name_index_new(disk_name_get, disks, sizeof(BackupDisk), n, &refs, &n_refs);
        if (r < 0)
                return r;
        return xml_name_index_find_duplicate(refs, n_refs, ret_first, ret_second);
}

/* ---- Parser ---------------------------------------------------------------- */

static bool has_attribute(const xmlNode *n, const char *name) {
        return xmlHasNsProp((xmlNode *) n, BAD_CAST name, NULL) != NULL;
}

static int parser_yes_no(XmlParser *p, const xmlNode *n, const char *attr, int *ret) {
        _cleanup_free_ char *v = NULL;
        int r;

        r = xml_attr_get(n, attr, &v);
        if (r < 0)
                return r;
        if (!v)
                *ret = -1;
        else if (streq(v, "yes"))
                *ret = 1;
        else if (streq(v, "no"))
                *ret = 0;
        else
                return xml_parser_error(p, -EINVAL, n, "<%s %s='%s'>: expected 'yes' or 'no'", (const char *) n->name,
                                        attr, XML_QUOTE(v));
        return 0;
}

/* A value that names a checkpoint: <incremental> and incremental=. */
static int parser_checkpoint_ref(XmlParser *p, const xmlNode *n, const char *what, const char *value) {
        const char *problem = checkpoint_name_check(value);

        if (problem)
                return xml_parser_error(p, -EINVAL, n, "%s '%s' is not a checkpoint name: it %s", what, XML_QUOTE(value),
                                        problem);
        return 0;
}

static int parser_server(XmlParser *p, const xmlNode *n, BackupServer **ret) {
        BackupServer *s;
        _cleanup_free_ char *transport = NULL, *port = NULL;
        int r;

        s = new0(BackupServer, 1);
        if (!s)
                return -ENOMEM;
        s->tls = -1;

        r = xml_attr_get(n, "transport", &transport);
        if (r < 0)
                goto fail;
        if (transport) {
                s->transport = backup_transport_from_string(transport);
                if (s->transport < 0) {
                        r = xml_parser_error(p, -EINVAL, n,
                                             "<server transport='%s'> is not supported, expected 'tcp' or 'unix'",
                                             XML_QUOTE(transport));
                        goto fail;
                }
        }
        r = parser_yes_no(p, n, "tls", &s->tls);
        if (r < 0)
                goto fail;

        if (s->transport == BACKUP_TRANSPORT_UNIX) {
                if (has_attribute(n, "name") || has_attribute(n, "port")) {
                        r = xml_parser_error(p, -EINVAL, n, "<server transport='unix'> takes socket=, not %s=",
                                             has_attribute(n, "name") ? "name" : "port");
                        goto fail;
                }
                r = xml_parser_path_attr(p, n, "socket", &s->socket);
                if (r < 0)
                        goto fail;
                if (!s->socket) {
                        r = xml_parser_error(p, -EINVAL, n, "<server transport='unix'> has no socket= attribute");
                        goto fail;
                }
        } else {
                uint64_t v;

                if (has_attribute(n, "socket")) {
                        r = xml_parser_error(p, -EINVAL, n,
                                             "<server> with transport 'tcp' takes name= and port=, not socket=; "
                                             "add transport='unix' for a socket");
                        goto fail;
                }
                r = xml_attr_get(n, "name", &s->name);
                if (r < 0)
                        goto fail;
                if (!s->name || xml_is_blank(s->name)) {
                        r = xml_parser_error(p, -EINVAL, n, "<server> with transport 'tcp' needs a host name=");
                        goto fail;
                }
                r = xml_attr_get(n, "port", &port);
                if (r < 0)
                        goto fail;
                if (port) {
                        if (xml_parse_u64(port, &v) < 0 || v == 0 || v > 65535) {
                                r = xml_parser_error(p, -EINVAL, n, "<server port='%s'> is not a port number (1-65535)",
                                                     XML_QUOTE(port));
                                goto fail;
                        }
                        s->port = (uint16_t) v;
                }
        }

        r = xml_collect_attributes(n, (const char *const[]) { "transport", "tls", "name", "port", "socket", NULL },
                                   NULL, &s->extra_attributes);
        if (r < 0)
                goto fail;
        r = xml_parser_check_empty(p, n);
        if (r < 0)
                goto fail;
        *ret = s;
        return 0;

fail:
        backup_server_free(s);
        return r;
}

static int parser_driver(XmlParser *p, const xmlNode *n, BackupMode mode, BackupDisk *d) {
        _cleanup_free_ char *format = NULL;
        int r;

        for (const xmlAttr *a = n->properties; a; a = a->next)
                if (a->ns || !xmlStrEqual(a->name, BAD_CAST "type"))
                        return xml_parser_error(p, -EINVAL, n, "<driver> of disk '%s' has an unknown attribute '%s'",
                                                XML_QUOTE(d->name), XML_QUOTE((const char *) a->name));
        r = xml_attr_get(n, "type", &format);
        if (r < 0)
                return r;
        if (!format)
                return xml_parser_error(p, -EINVAL, n, "<driver> of disk '%s' has no type= attribute", XML_QUOTE(d->name));
        d->format = disk_format_from_string(format);
        if (d->format < 0)
                return xml_parser_error(p, -EINVAL, n, "disk '%s' has driver type '%s', expected 'qcow2' or 'raw'",
                                        XML_QUOTE(d->name), XML_QUOTE(format));
        /* The scratch file holds the fleecing overlay: qcow2 (libvirt's schema). */
        if (mode == BACKUP_MODE_PULL && d->format != DISK_FORMAT_QCOW2)
                return xml_parser_error(p, -EINVAL, n, "disk '%s': a pull mode scratch file is qcow2, not '%s'",
                                        XML_QUOTE(d->name), XML_QUOTE(format));
        return xml_parser_check_empty(p, n);
}

static int parser_path(XmlParser *p, xmlNode *n, BackupDisk *d) {
        const char *attr = path_attribute(d->type), *other = d->type == BACKUP_DISK_TYPE_BLOCK ? "file" : "dev";
        int r;

        if (has_attribute(n, other))
                return xml_parser_error(p, -EINVAL, n, "<%s> of a type='%s' disk names it with %s=, not %s=",
                                        (const char *) n->name, backup_disk_type_to_string(d->type), attr, other);
        r = xml_parser_path_attr(p, n, attr, &d->path);
        if (r < 0)
                return r;
        r = xml_collect_attributes(n, (const char *const[]) { attr, NULL }, NULL, &d->extra_path_attributes);
        if (r < 0)
                return r;
        return xml_parser_keep_children(p, n, &d->extra_path_elements);
}

/* A backup='no' disk: libvirt reads nothing else of it, and its schema has
 * no destination for one. */
static int parser_excluded_disk(XmlParser *p, xmlNode *n, BackupDisk *d, XmlList *extra) {
        int r;

        if (has_attribute(n, "type"))
                return xml_parser_error(p, -EINVAL, n, "disk '%s' has backup='no' and a type=", XML_QUOTE(d->name));
        for (xmlNode *c = n->children; c; c = c->next) {
                r = xml_parser_skip_node(p, n, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                if (xml_node_is(c, "target") || xml_node_is(c, "scratch") || xml_node_is(c, "driver"))
                        return xml_parser_error(p, -EINVAL, c, "disk '%s' has backup='no' and a <%s>", XML_QUOTE(d->name),
                                                (const char *) c->name);
                r = xml_parser_keep_element(p, c, 0, extra);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* type=, backupmode=, incremental=, exportname=, exportbitmap= of a disk
 * that is backed up. */
static int parser_disk_attributes(XmlParser *p, const xmlNode *n, BackupMode mode, BackupDisk *d) {
        _cleanup_free_ char *type = NULL, *backupmode = NULL;
        const char *problem;
        int r;

        r = xml_attr_get(n, "type", &type);
        if (r < 0)
                return r;
        if (type) {
                d->type = backup_disk_type_from_string(type);
                if (d->type < 0)
                        return xml_parser_error(p, -EINVAL, n, "disk '%s' has type '%s', expected 'file' or 'block'",
                                                XML_QUOTE(d->name), XML_QUOTE(type));
        }
        r = xml_attr_get(n, "backupmode", &backupmode);
        if (r < 0)
                return r;
        if (backupmode) {
                d->mode = backup_disk_mode_from_string(backupmode);
                if (d->mode <= BACKUP_DISK_MODE_DEFAULT)
                        return xml_parser_error(p, -EINVAL, n,
                                                "disk '%s' has backupmode '%s', expected 'full' or 'incremental'",
                                                XML_QUOTE(d->name), XML_QUOTE(backupmode));
        }
        r = xml_attr_get(n, "incremental", &d->incremental);
        if (r < 0)
                return r;
        if (d->incremental) {
                if (d->mode == BACKUP_DISK_MODE_FULL)
                        return xml_parser_error(p, -EINVAL, n,
                                                "disk '%s' has backupmode='full' and incremental='%s': a full backup "
                                                "starts from no checkpoint",
                                                XML_QUOTE(d->name), XML_QUOTE(d->incremental));
                r = parser_checkpoint_ref(p, n, "incremental=", d->incremental);
                if (r < 0)
                        return r;
        }

        r = xml_attr_get(n, "exportname", &d->export_name);
        if (r < 0)
                return r;
        r = xml_attr_get(n, "exportbitmap", &d->export_bitmap);
        if (r < 0)
                return r;
        if (mode == BACKUP_MODE_PUSH && (d->export_name || d->export_bitmap))
                return xml_parser_error(p, -EINVAL, n, "disk '%s' has %s=, which only a pull mode backup exports",
                                        XML_QUOTE(d->name), d->export_name ? "exportname" : "exportbitmap");
        if (d->export_name && (problem = check_export_name(d->export_name)))
                return xml_parser_error(p, -EINVAL, n, "disk '%s' exportname='%s' %s", XML_QUOTE(d->name),
                                        XML_QUOTE(d->export_name), problem);
        if (d->export_bitmap && (problem = checkpoint_bitmap_name_check(d->export_bitmap)))
                return xml_parser_error(p, -EINVAL, n, "disk '%s' exportbitmap='%s' %s", XML_QUOTE(d->name),
                                        XML_QUOTE(d->export_bitmap), problem);
        return 0;
}

/* <driver>, and <target> (push) or <scratch> (pull), of a disk that is
 * backed up. */
static int parser_disk_children(XmlParser *p, xmlNode *n, BackupMode mode, BackupDisk *d, XmlList *extra) {
        const xmlNode *seen_driver = NULL, *seen_path = NULL;
        int r;

        for (xmlNode *c = n->children; c; c = c->next) {
                r = xml_parser_skip_node(p, n, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;

                if (xml_node_is(c, "driver")) {
                        r = xml_parser_check_once(p, c, &seen_driver);
                        if (r >= 0)
                                r = parser_driver(p, c, mode, d);
                } else if (xml_node_is(c, path_element(mode))) {
                        r = xml_parser_check_once(p, c, &seen_path);
                        if (r >= 0)
                                r = parser_path(p, c, d);
                } else if (xml_node_is(c, path_element(mode == BACKUP_MODE_PULL ? BACKUP_MODE_PUSH : BACKUP_MODE_PULL)))
                        return xml_parser_error(p, -EINVAL, c, "disk '%s' has <%s>, but a %s mode backup writes to <%s>",
                                                XML_QUOTE(d->name), (const char *) c->name, backup_mode_to_string(mode),
                                                path_element(mode));
                else
                        r = xml_parser_keep_element(p, c, 0, extra);
                if (r < 0)
                        return r;
        }

        /* libvirt's schema: a pull mode block scratch device must be named. */
        if (mode == BACKUP_MODE_PULL && d->type == BACKUP_DISK_TYPE_BLOCK && !d->path)
                return xml_parser_error(p, -EINVAL, n, "disk '%s' of type 'block' needs <scratch dev=…>",
                                        XML_QUOTE(d->name));
        return 0;
}

static int parser_disk(XmlParser *p, xmlNode *n, BackupMode mode, BackupDisk *ret) {
        _cleanup_(backup_disk_done) BackupDisk d = { .format = _DISK_FORMAT_INVALID };
        XmlList extra = { .strv = &d.extra_elements };
        int backup, r;

        r = xml_parser_disk_name(p, n, check_target, &d.name);
        if (r < 0)
                return r;
        r = parser_yes_no(p, n, "backup", &backup);
        if (r < 0)
                return r;
        d.backup = backup != 0;

        r = xml_collect_attributes(n,
                                   (const char *const[]) { "name", "backup", "type", "backupmode", "incremental",
                                                           "exportname", "exportbitmap", NULL },
                                   NULL, &d.extra_attributes);
        if (r < 0)
                return r;

        if (!d.backup)
                r = parser_excluded_disk(p, n, &d, &extra);
        else {
                r = parser_disk_attributes(p, n, mode, &d);
                if (r >= 0)
                        r = parser_disk_children(p, n, mode, &d, &extra);
        }
        if (r < 0)
                return r;

        *ret = d;
        d = (BackupDisk) { .format = _DISK_FORMAT_INVALID };
        return 0;
}

static int parse_disk_item(XmlParser *p, xmlNode *c, void *item, void *userdata) {
        return parser_disk(p, c, *(const BackupMode *) userdata, item);
}

static int parser_disks(XmlParser *p, xmlNode *n, BackupMode mode, BackupDisk **ret, size_t *ret_n) {
        void *items = NULL;
        int r;

        r = xml_parser_items(p, n, "disk", sizeof(BackupDisk), parse_disk_item, disk_item_done, disk_name_get, &mode,
                             "leave <disks> out to back up every disk", &items, ret_n);
        if (r < 0)
                return r;
        *ret = items;
        return 0;
}

static int parser_backup(XmlParser *p, xmlNode *root, BackupDef **ret) {
        _cleanup_(backup_def_freep) BackupDef *def = NULL;
        _cleanup_free_ char *mode = NULL;
        const xmlNode *seen_incremental = NULL, *seen_server = NULL, *seen_disks = NULL;
        XmlList extra = {};
        int r;


        def = new0(BackupDef, 1);
        if (!def)
                return -ENOMEM;
        extra.strv = &def->extra_elements;

        r = xml_attr_get(root, "mode", &mode);
        if (r < 0)
                return r;
        if (mode) {
                def->mode = backup_mode_from_string(mode);
                if (def->mode < 0)
                        return xml_parser_error(p, -EINVAL, root, "<domainbackup mode='%s'>: expected 'push' or 'pull'",
                                                XML_QUOTE(mode));
        }
        r = xml_collect_attributes(root, (const char *const[]) { "mode", NULL }, NULL, &def->extra_attributes);
        if (r < 0)
                return r;

        /* <server> and <disks> depend on the mode, which comes first. */
        for (xmlNode *c = root->children; c; c = c->next) {
                r = xml_parser_skip_node(p, root, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;

                if (xml_node_is(c, "incremental")) {
                        r = xml_parser_text_once(p, c, &seen_incremental, &def->incremental);
                        if (r < 0)
                                return r;
                        r = parser_checkpoint_ref(p, c, "<incremental>", def->incremental);
                        if (r < 0)
                                return r;

                } else if (xml_node_is(c, "server")) {
                        r = xml_parser_check_once(p, c, &seen_server);
                        if (r < 0)
                                return r;
                        if (def->mode != BACKUP_MODE_PULL)
                                return xml_parser_error(p, -EINVAL, c,
                                                        "<server> is for pull mode backups; add mode='pull' to "
                                                        "<domainbackup>");
                        r = parser_server(p, c, &def->server);
                        if (r < 0)
                                return r;

                } else if (xml_node_is(c, "disks")) {
                        r = xml_parser_check_once(p, c, &seen_disks);
                        if (r < 0)
                                return r;
                        r = parser_disks(p, c, def->mode, &def->disks, &def->n_disks);
                        if (r < 0)
                                return r;

                } else {
                        r = xml_parser_keep_element(p, c, 0, &extra);
                        if (r < 0)
                                return r;
                }
        }

        *ret = TAKE_PTR(def);
        return 0;
}

static int parse_backup_document(XmlParser *p, xmlNode *root, void *userdata) {
        return parser_backup(p, root, userdata);
}

int backup_def_parse(const char *xml, size_t size, BackupDef **ret, char **ret_error) {
        BackupDef *def = NULL;
        int r;

        if (!ret || (!xml && size > 0))
                return -EINVAL;
        r = xml_parse_document(xml, size, XML_MAX_DOCUMENT_SIZE, "domainbackup", parse_backup_document, &def, ret_error);
        if (r < 0)
                return r;
        *ret = def;
        return 0;
}

/* ---- Writer ---------------------------------------------------------------- */

static int writer_check_disk(const BackupDef *def, const BackupDisk *d) {
        if (check_target(d->name))
                return -EINVAL;
        if (xml_strv_has_blank(d->extra_elements) || xml_strv_has_blank(d->extra_path_elements))
                return -EINVAL;
        if (!d->backup)
                return 0;
        if (!backup_disk_type_to_string(d->type) || !backup_disk_mode_to_string(d->mode))
                return -EINVAL;
        if (d->incremental && (d->mode == BACKUP_DISK_MODE_FULL || checkpoint_name_check(d->incremental)))
                return -EINVAL;
        if (d->format != _DISK_FORMAT_INVALID &&
            (!disk_format_to_string(d->format) || (def->mode == BACKUP_MODE_PULL && d->format != DISK_FORMAT_QCOW2)))
                return -EINVAL;
        if (d->path && xml_check_absolute_path(d->path))
                return -EINVAL;
        if ((d->export_name || d->export_bitmap) && def->mode != BACKUP_MODE_PULL)
                return -EINVAL;
        if ((d->export_name && check_export_name(d->export_name)) || (d->export_bitmap && checkpoint_bitmap_name_check(d->export_bitmap)))
                return -EINVAL;
        if (def->mode == BACKUP_MODE_PULL && d->type == BACKUP_DISK_TYPE_BLOCK && !d->path)
                return -EINVAL;
        return 0;
}

static int writer_check_def(const BackupDef *def) {
        const BackupServer *s = def->server;
        int r;

        if (!backup_mode_to_string(def->mode))
                return -EINVAL;
        if (def->incremental && checkpoint_name_check(def->incremental))
                return -EINVAL;
        if (s) {
                if (def->mode != BACKUP_MODE_PULL || !backup_transport_to_string(s->transport) || s->tls < -1 || s->tls > 1)
                        return -EINVAL;
                if (s->transport == BACKUP_TRANSPORT_UNIX &&
                    (!s->socket || xml_check_absolute_path(s->socket) || s->name || s->port != 0))
                        return -EINVAL;
                if (s->transport == BACKUP_TRANSPORT_TCP && (!s->name || xml_is_blank(s->name) || s->socket))
                        return -EINVAL;
        }
        if (xml_strv_has_blank(def->extra_elements))
                return -EINVAL;
        for (size_t i = 0; i < def->n_disks; i++) {
                r = writer_check_disk(def, &def->disks[i]);
                if (r < 0)
                        return r;
        }
        r = find_duplicate_disk(def->disks, def->n_disks, &(size_t) { 0 }, &(size_t) { 0 });
        if (r < 0)
                return r;
        return r > 0 ? -EINVAL : 0;
}

static void w_disk(XmlWriter *w, const BackupDef *def, const BackupDisk *d) {
        bool has_path, has_children;

        xml_w_printf(w, "%*s<disk", LEVEL_DISK * 2, "");
        xml_w_attr(w, "name", d->name);
        xml_w_attr(w, "backup", d->backup ? "yes" : "no");
        if (d->backup) {
                xml_w_attr(w, "type", backup_disk_type_to_string(d->type));
                if (d->mode != BACKUP_DISK_MODE_DEFAULT)
                        xml_w_attr(w, "backupmode", backup_disk_mode_to_string(d->mode));
                xml_w_attr(w, "incremental", d->incremental);
                xml_w_attr(w, "exportname", d->export_name);
                xml_w_attr(w, "exportbitmap", d->export_bitmap);
        }
        xml_w_extra_attributes(w, d->extra_attributes);

        has_path = d->backup && (d->path || d->extra_path_attributes || d->extra_path_elements);
        has_children = (d->backup && d->format >= 0) || has_path || d->extra_elements;
        if (!has_children) {
                xml_w_puts(w, "/>\n");
                return;
        }
        xml_w_puts(w, ">\n");
        if (d->backup && d->format >= 0)
                xml_w_printf(w, "%*s<driver type='%s'/>\n", (LEVEL_DISK + 1) * 2, "", disk_format_to_string(d->format));
        if (has_path) {
                xml_w_printf(w, "%*s<%s", (LEVEL_DISK + 1) * 2, "", path_element(def->mode));
                xml_w_attr(w, path_attribute(d->type), d->path);
                xml_w_extra_attributes(w, d->extra_path_attributes);
                if (d->extra_path_elements) {
                        xml_w_puts(w, ">\n");
                        xml_w_kept_list(w, LEVEL_DISK + 2, d->extra_path_elements);
                        xml_w_printf(w, "%*s</%s>\n", (LEVEL_DISK + 1) * 2, "", path_element(def->mode));
                } else
                        xml_w_puts(w, "/>\n");
        }
        xml_w_kept_list(w, LEVEL_DISK + 1, d->extra_elements);
        xml_w_printf(w, "%*s</disk>\n", LEVEL_DISK * 2, "");
}

/* libvirt's virDomainBackupDefFormat() order. */
static int write_def(XmlWriter *w, const void *userdata) {
        const BackupDef *def = userdata;
        const BackupServer *s = def->server;
        int r;

        r = writer_check_def(def);
        if (r < 0)
                return r;

        xml_w_puts(w, "<domainbackup");
        xml_w_attr(w, "mode", backup_mode_to_string(def->mode));
        xml_w_extra_attributes(w, def->extra_attributes);
        xml_w_puts(w, ">\n");
        if (def->incremental)
                xml_w_text_element(w, LEVEL_CHILD, "incremental", def->incremental);
        if (s) {
                xml_w_printf(w, "%*s<server", LEVEL_CHILD * 2, "");
                xml_w_attr(w, "transport", backup_transport_to_string(s->transport));
                if (s->tls >= 0)
                        xml_w_attr(w, "tls", s->tls ? "yes" : "no");
                xml_w_attr(w, "name", s->name);
                if (s->port > 0)
                        xml_w_printf(w, " port='%u'", (unsigned) s->port);
                xml_w_attr(w, "socket", s->socket);
                xml_w_extra_attributes(w, s->extra_attributes);
                xml_w_puts(w, "/>\n");
        }
        if (def->n_disks > 0) {
                xml_w_printf(w, "%*s<disks>\n", LEVEL_CHILD * 2, "");
                for (size_t i = 0; i < def->n_disks; i++)
                        w_disk(w, def, &def->disks[i]);
                xml_w_printf(w, "%*s</disks>\n", LEVEL_CHILD * 2, "");
        }
        xml_w_kept_list(w, LEVEL_CHILD, def->extra_elements);
        xml_w_puts(w, "</domainbackup>\n");
        return w->error;
}

int backup_def_format(const BackupDef *def, char **ret) {
        if (!def || !ret)
                return -EINVAL;
        return xml_format_to_string(write_def, def, ret);
}

/* ---- Copy ------------------------------------------------------------------ */

static int backup_disk_copy(const BackupDisk *s, BackupDisk *ret) {
        _cleanup_(backup_disk_done) BackupDisk d = {
                .backup = s->backup,
                .type = s->type,
                .mode = s->mode,
                .format = s->format,
        };

        if (xml_strdup_to(s->name, &d.name) < 0 ||
            xml_strdup_to(s->incremental, &d.incremental) < 0 ||
            xml_strdup_to(s->export_name, &d.export_name) < 0 ||
            xml_strdup_to(s->export_bitmap, &d.export_bitmap) < 0 ||
            xml_strdup_to(s->path, &d.path) < 0 ||
            xml_strv_copy(s->extra_path_elements, &d.extra_path_elements) < 0 ||
            xml_strv_copy(s->extra_path_attributes, &d.extra_path_attributes) < 0 ||
            xml_strv_copy(s->extra_attributes, &d.extra_attributes) < 0 ||
            xml_strv_copy(s->extra_elements, &d.extra_elements) < 0)
                return -ENOMEM;
        *ret = d;
        d = (BackupDisk) { .format = _DISK_FORMAT_INVALID };
        return 0;
}

static int disk_item_copy(const void *from, void *to) {
        return backup_disk_copy(from, to);
}

static int backup_server_copy(const BackupServer *s, BackupServer **ret) {
        BackupServer *c;

        if (!s) {
                *ret = NULL;
                return 0;
        }
        c = new0(BackupServer, 1);
        if (!c)
                return -ENOMEM;
        c->transport = s->transport;
        c->port = s->port;
        c->tls = s->tls;
        if (xml_strdup_to(s->name, &c->name) < 0 ||
            xml_strdup_to(s->socket, &c->socket) < 0 ||
            xml_strv_copy(s->extra_attributes, &c->extra_attributes) < 0) {
                backup_server_free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

int backup_def_copy(const BackupDef *def, BackupDef **ret) {
        _cleanup_(backup_def_freep) BackupDef *c = NULL;
        int r;

        if (!def || !ret)
                return -EINVAL;
        c = new0(BackupDef, 1);
        if (!c)
                return -ENOMEM;
        c->mode = def->mode;
        if (xml_strdup_to(def->incremental, &c->incremental) < 0 ||
            xml_strv_copy(def->extra_attributes, &c->extra_attributes) < 0 ||
            xml_strv_copy(def->extra_elements, &c->extra_elements) < 0)
                return -ENOMEM;
        r = backup_server_copy(def->server, &c->server);
        if (r < 0)
                return r;
        r = xml_items_copy(def->disks, def->n_disks, sizeof(BackupDisk), disk_item_copy, disk_item_done,
                           (void **) &c->disks, &c->n_disks);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

/* ---- Align ------------------------------------------------------------------ */

static ssize_t find_domain_disk(const DomainDef *dom, const char *target) {
        for (size_t i = 0; i < dom->n_disks; i++)
                if (streq_ptr(dom->disks[i].target, target))
                        return (ssize_t) i;
        return -1;
}

/* Fills one backed-up disk's defaults. */
static int align_disk(BackupDef *def, BackupDisk *d, const DomainDef *dom, const DomainDisk *dd,
                      const BackupDefaults *defaults, char **ret_error) {
        if (d->mode == BACKUP_DISK_MODE_DEFAULT)
                d->mode = d->incremental || def->incremental ? BACKUP_DISK_MODE_INCREMENTAL : BACKUP_DISK_MODE_FULL;
        if (d->mode == BACKUP_DISK_MODE_INCREMENTAL && !d->incremental) {
                if (!def->incremental)
                        return xml_set_error(ret_error, -QSNAP_E_INVALID_ARGUMENT,
                                           "Disk '%s' has backupmode='incremental' but names no checkpoint; give it "
                                           "incremental= or the backup an <incremental>.", d->name);
                d->incremental = strdup(def->incremental);
                if (!d->incremental)
                        return -ENOMEM;
        }
        if (d->format < 0)
                d->format = DISK_FORMAT_QCOW2;

        if (!d->path) {
                if (d->type == BACKUP_DISK_TYPE_BLOCK)
                        return xml_set_error(ret_error, -QSNAP_E_INVALID_ARGUMENT,
                                           "Disk '%s' has type 'block' but no <%s dev=…>: a device cannot be made up.",
                                           d->name, path_element(def->mode));
                if (def->mode == BACKUP_MODE_PUSH && defaults && defaults->suffix && dd->source)
                        d->path = strjoin(dd->source, ".", defaults->suffix);
                else if (def->mode == BACKUP_MODE_PULL && defaults && defaults->scratch_dir)
                        d->path = defaults->suffix
                                ? strprintf("%s/%s-%s.%s.scratch", defaults->scratch_dir, strempty(dom->uuid), dd->target,
                                            defaults->suffix)
                                : strprintf("%s/%s-%s.scratch", defaults->scratch_dir, strempty(dom->uuid), dd->target);
                else
                        goto exports;
                if (!d->path)
                        return -ENOMEM;
        }

exports:
        if (def->mode == BACKUP_MODE_PULL) {
                if (!d->export_name) {
                        d->export_name = strdup(d->name);
                        if (!d->export_name)
                                return -ENOMEM;
                }
                if (!d->export_bitmap && d->mode == BACKUP_DISK_MODE_INCREMENTAL) {
                        d->export_bitmap = strjoin("backup-", d->name);
                        if (!d->export_bitmap)
                                return -ENOMEM;
                }
        }
        return 0;
}

/* Two backed-up disks writing one file, or exporting one name, would
 * clobber each other. */
static int align_check_unique(const BackupDef *def, const BackupDisk *disks, size_t n, char **ret_error) {
        for (size_t i = 0; i < n; i++) {
                if (!disks[i].backup)
                        continue;
                for (size_t j = i + 1; j < n; j++) {
                        if (!disks[j].backup)
                                continue;
                        if (disks[i].path && streq_ptr(disks[i].path, disks[j].path))
                                return xml_set_error(ret_error, -QSNAP_E_INVALID_ARGUMENT, "Disks '%s' and '%s' would both write %s.",
                                                   disks[i].name, disks[j].name, disks[i].path);
                        if (disks[i].export_name && streq_ptr(disks[i].export_name, disks[j].export_name))
                                return xml_set_error(ret_error, -QSNAP_E_INVALID_ARGUMENT, "Disks '%s' and '%s' would both be exported as '%s'.",
                                                   disks[i].name, disks[j].name, disks[i].export_name);
                }
        }
        return 0;
}

int backup_def_align(BackupDef *def, const DomainDef *dom, const BackupDefaults *defaults, char **ret_error) {
        _cleanup_free_ ssize_t *given = NULL;
        _cleanup_free_ char *socket = NULL;
        BackupDisk *disks = NULL;
        size_t n = 0, n_backed_up = 0;
        int r;

        if (!def || !dom)
                return -EINVAL;
        if (dom->n_disks == 0)
                return xml_set_error(ret_error, -QSNAP_E_UNSUPPORTED, "Domain '%s' has no disks to back up.", dom->name);

        given = new0(ssize_t, dom->n_disks);
        if (!given)
                return -ENOMEM;
        for (size_t i = 0; i < dom->n_disks; i++)
                given[i] = -1;
        for (size_t k = 0; k < def->n_disks; k++) {
                ssize_t i = find_domain_disk(dom, def->disks[k].name);

                if (i < 0)
                        return xml_set_error(ret_error, -QSNAP_E_NO_SUCH_DISK, "Domain '%s' has no disk '%s'.", dom->name,
                                           def->disks[k].name);
                if (given[i] >= 0)
                        return xml_set_error(ret_error, -QSNAP_E_INVALID_ARGUMENT, "Disk '%s' is listed twice in the backup's <disks>.",
                                           def->disks[k].name);
                given[i] = (ssize_t) k;
        }

        disks = new0(BackupDisk, dom->n_disks);
        if (!disks)
                return -ENOMEM;
        for (size_t i = 0; i < dom->n_disks; i++) {
                const DomainDisk *dd = &dom->disks[i];
                BackupDisk *d = &disks[i];

                if (given[i] >= 0) {
                        r = backup_disk_copy(&def->disks[given[i]], d);
                        if (r < 0)
                                goto fail;
                } else {
                        *d = (BackupDisk) { .format = _DISK_FORMAT_INVALID };
                        d->name = strdup(dd->target);
                        if (!d->name) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        /* Without <disks>: every disk that can change; with
                         * <disks>: only those listed (libvirt). */
                        d->backup = def->n_disks == 0 && !dd->readonly;
                }
                n++;
                if (!d->backup)
                        continue;
                n_backed_up++;
                r = align_disk(def, d, dom, dd, defaults, ret_error);
                if (r < 0)
                        goto fail;
        }
        if (n_backed_up == 0) {
                r = xml_set_error(ret_error, -QSNAP_E_INVALID_ARGUMENT, "No disk of domain '%s' would be backed up.", dom->name);
                goto fail;
        }
        r = align_check_unique(def, disks, n, ret_error);
        if (r < 0)
                goto fail;

        if (def->mode == BACKUP_MODE_PULL && !def->server && defaults && defaults->socket) {
                socket = strdup(defaults->socket);
                def->server = new0(BackupServer, 1);
                if (!socket || !def->server) {
                        def->server = mfree(def->server);
                        r = -ENOMEM;
                        goto fail;
                }
                def->server->transport = BACKUP_TRANSPORT_UNIX;
                def->server->socket = TAKE_PTR(socket);
                def->server->tls = -1;
        }

        backup_disks_free(def->disks, def->n_disks);
        def->disks = disks;
        def->n_disks = n;
        return 0;

fail:
        backup_disks_free(disks, n);
        return r;
}
