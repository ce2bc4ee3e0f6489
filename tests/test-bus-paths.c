/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The object paths of the bus layer (daemon/bus/bus-domain.c): a domain's
 * snapshots and jobs live at <domain path>/<kind>/<name>, every element
 * escaped with sd_bus_path_encode(), and the finders' decoder gives back
 * the domain and the name for exactly those paths, whatever characters
 * the names hold.
 */
#include "bus/bus-domain.h"
#include "test-check.h"

/* Names a client may choose: the encoding must survive every one. */
static const char *const names[] = {
        "vm1", "my vm/1", "_", "a_2fb", "ünïcödé", "with.dot-and-dash", "/", "x/y/z", "snapshot", "job",
};

static void test_round_trips(void) {
        DomainDef defs[ELEMENTSOF(names)] = {};
        Domain domains[ELEMENTSOF(names)] = {};
        Manager manager = {};
        Bus bus = { .manager = &manager };

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                defs[i].name = (char *) names[i];
                domains[i].def = &defs[i];
                domains[i].next = i + 1 < ELEMENTSOF(names) ? &domains[i + 1] : NULL;
        }
        manager.domains = &domains[0];

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                for (size_t k = 0; k < ELEMENTSOF(names); k++) {
                        _cleanup_free_ char *domain_path = bus_domain_path(&domains[i]);
                        _cleanup_free_ char *snap = bus_domain_child_path(&domains[i], "snapshot", names[k]);
                        _cleanup_free_ char *job = bus_domain_child_path(&domains[i], "job", names[k]);
                        _cleanup_free_ char *got_name = NULL, *expected = NULL;
                        Domain *got = NULL;

                        CHECK(domain_path && snap && job);
                        if (!domain_path || !snap || !job)
                                continue;
                        CHECK(sd_bus_object_path_is_valid(snap));
                        expected = strjoin(domain_path, "/snapshot/");
                        CHECK(expected && strncmp(snap, expected, strlen(expected)) == 0);
                        CHECK(!strchr(snap + strlen(expected), '/'));

                        CHECK(bus_domain_child_decode(&bus, snap, "snapshot", &got, &got_name) == 1);
                        CHECK(got == &domains[i]);
                        CHECK_STREQ(got_name, names[k]);
                        got_name = mfree(got_name);
                        CHECK(bus_domain_child_decode(&bus, job, "job", &got, &got_name) == 1);
                        CHECK(got == &domains[i]);
                        CHECK_STREQ(got_name, names[k]);
                        got_name = mfree(got_name);

                        /* Another kind's path is not this kind's. */
                        CHECK(bus_domain_child_decode(&bus, snap, "job", &got, &got_name) == 0);
                        CHECK(bus_domain_child_decode(&bus, job, "snapshot", &got, &got_name) == 0);
                        CHECK(bus_domain_child_decode(&bus, domain_path, "snapshot", &got, &got_name) == 0);
                }
}

static void test_not_ours(void) {
        DomainDef def = { .name = (char *) "vm1" };
        Domain d = { .def = &def };
        Manager manager = { .domains = &d };
        Bus bus = { .manager = &manager };
        _cleanup_free_ char *name = NULL;
        Domain *got = NULL;

        /* An unknown domain, a deeper or a shorter path, another prefix. */
        CHECK(bus_domain_child_decode(&bus, QSNAP_DOMAIN_PREFIX "/vm2/snapshot/s1", "snapshot", &got, &name) == 0);
        CHECK(bus_domain_child_decode(&bus, QSNAP_DOMAIN_PREFIX "/vm1/snapshot/s1/x", "snapshot", &got, &name) == 0);
        CHECK(bus_domain_child_decode(&bus, QSNAP_DOMAIN_PREFIX "/vm1/snapshot", "snapshot", &got, &name) == 0);
        CHECK(bus_domain_child_decode(&bus, "/org/example/Other/domain/vm1/snapshot/s1", "snapshot", &got, &name) == 0);
        CHECK(got == NULL && name == NULL);
        CHECK(bus_domain_child_decode(&bus, QSNAP_DOMAIN_PREFIX "/vm1/snapshot/s1", "snapshot", &got, &name) == 1);
        CHECK(got == &d);
        CHECK_STREQ(name, "s1");
}

int main(void) {
        test_round_trips();
        test_not_ours();
        return test_summary();
}
