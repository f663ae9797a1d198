/* Socket-level load balancing for the lab's ClusterIPs, the way Cilium's socket LB does it
 * (bpf_sock.c): cgroup v2 sock_addr hooks translate a Service address to a backend before the
 * kernel builds a packet, so no per-packet NAT rule is walked.
 *
 *   connect4      TCP and connected UDP: ClusterIP:port -> backend:port
 *   sendmsg4      unconnected UDP: the same translation per datagram
 *   recvmsg4      UDP replies: backend:port -> ClusterIP:port (from the per-socket reverse map)
 *   getpeername4  getpeername() reports the ClusterIP, not the backend
 *
 * Maps have Cilium's names and layouts (lib/lb.h); the kernel keeps 15 characters of a name:
 *   cilium_lb4_services_v2  lb4_key -> lb4_service: a frontend (backend_slot 0, count = backends)
 *                           and one entry per backend slot (1..count) holding a backend id
 *   cilium_lb4_backends_v3  backend id -> lb4_backend (address, port)
 *   cilium_lb4_reverse_nat  rev_nat_index -> the Service address (written by the loader)
 *   cilium_lb4_reverse_sk   (socket cookie, backend) -> Service address, per translated socket
 * and one of the lab's own:
 *   cniscope_labns          network namespace cookies whose sockets are translated; any other
 *                           namespace (the host's above all) is never touched. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/in.h>

#define SYS_PROCEED 1
#define LB_MAP_MAX 65536
#define REVERSE_SK_MAX 65536   /* a quarter of Cilium's default: the lab makes far fewer sockets */

struct lb4_key {
    __be32 address;      /* Service virtual IPv4 address */
    __be16 dport;        /* L4 port */
    __u16 backend_slot;  /* 0: the frontend; 1..count: a backend slot */
    __u8 proto;          /* L4 protocol, 0: any */
    __u8 scope;
    __u8 pad[2];
};

struct lb4_service {
    __u32 backend_id;    /* a slot's backend id (0 in the frontend) */
    __u16 count;         /* the frontend's number of backend slots */
    __u16 rev_nat_index;
    __u8 flags;
    __u8 flags2;
    __u16 qcount;
};

struct lb4_backend {
    __be32 address;
    __be16 port;
    __u8 proto;
    __u8 flags;
    __u16 cluster_id;
    __u8 zone;
    __u8 pad;
};

struct lb4_reverse_nat {
    __be32 address;
    __be16 port;
    __u16 pad;
};

struct ipv4_revnat_tuple {
    __u64 cookie;
    __be32 address;
    __be16 port;
    __u16 pad;
};

struct ipv4_revnat_entry {
    __be32 address;
    __be16 port;
    __u16 rev_nat_index;
};

BPF_F_TABLE("hash", struct lb4_key, struct lb4_service, cilium_lb4_services_v2, LB_MAP_MAX, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", __u32, struct lb4_backend, cilium_lb4_backends_v3, LB_MAP_MAX, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", __u16, struct lb4_reverse_nat, cilium_lb4_reverse_nat, LB_MAP_MAX, BPF_F_NO_PREALLOC);
BPF_TABLE("lru_hash", struct ipv4_revnat_tuple, struct ipv4_revnat_entry, cilium_lb4_reverse_sk, REVERSE_SK_MAX);
BPF_HASH(cniscope_labns, __u64, __u8, 1024);

static __always_inline int in_lab(struct bpf_sock_addr *ctx)
{
    __u64 cookie = bpf_get_netns_cookie(ctx);
    return cniscope_labns.lookup(&cookie) != NULL;
}

static __always_inline struct lb4_service *frontend(struct lb4_key *key, __u8 proto)
{
    struct lb4_service *svc;

    key->proto = proto;
    svc = cilium_lb4_services_v2.lookup(key);
    if (svc)
        return svc;
    key->proto = 0;  /* a Service programmed for any protocol */
    return cilium_lb4_services_v2.lookup(key);
}

/* ClusterIP:port -> a backend, chosen at random among the frontend's slots. */
static __always_inline int xlate_fwd(struct bpf_sock_addr *ctx)
{
    struct lb4_key key = {};
    struct lb4_service *svc, *slot;
    struct lb4_backend *be;
    __u32 backend_id;

    if (!in_lab(ctx))
        return SYS_PROCEED;
    key.address = ctx->user_ip4;
    key.dport = (__be16)ctx->user_port;
    svc = frontend(&key, (__u8)ctx->protocol);
    if (!svc || svc->count == 0)
        return SYS_PROCEED;
    struct ipv4_revnat_entry rval = {
        .address = key.address, .port = key.dport, .rev_nat_index = svc->rev_nat_index,
    };
    key.backend_slot = (bpf_get_prandom_u32() % svc->count) + 1;
    slot = cilium_lb4_services_v2.lookup(&key);
    if (!slot)
        return SYS_PROCEED;
    backend_id = slot->backend_id;
    be = cilium_lb4_backends_v3.lookup(&backend_id);
    if (!be)
        return SYS_PROCEED;
    struct ipv4_revnat_tuple rkey = {
        .cookie = bpf_get_socket_cookie(ctx), .address = be->address, .port = be->port,
    };
    cilium_lb4_reverse_sk.update(&rkey, &rval);
    ctx->user_ip4 = be->address;
    ctx->user_port = (__u32)be->port;
    return SYS_PROCEED;
}

/* backend:port -> ClusterIP:port for a socket this program translated, while the Service exists. */
static __always_inline int xlate_rev(struct bpf_sock_addr *ctx)
{
    if (!in_lab(ctx))
        return SYS_PROCEED;
    struct ipv4_revnat_tuple rkey = {
        .cookie = bpf_get_socket_cookie(ctx), .address = ctx->user_ip4, .port = (__be16)ctx->user_port,
    };
    struct ipv4_revnat_entry *rval = cilium_lb4_reverse_sk.lookup(&rkey);
    if (!rval)
        return SYS_PROCEED;
    struct lb4_key key = { .address = rval->address, .dport = rval->port };
    if (!frontend(&key, (__u8)ctx->protocol)) {
        cilium_lb4_reverse_sk.delete(&rkey);
        return SYS_PROCEED;
    }
    ctx->user_ip4 = rval->address;
    ctx->user_port = (__u32)rval->port;
    return SYS_PROCEED;
}

int sock4_connect(struct bpf_sock_addr *ctx)
{
    return xlate_fwd(ctx);
}

int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
    return xlate_fwd(ctx);
}

int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
    return xlate_rev(ctx);
}

int sock4_getpeername(struct bpf_sock_addr *ctx)
{
    return xlate_rev(ctx);
}
