/*
 * sparsecomp runtime — progress of an intermittent inference (save_compressed_model(..., intermittent=True)).
 *
 * An intermittent model runs as numbered units (copy the input into NVM, then one unit per layer or
 * per tile of a layer). Its activations and its progress live in SC_NVM (sc_port.h; FRAM/MRAM or a
 * retained RAM region: board/porting.h). A unit never writes a buffer it reads, so running it again
 * after a power failure gives the same bytes; after it, its number is committed:
 *
 *   two slots {seq, unit, check}; check = sc_nvm_check(seq, unit, model id). A commit writes the slot
 *   NOT holding the newest seq: seq+1, then unit, then check, with a barrier before (the unit's output
 *   reaches NVM first) and between the words. A failure before the check word is written leaves that
 *   slot invalid (its check does not match its words) and the other slot still valid: the unit is run
 *   again. Fresh (all zero or random) NVM holds no valid slot: progress 0.
 *
 * Hooks (empty in normal builds): SC_NVM_HOOK(where) between the words of a commit, where the host
 * failure-injection harness (app/power_fail.c, -DSC_NVM_FAILURE_INJECTION) may kill the process.
 */
#ifndef SC_NVM_H
#define SC_NVM_H

#include "sc_port.h"

/* Return values of <prefix>_run_intermittent (SC_DONE is SC_OK). */
#ifndef SC_DONE
#define SC_DONE 0
#endif
#ifndef SC_IN_PROGRESS
#define SC_IN_PROGRESS 3
#endif

/* SC_NVM_BARRIER(): every store before it reaches NVM before any store after it (a power failure
 * between them loses only the later ones). Default: a compiler barrier, plus DMB on Armv7-M. A port
 * whose NVM has a write buffer or a cache (flash-emulated EEPROM, an MRAM controller) defines it to
 * flush that buffer (porting.h). */
#ifndef SC_NVM_BARRIER
#if defined(__GNUC__) && defined(__ARM_ARCH) && (__ARM_ARCH >= 7)
#define SC_NVM_BARRIER() __asm__ volatile("dmb" ::: "memory")
#elif defined(__GNUC__)
#define SC_NVM_BARRIER() __asm__ volatile("" ::: "memory")
#else
#define SC_NVM_BARRIER() ((void)0)
#endif
#endif

#ifdef SC_NVM_FAILURE_INJECTION
/* defined by the failure-injection harness (app/power_fail.c) */
void sc_nvm_failure_point(int where);
void sc_nvm_failure_unit(int unit, void *out, size_t bytes);
int sc_nvm_failure_yield(void);
#define SC_NVM_HOOK(where) sc_nvm_failure_point(where)
#define SC_NVM_UNIT_HOOK(unit, out, bytes) sc_nvm_failure_unit((unit), (void *)(out), (bytes))
#ifndef SC_NVM_YIELD
#define SC_NVM_YIELD() sc_nvm_failure_yield()
#endif
#else
#define SC_NVM_HOOK(where) ((void)0)
#define SC_NVM_UNIT_HOOK(unit, out, bytes) ((void)0)
#endif

/* SC_NVM_YIELD(): evaluated after every commit; nonzero makes <prefix>_run_intermittent return
 * SC_IN_PROGRESS (e.g. the supply voltage is low: sleep, recharge, call it again). Default: never. */
#ifndef SC_NVM_YIELD
#define SC_NVM_YIELD() 0
#endif

typedef struct {
    uint32_t seq;
    uint32_t unit;
    uint32_t check;
} sc_nvm_slot;

static inline uint32_t sc_nvm_mix(uint32_t x)
{
    /* murmur3's finalizer: every input bit changes about half the output bits */
    x ^= x >> 16;
    x *= 0x85ebca6bu;
    x ^= x >> 13;
    x *= 0xc2b2ae35u;
    x ^= x >> 16;
    return x;
}

static inline uint32_t sc_nvm_check(uint32_t seq, uint32_t unit, uint32_t id)
{
    /* never 0 for the all-zero slot of a fresh NVM (the constants make check(0, 0, id) a hash) */
    return sc_nvm_mix(sc_nvm_mix(seq ^ 0x9e3779b9u) ^ unit ^ 0x5bd1e995u) ^ sc_nvm_mix(id + 0x27d4eb2fu);
}

static inline int sc_nvm_valid(const volatile sc_nvm_slot *s, uint32_t id, uint32_t units)
{
    const uint32_t seq = s->seq, unit = s->unit, check = s->check;
    return unit <= units && check == sc_nvm_check(seq, unit, id);
}

/* The committed progress (units done, 0 .. units) of the newest valid slot; *seq its sequence number
 * (0 with no valid slot). */
static inline uint32_t sc_nvm_progress(const volatile sc_nvm_slot slots[2], uint32_t id, uint32_t units,
                                       uint32_t *seq)
{
    const int a = sc_nvm_valid(&slots[0], id, units), b = sc_nvm_valid(&slots[1], id, units);
    int pick = -1;
    if (a && b) {
        pick = (int32_t)(slots[1].seq - slots[0].seq) > 0 ? 1 : 0;
    } else if (a) {
        pick = 0;
    } else if (b) {
        pick = 1;
    }
    if (pick < 0) {
        *seq = 0u;
        return 0u;
    }
    *seq = slots[pick].seq;
    return slots[pick].unit;
}

/* Commits `unit` units done; `*seq` is the newest committed sequence number and becomes seq + 1. */
static inline void sc_nvm_commit(volatile sc_nvm_slot slots[2], uint32_t *seq, uint32_t unit, uint32_t id)
{
    const uint32_t next = *seq + 1u;
    volatile sc_nvm_slot *s = &slots[next & 1u];
    SC_NVM_BARRIER(); /* the unit's output is in NVM before its commit */
    SC_NVM_HOOK(1);
    s->seq = next;
    SC_NVM_BARRIER();
    SC_NVM_HOOK(2);
    s->unit = unit;
    SC_NVM_BARRIER();
    SC_NVM_HOOK(3);
    s->check = sc_nvm_check(next, unit, id);
    SC_NVM_BARRIER();
    SC_NVM_HOOK(4);
    *seq = next;
}

#endif /* SC_NVM_H */
