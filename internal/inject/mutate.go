package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/internal/wire"
)

// ErrNameTaken is wrapped by Inject's error when the pod already uses a
// name or mount path that injection adds.
var ErrNameTaken = errors.New("the pod uses a name injection adds")

// Inject adds weft to a pod that Decide let in. It changes only pod and
// returns an error, naming the annotation or field, when the pod's weft
// annotations are invalid or it uses a name injection adds (ErrNameTaken);
// then pod is left as it was.
func Inject(pod *corev1.Pod, cfg Config) error {
	opts, err := parseAnnotations(pod.Annotations, cfg)
	if err != nil {
		return err
	}
	if err := checkNames(pod, opts.flavour, cfg); err != nil {
		return fmt.Errorf("%w: %w", ErrNameTaken, err)
	}
	out := pod.DeepCopy()
	switch opts.flavour {
	case wire.FlavourGRPC:
		injectGRPC(out, cfg)
	default:
		if err := injectEnvoy(out, cfg, opts); err != nil {
			return err
		}
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[AnnotationInjected] = string(opts.flavour)
	*pod = *out
	return nil
}

// checkNames refuses a pod that already uses a name or a mount path that
// injection adds (the injected pod would be refused by the API server for
// a duplicate, without saying why), naming the field. The proxy
// container's name is Decide's: a pod that has it counts as injected.
func checkNames(pod *corev1.Pod, flavour wire.Flavour, cfg Config) error {
	const fix = "rename it, or opt the pod out of injection with the label " + wire.LabelInject + "=" + wire.InjectDisabled
	var errs []error
	if flavour == wire.FlavourEnvoy {
		for _, list := range []struct {
			field string
			cs    []corev1.Container
		}{{"initContainers", pod.Spec.InitContainers}, {"containers", pod.Spec.Containers}} {
			for i, c := range list.cs {
				if c.Name == InitContainer {
					errs = append(errs, fmt.Errorf("spec.%s[%d].name: %q is the name of the container the injector adds; %s", list.field, i, c.Name, fix))
				}
			}
		}
	}
	added := map[string]bool{}
	for _, v := range identityVolumes(cfg) {
		added[v.Name] = true
	}
	if flavour == wire.FlavourEnvoy {
		added[VolumeProxy] = true
	}
	for i, v := range pod.Spec.Volumes {
		if added[v.Name] {
			errs = append(errs, fmt.Errorf("spec.volumes[%d].name: %q is the name of a volume the injector adds; %s", i, v.Name, fix))
		}
	}
	if flavour == wire.FlavourGRPC {
		// The identity volumes are mounted into every container.
		paths := map[string]bool{}
		for _, m := range identityMounts(cfg) {
			paths[m.MountPath] = true
		}
		for i, c := range pod.Spec.Containers {
			for j, m := range c.VolumeMounts {
				if paths[m.MountPath] {
					errs = append(errs, fmt.Errorf("spec.containers[%d].volumeMounts[%d].mountPath: %s is where the injector mounts weft's identity files; %s",
						i, j, m.MountPath, fix))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// downwardEnv names the pod and its namespace for node ids.
func downwardEnv() []corev1.EnvVar {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
	}
	return []corev1.EnvVar{
		field("WEFT_POD_NAME", "metadata.name"),
		field("WEFT_POD_NAMESPACE", "metadata.namespace"),
		field("WEFT_SERVICE_ACCOUNT", "spec.serviceAccountName"),
	}
}

// The pod's name, namespace and service account as the kubelet expands
// them from the downward API variables above, in a container's arguments
// and in the values of its later variables.
const (
	podNameVar           = "$(WEFT_POD_NAME)"
	podNamespaceVar      = "$(WEFT_POD_NAMESPACE)"
	podServiceAccountVar = "$(WEFT_SERVICE_ACCOUNT)"
)

// nodeID is the xDS node id (wire.NodeID) of the pod's name and namespace.
func nodeID() string { return wire.NodeID(podNameVar, podNamespaceVar) }

// podIdentity is the pod's SPIFFE ID.
func podIdentity(cfg Config) string {
	return wire.SPIFFEID(cfg.TrustDomain, podNamespaceVar, podServiceAccountVar)
}

// identityVolumes are the token, the root bundle and, with pod
// certificates, the certificate volume.
func identityVolumes(cfg Config) []corev1.Volume {
	vols := []corev1.Volume{
		{Name: VolumeToken, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr.To[int32](0o444),
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: wire.TokenAudience, ExpirationSeconds: ptr.To(cfg.TokenExpirySeconds), Path: wire.TokenFileName,
			}}},
		}}},
		{Name: VolumeRootCA, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: wire.BundleConfigMap},
			Items:                []corev1.KeyToPath{{Key: wire.BundleKey, Path: wire.RootsFileName}},
		}}},
	}
	if cfg.CertDelivery == wire.DeliveryPodCertificate {
		vols = append(vols, corev1.Volume{Name: VolumeCerts, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{PodCertificate: &corev1.PodCertificateProjection{
				SignerName: cfg.PodCertificateSigner, KeyType: "ECDSAP256",
				KeyPath: wire.KeyFileName, CertificateChainPath: wire.CertChainFileName,
			}}},
		}}})
	}
	return vols
}

