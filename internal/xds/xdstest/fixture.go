// Package xdstest has what weft's xDS tests share: a fixture mesh, gRPC
// backends that say who they are, an ADS server, and grpc-go xDS clients.
package xdstest

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
)

// Backend is one endpoint of the fixture service.
type Backend struct {
	Pod, Version, IP   string
	Port               int32
	Ready, Terminating bool
}

// ReviewsInput is a MeshService "reviews" (grpc port 9080, subsets v1 and
// v2) with a TrafficPolicy: header x-canary=true to v2, the rest 90/10.
func ReviewsInput(backends ...Backend) mesh.Input {
	in := mesh.Input{
		Services: []corev1.Service{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "reviews"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 9080}}},
		}},
		MeshServices: []meshv1.MeshService{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "reviews", Generation: 1},
			Spec: meshv1.MeshServiceSpec{
				ServiceName: "reviews",
				Ports:       []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}},
				Subsets: []meshv1.Subset{
					{Name: "v1", Labels: map[string]string{"version": "v1"}},
					{Name: "v2", Labels: map[string]string{"version": "v2"}},
				},
			},
		}},
		TrafficPolicies: []meshv1.TrafficPolicy{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "canary", Generation: 3},
			Spec: meshv1.TrafficPolicySpec{
				TargetRef: meshv1.TargetRef{Name: "reviews"},
				HTTP: []meshv1.HTTPRoute{
					{Name: "testers", Matches: []meshv1.HTTPMatch{{Headers: []meshv1.HeaderMatch{{Name: "x-canary", Value: ptr.To("true")}}}},
						Backends: []meshv1.WeightedBackend{{Subset: "v2", Weight: 100}}},
					{Name: "split", Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 90}, {Subset: "v2", Weight: 10}}},
				},
			},
		}},
	}
	for i, b := range backends {
		in.Pods = append(in.Pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: b.Pod,
			Labels: map[string]string{"app": "reviews", "version": b.Version}},
			Spec: corev1.PodSpec{ServiceAccountName: "reviews-" + b.Version}})
		in.EndpointSlices = append(in.EndpointSlices, discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "bookinfo", Name: "reviews-" + strconv.Itoa(i), Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(b.Port)}},
			Endpoints: []discoveryv1.Endpoint{{
				Addresses:  []string{b.IP},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(b.Ready), Serving: ptr.To(true), Terminating: ptr.To(b.Terminating)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "bookinfo", Name: b.Pod},
			}},
		})
	}
	return in
}

// Ready is a ready backend of a subset version at ip:port.
func Ready(pod, version, ip string, port int32) Backend {
	return Backend{Pod: pod, Version: version, IP: ip, Port: port, Ready: true}
}

// Draining is a terminating backend that still serves.
func Draining(pod, version, ip string, port int32) Backend {
	return Backend{Pod: pod, Version: version, IP: ip, Port: port, Terminating: true}
}

// ScaleInput is a mesh of n services, each with one gRPC port, two subsets
// and 10 endpoints (5 per subset), and a 90/10 policy on every tenth.
func ScaleInput(n int) mesh.Input {
	var in mesh.Input
	for i := range n {
		AddScaleService(&in, i)
	}
	return in
}

