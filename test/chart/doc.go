// Package chart holds the tests of the Helm chart in charts/weft: the real
// helm and kubectl binaries (built into bin/ by hack/build-tools.sh) against
// a real kube-apiserver and etcd. It has no code of its own.
package chart
