/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers of fuzz.h: quiet logging, temporary folders and files, splitting
 * an input into parts, what the XML targets check alike. The folders the targets use are flat.
 */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "store/xml-domain.h"
#include "util/error.h"
#include "util/util.h"

void fuzz_setup(void) {
        static bool done;

        if (done)
                return;
        done = true;
        log_set_max_level(getenv("FUZZ_DEBUG") ? LOG_DEBUG : LOG_CRIT);
}

char *fuzz_mkdtemp(void) {
        const char *tmp = getenv("TMPDIR");
        char *dir;

        dir = strjoin(isempty(tmp) ? "/tmp" : tmp, "/qsnap-fuzz-XXXXXX");
        FUZZ_CHECK(dir);
        FUZZ_CHECK(mkdtemp(dir));
        return dir;
}

void fuzz_rmdir(char *dir) {
        DIR *d;
        struct dirent *de;

        if (!dir)
                return;
        d = opendir(dir);
        FUZZ_CHECK(d);
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        FUZZ_CHECK(unlinkat(dirfd(d), de->d_name, 0) == 0);
        closedir(d);
        FUZZ_CHECK(rmdir(dir) == 0);
        free(dir);
}

void fuzz_write_file(const char *dir, const char *name, const void *data, size_t size) {
        _cleanup_free_ char *path = strjoin(dir, "/", name);
        int fd;

        FUZZ_CHECK(path);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        FUZZ_CHECK(fd >= 0);
        for (size_t done = 0; done < size;) {
                ssize_t k = write(fd, (const char *) data + done, size - done);
                FUZZ_CHECK(k > 0);
                done += (size_t) k;
        }
        FUZZ_CHECK(close(fd) == 0);
}

size_t fuzz_split(const uint8_t *data, size_t size, const char *sep, const uint8_t **parts, size_t *sizes,
                  size_t max) {
        size_t n = 0, seplen = strlen(sep);
        const uint8_t *p = data, *end = data + size;

        while (n + 1 < max) {
                const uint8_t *at = memmem(p, end - p, sep, seplen);
                if (!at)
                        break;
                parts[n] = p;
                sizes[n++] = at - p;
                p = at + seplen;
        }
        parts[n] = p;
        sizes[n++] = end - p;
        return n;
}

void fuzz_check_xml_refusal(int r, const char *message) {
        FUZZ_CHECK(IN_SET(r, -QSNAP_E_INVALID_XML, -EINVAL, -EBADMSG, -EFBIG, -ENOMEM));
        FUZZ_CHECK(message);
}

bool fuzz_strv_same(char **a, char **b) {
        for (; a && *a; a++, b++)
                if (!b || !*b || !streq(*a, *b))
                        return false;
        return !b || !*b;
}

DomainDef *fuzz_two_disk_domain(void) {
        static const char xml[] =
                "<domain type='kvm'><name>fuzz</name><uuid>6b1f3c52-8d2e-4c1a-9a57-0c4a8f1e2d3b</uuid>"
                "<memory unit='MiB'>64</memory><vcpu>1</vcpu><devices>"
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/srv/vm/a.qcow2'/>"
                "<target dev='vda' bus='virtio'/></disk>"
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/srv/vm/b.qcow2'/>"
                "<target dev='vdb' bus='virtio'/><readonly/></disk>"
                "</devices></domain>";
        _cleanup_free_ char *message = NULL;
        DomainDef *dom = NULL;

        FUZZ_CHECK(domain_def_parse(xml, strlen(xml), &dom, &message) == 0);
        return dom;
}
