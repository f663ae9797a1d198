"""Kubernetes in the lab: a real control plane (etcd, kube-apiserver, kube-controller-manager) and
real kube-proxy, built from Kubernetes' own Go modules (``core/kube-harness``), with the lab playing
the kubelet's API side. See :mod:`cniscope.lab.kube.control_plane`."""