func identityMounts(cfg Config) []corev1.VolumeMount {
	m := []corev1.VolumeMount{
		{Name: VolumeToken, MountPath: wire.TokenDir, ReadOnly: true},
		{Name: VolumeRootCA, MountPath: wire.RootsDir, ReadOnly: true},
	}
	if cfg.CertDelivery == wire.DeliveryPodCertificate {
		m = append(m, corev1.VolumeMount{Name: VolumeCerts, MountPath: wire.CertsDir, ReadOnly: true})
	}
	return m
}

func injectEnvoy(pod *corev1.Pod, cfg Config, opts podOptions) error {
	probes := rewriteProbes(pod)
	boot, err := RenderBootstrap(cfg, WorkloadOf(pod.Labels), probes)
	if err != nil {
		return err
	}
	excludeIn := append([]uint16{wire.PortHealth, wire.PortStats}, opts.excludeInboundPorts...)
	cidrs := make([]string, 0, len(opts.excludeOutboundCIDRs))
	for _, c := range opts.excludeOutboundCIDRs {
		cidrs = append(cidrs, c.String())
	}
	initArgs := []string{"init-redirect",
		"--proxy-uid=" + strconv.FormatInt(cfg.ProxyUID, 10),
		"--outbound-port=" + strconv.Itoa(wire.PortOutbound),
		"--inbound-port=" + strconv.Itoa(wire.PortInbound),
		"--exclude-inbound-ports=" + joinPorts(excludeIn),
	}
	if len(opts.excludeOutboundPorts) > 0 {
		initArgs = append(initArgs, "--exclude-outbound-ports="+joinPorts(opts.excludeOutboundPorts))
	}
	if len(cidrs) > 0 {
		initArgs = append(initArgs, "--exclude-outbound-cidrs="+strings.Join(cidrs, ","))
	}
	initC := corev1.Container{
		Name:  InitContainer,
		Image: cfg.InitImage,
		Args:  initArgs,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: ptr.To[int64](0), RunAsNonRoot: ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
			Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Resources: corev1.ResourceRequirements{
			Requests: cfg.ProxyResources.Requests.DeepCopy(),
			Limits:   cfg.ProxyResources.Limits.DeepCopy(),
		},
	}
	proxy := corev1.Container{
		Name:          ProxyContainer,
		Image:         opts.proxyImage,
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Args: []string{
			"--config-yaml", boot,
			"--service-node", nodeID(),
			"--service-cluster", podServiceAccountVar + "." + podNamespaceVar,
			"--log-level", cfg.ProxyLogLevel,
			"--concurrency", strconv.Itoa(int(cfg.ProxyConcurrency)),
			"--drain-time-s", "20",
			"--drain-strategy", "immediate",
			"--disable-hot-restart",
			"--base-id-path", "/var/lib/weft/proxy/base-id",
		},
		Env: downwardEnv(),
		Ports: []corev1.ContainerPort{
			{Name: "weft-health", ContainerPort: wire.PortHealth, Protocol: corev1.ProtocolTCP},
			{Name: "weft-stats", ContainerPort: wire.PortStats, Protocol: corev1.ProtocolTCP},
		},
		Resources: opts.resources,
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: healthReadyPath, Port: intstr.FromInt32(wire.PortHealth)}},
			PeriodSeconds:    1,
			FailureThreshold: 600,
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: healthReadyPath, Port: intstr.FromInt32(wire.PortHealth)}},
			PeriodSeconds:    5,
			FailureThreshold: 3,
		},
		VolumeMounts: append(identityMounts(cfg), corev1.VolumeMount{Name: VolumeProxy, MountPath: "/var/lib/weft/proxy"}),
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: ptr.To(cfg.ProxyUID), RunAsGroup: ptr.To(cfg.ProxyUID), RunAsNonRoot: ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
			Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if cfg.DrainPort != 0 {
		addPreStops(pod)
	}
	// The capture rules go in first, then the proxy starts and stays up
	// (a native sidecar) while the pod's own init containers and
	// containers run.
	pod.Spec.InitContainers = append([]corev1.Container{initC, proxy}, pod.Spec.InitContainers...)
	pod.Spec.Volumes = append(pod.Spec.Volumes, identityVolumes(cfg)...)
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: VolumeProxy, VolumeSource: corev1.VolumeSource{
		EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory},
	}})
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	for k, v := range map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   strconv.Itoa(wire.PortStats),
		"prometheus.io/path":   "/stats/prometheus",
	} {
		if _, set := pod.Annotations[k]; !set {
			pod.Annotations[k] = v
		}
	}
	return nil
}

