module cniscope.dev/kubeharness

go 1.22.0

// Kubernetes 1.31.13, not 1.31.14: the module proxy this project builds from answers 403 for
// k8s.io/{kube-proxy,kube-controller-manager,kube-scheduler,endpointslice}@v0.31.14, so 1.31.14
// cannot be built as one consistent release; every 1.31.13 module is served. (Both releases' go.mod
// files are identical, dependencies included.) etcd: the 3.5 line Kubernetes 1.31 requires, at the
// version of its directly required go.etcd.io/etcd/{api,client} modules.
require (
	go.etcd.io/etcd/server/v3 v3.5.14
	k8s.io/kubernetes v1.31.13
)

// k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging paths;
// a module depending on it pins every one of them (the list in kubernetes v1.31.13's go.mod) to the
// matching release. To move to another patch release, change every version below together.
replace (
	k8s.io/api => k8s.io/api v0.31.13
	k8s.io/apiextensions-apiserver => k8s.io/apiextensions-apiserver v0.31.13
	k8s.io/apimachinery => k8s.io/apimachinery v0.31.13
	k8s.io/apiserver => k8s.io/apiserver v0.31.13
	k8s.io/cli-runtime => k8s.io/cli-runtime v0.31.13
	k8s.io/client-go => k8s.io/client-go v0.31.13
	k8s.io/cloud-provider => k8s.io/cloud-provider v0.31.13
	k8s.io/cluster-bootstrap => k8s.io/cluster-bootstrap v0.31.13
	k8s.io/code-generator => k8s.io/code-generator v0.31.13
	k8s.io/component-base => k8s.io/component-base v0.31.13
	k8s.io/component-helpers => k8s.io/component-helpers v0.31.13
	k8s.io/controller-manager => k8s.io/controller-manager v0.31.13
	k8s.io/cri-api => k8s.io/cri-api v0.31.13
	k8s.io/cri-client => k8s.io/cri-client v0.31.13
	k8s.io/csi-translation-lib => k8s.io/csi-translation-lib v0.31.13
	k8s.io/dynamic-resource-allocation => k8s.io/dynamic-resource-allocation v0.31.13
	k8s.io/endpointslice => k8s.io/endpointslice v0.31.13
	k8s.io/kms => k8s.io/kms v0.31.13
	k8s.io/kube-aggregator => k8s.io/kube-aggregator v0.31.13
	k8s.io/kube-controller-manager => k8s.io/kube-controller-manager v0.31.13
	k8s.io/kube-proxy => k8s.io/kube-proxy v0.31.13
	k8s.io/kube-scheduler => k8s.io/kube-scheduler v0.31.13
	k8s.io/kubectl => k8s.io/kubectl v0.31.13
	k8s.io/kubelet => k8s.io/kubelet v0.31.13
	k8s.io/metrics => k8s.io/metrics v0.31.13
	k8s.io/mount-utils => k8s.io/mount-utils v0.31.13
	k8s.io/pod-security-admission => k8s.io/pod-security-admission v0.31.13
	k8s.io/sample-apiserver => k8s.io/sample-apiserver v0.31.13
	k8s.io/sample-cli-plugin => k8s.io/sample-cli-plugin v0.31.13
	k8s.io/sample-controller => k8s.io/sample-controller v0.31.13
)
