"""The lab's eBPF service datapath: socket-level load balancing the way Cilium does it (cgroup v2
sock_addr programs over Cilium-shaped BPF maps), scoped to the lab's own processes and namespaces."""
