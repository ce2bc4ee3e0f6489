/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The metadata store's journal records (store.c has the format): encoded
 * for one append, and replayed onto the index up to the first record that
 * is torn, damaged or does not apply.
 */
#include <inttypes.h>
#include <stdio.h>

#include "store/store-internal.h"

/* ---- CRC-32 (IEEE 802.3, reflected, as zlib's crc32()) ---- */

static uint32_t crc32_table[256];

static void crc32_init(void) {
        if (crc32_table[1] != 0)
                return;
        for (uint32_t i = 0; i < 256; i++) {
                uint32_t c = i;

                for (unsigned k = 0; k < 8; k++)
                        c = c & 1 ? 0xEDB88320U ^ (c >> 1) : c >> 1;
                crc32_table[i] = c;
        }
}

static uint32_t crc32_update(uint32_t crc, const void *data, size_t n) {
        const uint8_t *p = data;

        crc32_init();
        crc = ~crc;
        while (n-- > 0)
                crc = crc32_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
        return ~crc;
}

/* ---- the journal ---- */

static size_t decimal_digits(size_t n) {
        size_t d = 1;

        while (n >= 10) {
                n /= 10;
                d++;
        }
        return d;
}

static size_t op_encoded_size(const Op *op) {
        switch (op->type) {
        case STORE_OP_PUT:
                return 2 + decimal_digits(op->name_len) + 1 + decimal_digits(op->xml_len) + 1 + op->name_len + 1 +
                        op->xml_len + 1;
        case STORE_OP_DELETE:
        case STORE_OP_CURRENT:
                if (!op->name)
                        return 4;
                return 2 + decimal_digits(op->name_len) + 1 + op->name_len + 1;
        }
        return 0;
}

int record_encode(uint64_t gen, const Op *ops, size_t n_ops, char **ret, size_t *ret_size) {
        static const char letters[] = { [STORE_OP_PUT] = 'P', [STORE_OP_DELETE] = 'D', [STORE_OP_CURRENT] = 'C' };
        char header[RECORD_HEADER_SIZE + 1], *buf, *p;
        size_t payload = 0;
        uint32_t crc;

        for (size_t i = 0; i < n_ops; i++)
                payload += op_encoded_size(ops + i);
        if (payload > UINT32_MAX)
                return -EFBIG;

        buf = malloc(RECORD_HEADER_SIZE + payload + 1);
        if (!buf)
                return -ENOMEM;
        p = buf + RECORD_HEADER_SIZE;
        for (size_t i = 0; i < n_ops; i++) {
                const Op *op = ops + i;

                if (!op->name) {
                        p = stpcpy(p, "C -\n");
                        continue;
                }
                if (op->type == STORE_OP_PUT)
                        p += sprintf(p, "P %zu %zu\n", op->name_len, op->xml_len);
                else
                        p += sprintf(p, "%c %zu\n", letters[op->type], op->name_len);
                memcpy(p, op->name, op->name_len);
                p += op->name_len;
                *p++ = '\n';
                if (op->type == STORE_OP_PUT) {
                        memcpy(p, op->xml, op->xml_len);
                        p += op->xml_len;
                        *p++ = '\n';
                }
        }
        assert((size_t) (p - buf) == RECORD_HEADER_SIZE + payload);

        snprintf(header, sizeof(header), RECORD_MAGIC "%016" PRIx64 " %08" PRIx32 " ", gen, (uint32_t) payload);
        crc = crc32_update(0, header, RECORD_CRC_SPAN);
        crc = crc32_update(crc, buf + RECORD_HEADER_SIZE, payload);
        snprintf(header + RECORD_CRC_SPAN, sizeof(header) - RECORD_CRC_SPAN, "%08" PRIx32 "\n", crc);
        memcpy(buf, header, RECORD_HEADER_SIZE);

        *ret = buf;
        *ret_size = RECORD_HEADER_SIZE + payload;
        return 0;
}

static int parse_hex(const char *p, size_t digits, uint64_t *ret) {
        uint64_t v = 0;

        for (size_t i = 0; i < digits; i++) {
                char c = p[i];

                if (c >= '0' && c <= '9')
                        v = v << 4 | (uint64_t) (c - '0');
                else if (c >= 'a' && c <= 'f')
                        v = v << 4 | (uint64_t) (c - 'a' + 10);
                else
                        return -EINVAL;
        }
        *ret = v;
        return 0;
}

static int record_parse_header(const char *p, uint64_t *ret_gen, uint32_t *ret_len, uint32_t *ret_crc) {
        uint64_t len, crc;

        if (memcmp(p, RECORD_MAGIC, 5) != 0 || p[21] != ' ' || p[30] != ' ' || p[39] != '\n' ||
            parse_hex(p + 5, 16, ret_gen) < 0 || parse_hex(p + 22, 8, &len) < 0 || parse_hex(p + 31, 8, &crc) < 0)
                return -EBADMSG;
        *ret_len = (uint32_t) len;
        *ret_crc = (uint32_t) crc;
        return 0;
}

