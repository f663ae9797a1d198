/* TCP retransmissions from tcp:tcp_retransmit_skb, counted by socket state. */
#include <uapi/linux/ptrace.h>
#include "netns.h"

BPF_ARRAY(config, struct cns_config, 1);
BPF_ARRAY(by_state, u64, 16);

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    int zero = 0;
    struct cns_config *c = config.lookup(&zero);
    if (!c || (c->netns && cns_sock_netns(args->skaddr, c) != c->netns))
        return 0;
    int state = args->state & 15;
    u64 *p = by_state.lookup(&state);
    if (p)
        __sync_fetch_and_add(p, 1);
    return 0;
}
