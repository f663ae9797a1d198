/* TCP active-connect latency from sock:inet_sock_set_state (no kprobes).
 * SYN_SENT -> ESTABLISHED: latency in µs into a log-linear histogram (4 sub-buckets per power of two);
 * SYN_SENT -> CLOSE: a failed connect (refused, reset, timed out). */
#include <uapi/linux/ptrace.h>
#include <uapi/linux/in.h>
#include "netns.h"

#define SLOTS 128
#define ST_ESTABLISHED 1
#define ST_SYN_SENT 2
#define ST_CLOSE 7

BPF_ARRAY(config, struct cns_config, 1);
BPF_HASH(start, u64, u64, 16384);  /* socket address -> SYN_SENT time (ns) */
BPF_ARRAY(hist, u64, SLOTS);
BPF_ARRAY(counts, u64, 3);         /* 0: established, 1: failed, 2: latency sum (µs) */

static __always_inline void add(int idx, u64 v)
{
    u64 *p = counts.lookup(&idx);
    if (p)
        __sync_fetch_and_add(p, v);
}

static __always_inline int slot_of(u64 us)
{
    if (us < 4)
        return (int)us;
    unsigned int l = bpf_log2l(us) - 1;       /* bcc returns 1 + floor(log2); l >= 2 */
    int slot = 4 * (l - 1) + (int)((us >> (l - 2)) & 3);
    return slot < SLOTS ? slot : SLOTS - 1;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->newstate == ST_SYN_SENT) {
        int zero = 0;
        struct cns_config *c = config.lookup(&zero);
        if (!c || (c->netns && cns_sock_netns(args->skaddr, c) != c->netns))
            return 0;
        u64 ts = bpf_ktime_get_ns();
        start.update(&sk, &ts);
        return 0;
    }
    if (args->oldstate != ST_SYN_SENT)
        return 0;
    u64 *tsp = start.lookup(&sk);
    if (!tsp)
        return 0;
    if (args->newstate == ST_ESTABLISHED) {
        u64 us = (bpf_ktime_get_ns() - *tsp) / 1000;
        int slot = slot_of(us);
        u64 *h = hist.lookup(&slot);
        if (h)
            __sync_fetch_and_add(h, 1);
        add(0, 1);
        add(2, us);
    } else if (args->newstate == ST_CLOSE) {
        add(1, 1);
    }
    start.delete(&sk);
    return 0;
}