/* Decimal without leading zeros, then `term`. */
static int parse_decimal(const char **p, const char *end, char term, size_t *ret) {
        const char *q = *p;
        size_t v = 0;

        if (q >= end || *q < '0' || *q > '9' || (*q == '0' && q + 1 < end && q[1] != term))
                return -EBADMSG;
        for (; q < end && *q >= '0' && *q <= '9'; q++) {
                if (v > (SIZE_MAX - 9) / 10)
                        return -EBADMSG;
                v = v * 10 + (size_t) (*q - '0');
        }
        if (q >= end || *q != term)
                return -EBADMSG;
        *p = q + 1;
        *ret = v;
        return 0;
}

/* One length-prefixed field followed by "\n". */
static int parse_field(const char **p, const char *end, size_t len, const char **ret) {
        if ((size_t) (end - *p) < len + 1 || (*p)[len] != '\n')
                return -EBADMSG;
        *ret = *p;
        *p += len + 1;
        return 0;
}

static int record_parse_payload(const char *p, size_t size, Op **ret_ops, size_t *ret_n) {
        _cleanup_free_ Op *ops = NULL;
        const char *end = p + size;
        size_t n = 0, allocated = 0;

        while (p < end) {
                Op op = {};
                int r = 0;

                if (end - p < 4 || p[1] != ' ')
                        return -EBADMSG;
                if (n >= allocated) {
                        size_t a = allocated ? allocated * 2 : 4;
                        Op *o = reallocarray(ops, a, sizeof(Op));
                        if (!o)
                                return -ENOMEM;
                        ops = o;
                        allocated = a;
                }
                switch (p[0]) {
                case 'P':
                        op.type = STORE_OP_PUT;
                        p += 2;
                        r = parse_decimal(&p, end, ' ', &op.name_len);
                        if (r >= 0)
                                r = parse_decimal(&p, end, '\n', &op.xml_len);
                        if (r >= 0)
                                r = parse_field(&p, end, op.name_len, &op.name);
                        if (r >= 0)
                                r = parse_field(&p, end, op.xml_len, &op.xml);
                        break;
                case 'D':
                case 'C':
                        op.type = p[0] == 'D' ? STORE_OP_DELETE : STORE_OP_CURRENT;
                        if (op.type == STORE_OP_CURRENT && memcmp(p, "C -\n", 4) == 0) {
                                p += 4;
                                break;
                        }
                        p += 2;
                        r = parse_decimal(&p, end, '\n', &op.name_len);
                        if (r >= 0)
                                r = parse_field(&p, end, op.name_len, &op.name);
                        break;
                default:
                        return -EBADMSG;
                }
                if (r < 0)
                        return r;
                if ((op.name && op.name_len == 0) || (op.type == STORE_OP_PUT && op.xml_len == 0))
                        return -EBADMSG;
                ops[n++] = op;
        }
        if (n == 0)
                return -EBADMSG;
        *ret_ops = TAKE_PTR(ops);
        *ret_n = n;
        return 0;
}

/* Applies the records of generation base_gen onto idx, skips older ones,
 * and stops at the first record that is torn, damaged or does not apply. */
int journal_replay(const Store *s, const char *buf, size_t size, uint64_t base_gen, Index *idx, JournalResult *ret) {
        uint64_t last_gen = 0;
        const char *why = NULL;
        size_t off = 0;
        bool torn = false;
        int r;

        while (off < size) {
                _cleanup_free_ Op *ops = NULL;
                uint32_t len, crc;
                uint64_t gen;
                size_t n_ops;
                Txn t;

                if (size - off < RECORD_HEADER_SIZE) {
                        why = "incomplete record header";
                        torn = true;
                        break;
                }
                if (record_parse_header(buf + off, &gen, &len, &crc) < 0) {
                        why = "malformed record header";
                        break;
                }
                if (len > size - off - RECORD_HEADER_SIZE) {
                        why = "incomplete record";
                        torn = true;
                        break;
                }
                if (crc32_update(crc32_update(0, buf + off, RECORD_CRC_SPAN), buf + off + RECORD_HEADER_SIZE, len) != crc) {
                        why = "record with a bad CRC";
                        break;
                }
                if (gen < last_gen) {
                        why = "record whose generation goes backwards";
                        break;
                }
                last_gen = gen;
                if (gen < base_gen) {
                        /* Already in the bulk file: a crash came between its
                         * rename and the journal's replacement. */
                        ret->n_stale++;
                        off += RECORD_HEADER_SIZE + len;
                        continue;
                }
                if (gen > base_gen) {
                        why = "record of a generation newer than the bulk file's";
                        break;
                }
                r = record_parse_payload(buf + off + RECORD_HEADER_SIZE, len, &ops, &n_ops);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        why = "malformed record";
                        break;
                }

                r = txn_begin(&t, idx, n_ops);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n_ops && r >= 0; i++)
                        r = txn_apply(&t, idx, ops + i);
                if (r < 0) {
                        txn_rollback(&t, idx);
                        if (r == -ENOMEM)
                                return r;
                        why = "record that does not apply to the entries before it";
                        break;
                }
                txn_finish(&t);
                off += RECORD_HEADER_SIZE + len;
        }

        if (off < size) {
                /* An interrupted append is the expected leftover of a crash;
                 * anything else is damage. */
                log_full_errno(torn ? LOG_NOTICE : LOG_WARNING, 0,
                               "%s: %s at offset %zu; ignoring the %zu bytes from there on. The next change rewrites the files.",
                               s->journal_path, why, off, size - off);
        }
        ret->valid_size = off;
        ret->ignored_bytes = size - off;
        return 0;
}
