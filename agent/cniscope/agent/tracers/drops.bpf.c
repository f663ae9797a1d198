/* Packet drops from skb:kfree_skb, counted by the kernel's drop reason. The namespace filter uses
 * the receiving socket, else the skb's socket, else its device. */
#include <uapi/linux/ptrace.h>
#include <linux/skbuff.h>  /* only for the tracepoint's `enum skb_drop_reason` type; names come from tracefs */
#include "netns.h"

BPF_ARRAY(config, struct cns_config, 1);
BPF_HASH(by_reason, u32, u64, 1024);

TRACEPOINT_PROBE(skb, kfree_skb)
{
    int zero = 0;
    struct cns_config *c = config.lookup(&zero);
    if (!c || (c->netns && cns_skb_netns(args->skbaddr, args->rx_sk, c) != c->netns))
        return 0;
    u32 reason = args->reason;
    u64 init = 0;
    u64 *p = by_reason.lookup_or_try_init(&reason, &init);
    if (p)
        __sync_fetch_and_add(p, 1);
    return 0;
}