func joinPorts(ports []uint16) string {
	s := make([]string, 0, len(ports))
	for _, p := range ports {
		s = append(s, strconv.Itoa(int(p)))
	}
	return strings.Join(s, ",")
}

// injectGRPC gives every container a gRPC xDS bootstrap and the identity
// volumes; there is no sidecar and no capture.
func injectGRPC(pod *corev1.Pod, cfg Config) {
	boot := grpcBootstrap(cfg)
	otel := otelEnv(cfg, WorkloadOf(pod.Labels))
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		c.Env = append(c.Env, downwardEnv()...)
		c.Env = append(c.Env,
			corev1.EnvVar{Name: "GRPC_XDS_BOOTSTRAP_CONFIG", Value: boot},
			corev1.EnvVar{Name: "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS", Value: "true"},
		)
		if cfg.DrainPort != 0 {
			// The application waits there when told to stop (drain.go).
			c.Env = append(c.Env, corev1.EnvVar{Name: wire.EnvDrainURL, Value: drainURL(cfg)})
		}
		// The container's own OpenTelemetry settings win.
		for _, e := range otel {
			if !slices.ContainsFunc(c.Env, func(o corev1.EnvVar) bool { return o.Name == e.Name }) {
				c.Env = append(c.Env, e)
			}
		}
		c.VolumeMounts = append(c.VolumeMounts, identityMounts(cfg)...)
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, identityVolumes(cfg)...)
}

