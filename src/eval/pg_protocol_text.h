/* pg_protocol_text.h: a protocol written as pgverify options ("--protocol sliding --seq-len 2048
 * --stride 64 --tail-dup"), the form in which an arch's follows.protocol and an artifact's
 * provenance.protocol record the protocol of a record's figure (spec/eval.md §7.1, §9). pgverify
 * reads a record's protocol with it and pglegal replays it. */
#ifndef PG_PROTOCOL_TEXT_H
#define PG_PROTOCOL_TEXT_H

#include "pg_eval.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Read text into *p: the defaults of its --protocol (sliding when absent), then each option in
 * order, with the ranges of pgverify's options; the result must pass pg_protocol_validate.
 * Returns 0 when it reads, 1 for anything else (an option that is not a protocol option, a bad
 * value, more than 1023 bytes or 256 words); *p is changed only on success. */
int pg_protocol_from_text(const char *text, pg_protocol *p);

/* One protocol option by its pgverify name (without "--"; value NULL for a flag) onto *p, with the
 * ranges of pgverify's options: 0 when it applies, 1 for a bad value, -1 when name is not a
 * protocol option ("protocol" itself included: the caller chooses the defaults). */
int pg_protocol_option(pg_protocol *p, const char *name, const char *value);

#ifdef __cplusplus
}
#endif
#endif
