{{/*
Names are fixed, not derived from the release name: a cluster has one mesh,
the proxies dial weft-controller.<namespace>.svc by default, and the xDS
server's certificate names the ServiceAccount weft-controller.
*/}}
{{- define "weft.name" -}}weft-controller{{- end -}}

{{- define "weft.labels" -}}
app.kubernetes.io/name: weft
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: weft
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* What the Deployment, its Services and its PodDisruptionBudget select. */}}
{{- define "weft.selectorLabels" -}}
app.kubernetes.io/name: weft
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "weft.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The name proxies dial for xDS, and that the xDS certificate names. */}}
{{- define "weft.xdsHost" -}}
{{ .Values.xds.host | default (printf "%s.%s.svc" (include "weft.name" .) .Release.Namespace) }}
{{- end -}}

{{/* The webhook's serving certificate (cert-manager writes this Secret). */}}
{{- define "weft.webhookSecret" -}}weft-webhook-tls{{- end -}}
{{- define "weft.webhookCertificate" -}}weft-webhook{{- end -}}

{{/*
Namespaces the injector never sees: kube-system, weft-system, the release
namespace and the user's list, each once.
*/}}
{{- define "weft.excludedNamespaces" -}}
{{- $ns := concat (list "kube-system" "weft-system" .Release.Namespace) .Values.injector.excludeNamespaces | uniq -}}
{{- toJson $ns -}}
{{- end -}}

{{/* weft.resourceList renders {cpu: 100m, memory: 128Mi} as cpu=100m,memory=128Mi. */}}
{{- define "weft.resourceList" -}}
{{- $out := list -}}
{{- range $k, $v := . }}{{ $out = append $out (printf "%s=%v" $k $v) }}{{ end -}}
{{- join "," $out -}}
{{- end -}}