// ScaleInputAllFeatures is ScaleInput with every tenth service's policy
// setting every field weft translates: timeouts, retries with backoff and
// budget, connection limits, outlier detection, ring hash on a header, a
// fault on its route, a rate limit and a zone preference. Endpoints are
// spread over three zones of one region, and the pod ns-0/svc-0-0 runs in
// the first.
func ScaleInputAllFeatures(n int) mesh.Input {
	in := ScaleInput(n)
	zones := []string{"zone-a", "zone-b", "zone-c"}
	for _, z := range zones {
		in.Nodes = append(in.Nodes, metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "node-" + z,
			Labels: map[string]string{corev1.LabelTopologyRegion: "region-1", corev1.LabelTopologyZone: z}}})
	}
	for i := range in.EndpointSlices {
		for e := range in.EndpointSlices[i].Endpoints {
			in.EndpointSlices[i].Endpoints[e].NodeName = ptr.To("node-" + zones[e%len(zones)])
		}
	}
	for i := range in.Pods {
		if in.Pods[i].Namespace == "ns-0" && in.Pods[i].Name == "svc-0-0" {
			in.Pods[i].Spec.NodeName = "node-zone-a"
		}
	}
	for i := range in.TrafficPolicies {
		spec := &in.TrafficPolicies[i].Spec
		d := func(s string) *meshv1.Duration { v := meshv1.Duration(s); return &v }
		spec.Timeouts = &meshv1.Timeouts{Request: d("2s"), Connect: d("250ms"), Idle: d("10m")}
		spec.Retries = &meshv1.RetryPolicy{Attempts: ptr.To[int32](3), PerTryTimeout: d("500ms"),
			RetryOn: []meshv1.RetryCondition{"unavailable", "5xx", "reset"},
			Backoff: &meshv1.Backoff{BaseInterval: "20ms", MaxInterval: d("200ms")},
			Budget:  &meshv1.RetryBudget{Percent: ptr.To[meshv1.Percentage](25), MinConcurrency: ptr.To[int32](5)}}
		spec.ConnectionPool = &meshv1.ConnectionPool{MaxConnections: ptr.To[int32](100), MaxPendingRequests: ptr.To[int32](50),
			MaxRequests: ptr.To[int32](200), MaxRetries: ptr.To[int32](10), MaxRequestsPerConnection: ptr.To[int32](1000)}
		spec.OutlierDetection = &meshv1.OutlierDetection{Consecutive5xxErrors: ptr.To[int32](5), FailurePercentage: ptr.To[meshv1.Percentage](50),
			Interval: d("5s"), BaseEjectionTime: d("30s"), MaxEjectionPercent: ptr.To[meshv1.Percentage](50)}
		spec.LoadBalancer = &meshv1.LoadBalancer{Algorithm: meshv1.LoadBalancerRingHash, RingHash: &meshv1.RingHash{Header: "x-user"}}
		spec.RateLimit = &meshv1.LocalRateLimit{Requests: 100, Interval: "1s"}
		spec.HTTP[0].Fault = &meshv1.FaultInjection{Abort: &meshv1.FaultAbort{GRPCStatus: ptr.To[int32](14), Percentage: 1}}
		spec.Locality = &meshv1.LocalityPolicy{Mode: meshv1.LocalityPreferZone, MinHealthyPercent: ptr.To[meshv1.Percentage](70)}
	}
	return in
}

// AddScaleService adds the i-th service of ScaleInput to in.
func AddScaleService(in *mesh.Input, i int) {
	ns, name := fmt.Sprintf("ns-%d", i%50), fmt.Sprintf("svc-%d", i)
	in.Services = append(in.Services, corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{ClusterIPs: []string{fmt.Sprintf("10.96.%d.%d", i/250, i%250)},
			Ports: []corev1.ServicePort{{Name: "grpc", Port: 8080}}}})
	in.MeshServices = append(in.MeshServices, meshv1.MeshService{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
		Spec: meshv1.MeshServiceSpec{ServiceName: name, Ports: []meshv1.MeshServicePort{{Port: 8080, Protocol: meshv1.ProtocolGRPC}},
			Subsets: []meshv1.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}}},
	})
	if i%10 == 0 {
		in.TrafficPolicies = append(in.TrafficPolicies, meshv1.TrafficPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
			Spec: meshv1.TrafficPolicySpec{TargetRef: meshv1.TargetRef{Name: name},
				HTTP: []meshv1.HTTPRoute{{Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 90}, {Subset: "v2", Weight: 10}}}}},
		})
	}
	sl := discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](8080)}},
	}
	base := i * 16 // each service's endpoints in a block of 16 addresses
	for e := range 10 {
		pod := fmt.Sprintf("%s-%d", name, e)
		version := "v1"
		if e >= 5 {
			version = "v2"
		}
		in.Pods = append(in.Pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod, Labels: map[string]string{"version": version}}})
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 1+base>>16, (base>>8)&255, base&255+e)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod},
		})
	}
	in.EndpointSlices = append(in.EndpointSlices, sl)
}

// StrictPeerAuthentication is a namespace-wide STRICT PeerAuthentication
// in force.
func StrictPeerAuthentication(namespace string) meshv1.PeerAuthentication {
	return meshv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "default", Generation: 1},
		Spec:       meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSStrict},
	}
}