// otelEnv is the OpenTelemetry SDK's standard environment for a proxyless
// workload: who it is (service name, and as resource attributes its
// version, namespace, pod and SPIFFE ID), W3C trace context, and the
// collectors of the mesh (OTLP over gRPC, plain text) with the mesh-wide
// trace sampling, parent-based so that a server follows its caller's
// decision. A signal without a collector has its exporter off, as have
// logs: weft gives them none. An application that sets up the SDK from the
// environment (docs/observability.md) needs nothing else.
func otelEnv(cfg Config, w Workload) []corev1.EnvVar {
	var env []corev1.EnvVar
	add := func(name, value string) { env = append(env, corev1.EnvVar{Name: name, Value: value}) }
	if w.Service != "" {
		add("OTEL_SERVICE_NAME", w.Service)
	}
	attrs := []string{"k8s.namespace.name=" + podNamespaceVar, "k8s.pod.name=" + podNameVar}
	if w.Version != "" {
		attrs = append(attrs, "service.version="+w.Version)
	}
	attrs = append(attrs, wire.AttributeIdentity+"="+podIdentity(cfg))
	add("OTEL_RESOURCE_ATTRIBUTES", strings.Join(attrs, ","))
	add("OTEL_PROPAGATORS", "tracecontext")
	if cfg.TracingEndpoint != "" || cfg.MetricsEndpoint != "" {
		add("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	}
	if cfg.TracingEndpoint != "" {
		add("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"+cfg.TracingEndpoint)
		add("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
		add("OTEL_TRACES_SAMPLER_ARG", strconv.FormatFloat(cfg.TracingSampling/100, 'f', -1, 64))
	} else {
		add("OTEL_TRACES_EXPORTER", "none")
	}
	if cfg.MetricsEndpoint != "" {
		add("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://"+cfg.MetricsEndpoint)
	} else {
		add("OTEL_METRICS_EXPORTER", "none")
	}
	add("OTEL_LOGS_EXPORTER", "none")
	return env
}

// grpcBootstrap is grpc-go's xDS bootstrap: the xDS server over TLS with
// the mesh root, the projected token as call credentials, the node id and
// metadata (the flavour, and the delivery the pod is set up for, by which
// the xDS server decides whether to send it TLS), and (with pod
// certificates) a file-watcher certificate provider.
func grpcBootstrap(cfg Config) string {
	b := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      fmt.Sprintf("%s:%d", cfg.XDSHost, cfg.XDSPort),
			"channel_creds":   []any{map[string]any{"type": "tls", "config": map[string]any{"ca_certificate_file": wire.RootsFile}}},
			"call_creds":      []any{map[string]any{"type": "jwt_token_file", "config": map[string]any{"jwt_token_file": wire.TokenFile}}},
			"server_features": []any{"xds_v3"},
		}},
		"node": map[string]any{"id": nodeID(), "cluster": podServiceAccountVar + "." + podNamespaceVar,
			"metadata": map[string]any{wire.MetaFlavour: string(wire.FlavourGRPC), wire.MetaCertDelivery: string(cfg.CertDelivery)}},
		"server_listener_resource_name_template": wire.ServerListenerName("%s"),
	}
	if cfg.CertDelivery == wire.DeliveryPodCertificate {
		b["certificate_providers"] = map[string]any{wire.CertProviderInstance: map[string]any{
			"plugin_name": "file_watcher",
			"config": map[string]any{
				"certificate_file": wire.CertChainFile, "private_key_file": wire.KeyFile,
				"ca_certificate_file": wire.RootsFile, "refresh_interval": "60s",
			},
		}}
	}
	out, _ := json.Marshal(b) // maps of strings and slices always marshal
	return string(out)
}

// probeRoute sends a rewritten probe to where the original pointed.
type probeRoute struct {
	// path is the probe's new path on the proxy's health port.
	path string
	// port and target are the original port and path (with query).
	port   int32
	target string
}

// rewriteProbes points the app containers' HTTP probes at the proxy's
// health port, which passes them to the app over loopback: with capture
// on, a kubelet probe to the app's port would otherwise meet the proxy's
// inbound listener. HTTPS probes, TCP and gRPC probes are left alone.
func rewriteProbes(pod *corev1.Pod) []probeRoute {
	var routes []probeRoute
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for _, p := range []struct {
			kind  string
			probe *corev1.Probe
		}{{"liveness", c.LivenessProbe}, {"readiness", c.ReadinessProbe}, {"startup", c.StartupProbe}} {
			if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Scheme == corev1.URISchemeHTTPS {
				continue
			}
			port, ok := resolvePort(c, p.probe.HTTPGet.Port)
			if !ok {
				continue
			}
			target := p.probe.HTTPGet.Path
			if target == "" {
				target = "/"
			}
			r := probeRoute{path: fmt.Sprintf("/weft-probe/%s/%s", c.Name, p.kind), port: port, target: target}
			routes = append(routes, r)
			p.probe.HTTPGet.Port = intstr.FromInt32(wire.PortHealth)
			p.probe.HTTPGet.Path = r.path
			p.probe.HTTPGet.Host = ""
		}
	}
	slices.SortFunc(routes, func(a, b probeRoute) int { return strings.Compare(a.path, b.path) })
	return routes
}

// resolvePort turns a probe's port (a number or a container port's name)
// into a number.
func resolvePort(c *corev1.Container, p intstr.IntOrString) (int32, bool) {
	if p.Type == intstr.Int {
		return p.IntVal, p.IntVal > 0
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}
