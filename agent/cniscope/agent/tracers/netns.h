/* Shared by the cniscope tracers: which network namespace a socket or skb belongs to.
 *
 * The struct member offsets come from the running kernel's BTF (looked up in Python and stored in
 * the tracer's `config` map), never from the installed kernel headers, which may belong to another
 * kernel release. Plain probe reads only: bcc rewrites map method calls in the main source file,
 * not in headers, so each tracer looks up its own `config` and passes it here. */

struct cns_config {
    u64 netns;        /* namespace inode to watch; 0 = every namespace */
    u64 sock_net;     /* offsetof(struct sock, __sk_common.skc_net.net) */
    u64 net_inum;     /* offsetof(struct net, ns.inum) */
    u64 skb_sk;       /* offsetof(struct sk_buff, sk) */
    u64 skb_dev;      /* offsetof(struct sk_buff, dev) */
    u64 dev_net;      /* offsetof(struct net_device, nd_net.net) */
};

static __always_inline u32 cns_net_inum(const void *net, const struct cns_config *c)
{
    u32 inum = 0;
    if (net)
        bpf_probe_read_kernel(&inum, sizeof(inum), (const char *)net + c->net_inum);
    return inum;
}

static __always_inline u32 cns_sock_netns(const void *sk, const struct cns_config *c)
{
    void *net = NULL;
    if (!sk)
        return 0;
    bpf_probe_read_kernel(&net, sizeof(net), (const char *)sk + c->sock_net);
    return cns_net_inum(net, c);
}

static __always_inline u32 cns_skb_netns(const void *skb, const void *rx_sk, const struct cns_config *c)
{
    void *sk = NULL, *dev = NULL, *net = NULL;
    if (rx_sk)
        return cns_sock_netns(rx_sk, c);
    bpf_probe_read_kernel(&sk, sizeof(sk), (const char *)skb + c->skb_sk);
    if (sk)
        return cns_sock_netns(sk, c);
    bpf_probe_read_kernel(&dev, sizeof(dev), (const char *)skb + c->skb_dev);
    if (!dev)
        return 0;
    bpf_probe_read_kernel(&net, sizeof(net), (const char *)dev + c->dev_net);
    return cns_net_inum(net, c);
}
