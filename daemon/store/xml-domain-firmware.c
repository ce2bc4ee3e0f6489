/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * <os><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
 *     <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd' format='raw|qcow2'>PATH</nvram>
 * as libvirt writes them. qsnapd runs UEFI as two pflash devices: the code
 * read-only, the variable store the domain's own. Other loader types
 * ('rom') and a writable loader (one combined image) are refused with the
 * reason, not ignored: the guest would boot something else than asked.
 */
#include "store/xml-domain-firmware.h"

static int parse_loader(XmlParser *p, const xmlNode *n, DomainDef *def) {
        _cleanup_free_ char *readonly = NULL, *type = NULL, *secure = NULL;
        const char *problem;
        int r;

        if ((r = xml_attr_get(n, "readonly", &readonly)) < 0 || (r = xml_attr_get(n, "type", &type)) < 0 ||
            (r = xml_attr_get(n, "secure", &secure)) < 0)
                return r;
        if (!streq_ptr(type, "pflash"))
                return xml_parser_error(p, -EINVAL, n, "<loader type='%s'>: qsnapd runs firmware as pflash only "
                                        "(type='pflash')", XML_QUOTE(strna(type)));
        if (!streq_ptr(readonly, "yes"))
                return xml_parser_error(p, -EINVAL, n, "<loader> must be readonly='yes' with its variables in "
                                        "<nvram> (a combined, writable firmware image is not supported)");
        if (secure && !streq(secure, "no"))
                return xml_parser_error(p, -EINVAL, n, "<loader secure='%s'>: Secure Boot (SMM) is not supported",
                                        XML_QUOTE(secure));
        r = xml_node_text(p, n, &def->firmware.loader);
        if (r < 0)
                return r;
        problem = xml_check_absolute_path(def->firmware.loader);
        return problem ? xml_parser_error(p, -EINVAL, n, "<loader> '%s' %s", XML_QUOTE(def->firmware.loader), problem)
                       : 0;
}

static int parse_nvram(XmlParser *p, const xmlNode *n, DomainDef *def) {
        _cleanup_free_ char *format = NULL, *text = NULL;
        DomainFirmware *f = &def->firmware;
        const char *problem;
        int r;

        if ((r = xml_attr_get(n, "template", &f->nvram_template)) < 0 || (r = xml_attr_get(n, "format", &format)) < 0)
                return r;
        if (f->nvram_template && (problem = xml_check_absolute_path(f->nvram_template)))
                return xml_parser_error(p, -EINVAL, n, "<nvram template='%s'> %s", XML_QUOTE(f->nvram_template), problem);
        f->nvram_format = DISK_FORMAT_RAW;
        if (format) {
                f->nvram_format = disk_format_from_string(format);
                if (f->nvram_format < 0)
                        return xml_parser_error(p, -EINVAL, n, "<nvram format='%s'>: raw or qcow2", XML_QUOTE(format));
                f->nvram_format_given = true;
        }
        r = xml_node_text(p, n, &text);
        if (r < 0)
                return r;
        if (!xml_is_blank(text ?: "")) {
                problem = xml_check_absolute_path(text);
                if (problem)
                        return xml_parser_error(p, -EINVAL, n, "<nvram> '%s' %s", XML_QUOTE(text), problem);
                f->nvram = TAKE_PTR(text);
        }
        return 0;
}

int xml_domain_firmware_parse(XmlParser *p, const xmlNode *n, const xmlNode **seen_loader,
                              const xmlNode **seen_nvram, DomainDef *def) {
        int r;

        if (xml_node_is(n, "loader")) {
                r = xml_parser_check_once(p, n, seen_loader);
                if (r >= 0)
                        r = parse_loader(p, n, def);
                return r < 0 ? r : 1;
        }
        if (xml_node_is(n, "nvram")) {
                r = xml_parser_check_once(p, n, seen_nvram);
                if (r >= 0)
                        r = parse_nvram(p, n, def);
                return r < 0 ? r : 1;
        }
        return 0;
}

int xml_domain_firmware_check(XmlParser *p, const xmlNode *os, DomainDef *def) {
        DomainFirmware *f = &def->firmware;

        if (!f->loader && (f->nvram || f->nvram_template || f->nvram_format_given))
                return xml_parser_error(p, -EINVAL, os, "<nvram> needs a <loader type='pflash'>");
        return 0;
}

int xml_domain_firmware_check_write(const DomainFirmware *f) {
        if ((f->loader && xml_check_absolute_path(f->loader)) || (f->nvram && xml_check_absolute_path(f->nvram)) ||
            (f->nvram_template && xml_check_absolute_path(f->nvram_template)))
                return -EINVAL;
        if (!f->loader && (f->nvram || f->nvram_template))
                return -EINVAL;
        return 0;
}

/* Double quotes, as libvirt writes these elements. */
static void w_attr(XmlWriter *w, const char *name, const char *value) {
        if (!value)
                return;
        xml_w_printf(w, " %s=\"", name);
        xml_w_escaped(w, value, true);
        xml_w_puts(w, "\"");
}

void xml_domain_firmware_write(XmlWriter *w, const DomainFirmware *f) {
        if (!f->loader)
                return;
        xml_w_puts(w, "    <loader readonly=\"yes\" type=\"pflash\">");
        xml_w_escaped(w, f->loader, false);
        xml_w_puts(w, "</loader>\n");
        if (!f->nvram && !f->nvram_template && !f->nvram_format_given)
                return;
        xml_w_puts(w, "    <nvram");
        w_attr(w, "template", f->nvram_template);
        if (f->nvram_format_given || f->nvram_format != DISK_FORMAT_RAW)
                w_attr(w, "format", disk_format_to_string(f->nvram_format));
        if (!f->nvram) {
                xml_w_puts(w, "/>\n");
                return;
        }
        xml_w_puts(w, ">");
        xml_w_escaped(w, f->nvram, false);
        xml_w_puts(w, "</nvram>\n");
}

int xml_domain_firmware_copy(const DomainFirmware *f, DomainFirmware *ret) {
        *ret = (DomainFirmware) { .nvram_format = f->nvram_format, .nvram_format_given = f->nvram_format_given };
        if (xml_strdup_to(f->loader, &ret->loader) < 0 || xml_strdup_to(f->nvram, &ret->nvram) < 0 ||
            xml_strdup_to(f->nvram_template, &ret->nvram_template) < 0) {
                xml_domain_firmware_done(ret);
                return -ENOMEM;
        }
        return 0;
}

void xml_domain_firmware_done(DomainFirmware *f) {
        free(f->loader);
        free(f->nvram);
        free(f->nvram_template);
        *f = (DomainFirmware) {};
}
