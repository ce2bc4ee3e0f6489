/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvirt's I/O threads in the <domain> codec (private to it):
 * <iothreads>N</iothreads>, <iothreadids><iothread id='K'/>…</iothreadids>
 * and a virtio disk's <driver iothread='K'/>. The two domain elements are
 * kept verbatim for GetXMLDesc; the ids they define (libvirt's rule: the
 * given ids, then the lowest unused ones up to the count) land in
 * DomainDef.iothread_ids for the launch. What qsnapd would not honour is
 * refused with the reason, not ignored: pinning and scheduling of I/O
 * threads (<cputune><iothreadpin|iothreadsched>), thread pools and polling
 * (<iothread thread_pool_*=…>, <poll>), <defaultiothread>, and a
 * controller's (virtio-scsi's), a CD-ROM's or a non-virtio disk's
 * iothread=.
 */
#include <inttypes.h>

#include "store/xml-domain-internal.h"

static int parse_count(XmlParser *p, const xmlNode *n, DomainDevicesSeen *seen) {
        _cleanup_free_ char *text = NULL;
        const char *number;
        uint64_t v;
        int r;

        r = xml_parser_check_once(p, n, &seen->iothreads);
        if (r >= 0)
                r = xml_node_text(p, n, &text);
        if (r < 0)
                return r;
        number = xml_strip_blank(text ?: (char[]) { "" });
        r = xml_parse_u64(number, &v);
        if (r < 0)
                return xml_parser_error(p, -EINVAL, n, "<iothreads> is not a valid count: '%s'", XML_QUOTE(number));
        if (v > DOMAIN_IOTHREADS_MAX)
                return xml_parser_error(p, -EINVAL, n, "<iothreads> %" PRIu64 " is more than qsnapd's limit of %u",
                                        v, DOMAIN_IOTHREADS_MAX);
        seen->iothreads_count = (unsigned) v;
        return 1;
}

static int parse_one_id(XmlParser *p, const xmlNode *c, DomainDef *def) {
        _cleanup_free_ char *id = NULL;
        uint64_t v;
        int r;

        if (!xml_node_is(c, "iothread"))
                return xml_parser_error(p, -EINVAL, c, "<iothreadids> may only hold <iothread id=…/>, not <%s>",
                                        (const char *) c->name);
        for (const xmlAttr *a = c->properties; a; a = a->next)
                if (!xmlStrEqual(a->name, BAD_CAST "id"))
                        return xml_parser_error(p, -EINVAL, c,
                                                "<iothread %s=…> is not supported: qsnapd runs each I/O thread with "
                                                "QEMU's defaults (no thread pool or polling settings)",
                                                (const char *) a->name);
        for (const xmlNode *g = c->children; g; g = g->next)
                if (g->type == XML_ELEMENT_NODE)
                        return xml_parser_error(p, -EINVAL, g,
                                                "<iothread><%s> is not supported: qsnapd runs each I/O thread with "
                                                "QEMU's defaults (no polling settings)", (const char *) g->name);
        r = xml_attr_get(c, "id", &id);
        if (r < 0)
                return r;
        if (!id)
                return xml_parser_error(p, -EINVAL, c, "<iothread> has no id= attribute");
        r = xml_parse_u64(id, &v);
        if (r < 0 || v == 0 || v > UINT32_MAX)
                return xml_parser_error(p, -EINVAL, c, "<iothread id='%s'> must be a number from 1 to %" PRIu32,
                                        XML_QUOTE(id), UINT32_MAX);
        for (size_t i = 0; i < def->n_iothread_ids; i++)
                if (def->iothread_ids[i] == v)
                        return xml_parser_error(p, -EINVAL, c, "<iothread id='%s'> appears more than once",
                                                XML_QUOTE(id));
        if (def->n_iothread_ids >= DOMAIN_IOTHREADS_MAX)
                return xml_parser_error(p, -EINVAL, c, "more than qsnapd's limit of %u <iothread> elements",
                                        DOMAIN_IOTHREADS_MAX);
        if (!def->iothread_ids) {
                def->iothread_ids = calloc(DOMAIN_IOTHREADS_MAX, sizeof(unsigned));
                if (!def->iothread_ids)
                        return -ENOMEM;
        }
        def->iothread_ids[def->n_iothread_ids++] = (unsigned) v;
        return 0;
}

