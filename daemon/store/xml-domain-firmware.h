/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The <os><loader>/<nvram> part of the <domain> codec, for xml-domain.c
 * only (libxml2 types): parse, write back, copy, free.
 */
#pragma once

#include "store/xml-domain.h"
#include "store/xml-util.h"

/* n is a child of <os>: 1 when it was <loader> or <nvram> (parsed into
 * def->firmware), 0 when it is something else, < 0 on a bad one. */
int xml_domain_firmware_parse(XmlParser *p, const xmlNode *n, const xmlNode **seen_loader,
                              const xmlNode **seen_nvram, DomainDef *def);
/* After <os>: an <nvram> needs a <loader>. */
int xml_domain_firmware_check(XmlParser *p, const xmlNode *os, DomainDef *def);
/* -EINVAL when what would be written could not be read back. */
int xml_domain_firmware_check_write(const DomainFirmware *f);
void xml_domain_firmware_write(XmlWriter *w, const DomainFirmware *f);
int xml_domain_firmware_copy(const DomainFirmware *f, DomainFirmware *ret);
void xml_domain_firmware_done(DomainFirmware *f);