static int parse_ids(XmlParser *p, const xmlNode *n, DomainDevicesSeen *seen, DomainDef *def) {
        int r;

        r = xml_parser_check_once(p, n, &seen->iothreadids);
        if (r < 0)
                return r;
        for (const xmlNode *c = n->children; c; c = c->next) {
                r = xml_parser_skip_node(p, n, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                r = parse_one_id(p, c, def);
                if (r < 0)
                        return r;
        }
        return 1;
}

int xml_domain_iothreads_parse_domain_child(XmlParser *p, xmlNode *n, DomainDevicesSeen *seen, DomainDef *def) {
        if (xml_node_is(n, "iothreads"))
                return parse_count(p, n, seen);
        if (xml_node_is(n, "iothreadids"))
                return parse_ids(p, n, seen, def);
        if (xml_node_is(n, "defaultiothread"))
                return xml_parser_error(p, -EINVAL, n, "<defaultiothread> is not supported: qsnapd leaves QEMU's "
                                        "main loop with its defaults");
        if (xml_node_is(n, "cputune"))
                for (const xmlNode *c = n->children; c; c = c->next)
                        if (c->type == XML_ELEMENT_NODE &&
                            (xml_node_is(c, "iothreadpin") || xml_node_is(c, "iothreadsched")))
                                return xml_parser_error(p, -EINVAL, c,
                                                        "<cputune><%s> is not supported: qsnapd does not pin or "
                                                        "schedule I/O threads", (const char *) c->name);
        return 0;
}

int xml_domain_iothreads_check_device(XmlParser *p, const xmlNode *n) {
        for (const xmlNode *c = n->children; c; c = c->next)
                if (c->type == XML_ELEMENT_NODE && xml_node_is(c, "driver") && xmlHasProp(c, BAD_CAST "iothread"))
                        return xml_parser_error(p, -EINVAL, c,
                                                "<%s><driver iothread=…> is not supported: only virtio disks "
                                                "(<disk device='disk'> with <target bus='virtio'>) run in an I/O "
                                                "thread", (const char *) n->name);
        return 0;
}

int xml_domain_parse_disk_iothread(XmlParser *p, const xmlNode *c, DomainDisk *d) {
        _cleanup_free_ char *id = NULL;
        uint64_t v;
        int r;

        r = xml_attr_get(c, "iothread", &id);
        if (r < 0 || !id)
                return r;
        r = xml_parse_u64(id, &v);
        if (r < 0 || v == 0 || v > UINT32_MAX)
                return xml_parser_error(p, -EINVAL, c, "disk <driver iothread='%s'> must be a number from 1 to %" PRIu32,
                                        XML_QUOTE(id), UINT32_MAX);
        d->iothread = (unsigned) v;
        return 0;
}

static bool has_id(const DomainDef *def, unsigned id) {
        for (size_t i = 0; i < def->n_iothread_ids; i++)
                if (def->iothread_ids[i] == id)
                        return true;
        return false;
}

int xml_domain_iothreads_finish(XmlParser *p, const xmlNode *root, const DomainDevicesSeen *seen, DomainDef *def) {
        /* libvirt: fewer <iothread> than <iothreads> get the lowest unused
         * ids; more raise the count. */
        for (unsigned id = 1; def->n_iothread_ids < seen->iothreads_count; id++) {
                if (has_id(def, id))
                        continue;
                if (!def->iothread_ids) {
                        def->iothread_ids = calloc(DOMAIN_IOTHREADS_MAX, sizeof(unsigned));
                        if (!def->iothread_ids)
                                return -ENOMEM;
                }
                def->iothread_ids[def->n_iothread_ids++] = id;
        }
        for (size_t i = 0; i < def->n_disks; i++) {
                const DomainDisk *d = &def->disks[i];

                if (d->iothread == 0)
                        continue;
                if (!streq_ptr(d->bus, "virtio"))
                        return xml_parser_error(p, -EINVAL, root,
                                                "disk '%s': <driver iothread='%u'> needs <target bus='virtio'>, not "
                                                "bus='%s' (only virtio disks run in an I/O thread)",
                                                XML_QUOTE(d->target), d->iothread, XML_QUOTE(strna(d->bus)));
                if (!has_id(def, d->iothread))
                        return xml_parser_error(p, -EINVAL, root,
                                                "disk '%s': <driver iothread='%u'> names no I/O thread of the domain "
                                                "(%zu defined by <iothreads>/<iothreadids>)",
                                                XML_QUOTE(d->target), d->iothread, def->n_iothread_ids);
        }
        return 0;
}
