{{/* Names and labels. */}}
{{- define "straddle-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "straddle-webhook.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "straddle-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "straddle-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "straddle-webhook.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "straddle-webhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: admission-webhook
app.kubernetes.io/part-of: straddle
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "straddle-webhook.serviceAccountName" -}}
{{- default (include "straddle-webhook.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* Self-managed certificates: the Secret the webhook keeps them in. */}}
{{- define "straddle-webhook.certSecret" -}}
{{- printf "%s-certs" (include "straddle-webhook.fullname" .) }}
{{- end }}

{{/* cert-manager: the serving Certificate (and its Secret). */}}
{{- define "straddle-webhook.certificate" -}}
{{- printf "%s-serving" (include "straddle-webhook.fullname" .) }}
{{- end }}

{{- define "straddle-webhook.selfManaged" -}}
{{- if eq .Values.certificates.mode "self-managed" }}true{{ end }}
{{- end }}

{{/* Checks values that would otherwise render something broken. */}}
{{- define "straddle-webhook.validate" -}}
{{- if not .Values.cluster }}
{{- fail "values: `cluster` is required: the member cluster this installation runs in (one of the clusters of the stretch spec), e.g. --set cluster=east" }}
{{- end }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .Values.cluster) }}
{{- fail (printf "values: cluster %q is not a cluster name of a stretch spec (lowercase letters, digits and '-')" .Values.cluster) }}
{{- end }}
{{- if not (has .Values.certificates.mode (list "self-managed" "cert-manager")) }}
{{- fail (printf "values: certificates.mode %q: use self-managed or cert-manager" .Values.certificates.mode) }}
{{- end }}
{{- if not (has .Values.webhook.failurePolicy (list "Fail" "Ignore")) }}
{{- fail (printf "values: webhook.failurePolicy %q: use Fail or Ignore" .Values.webhook.failurePolicy) }}
{{- end }}
{{- if not (has .Values.webhook.reinvocationPolicy (list "IfNeeded" "Never")) }}
{{- fail (printf "values: webhook.reinvocationPolicy %q: use IfNeeded or Never" .Values.webhook.reinvocationPolicy) }}
{{- end }}
{{- $timeout := int .Values.webhook.timeoutSeconds }}
{{- if or (lt $timeout 1) (gt $timeout 30) }}
{{- fail (printf "values: webhook.timeoutSeconds %v: the API server accepts 1 to 30" .Values.webhook.timeoutSeconds) }}
{{- end }}
{{- if not (has .Values.podAntiAffinity (list "soft" "hard")) }}
{{- fail (printf "values: podAntiAffinity %q: use soft or hard" .Values.podAntiAffinity) }}
{{- end }}
{{- if lt (int .Values.replicaCount) 1 }}
{{- fail "values: replicaCount must be at least 1 (2 or more for availability)" }}
{{- end }}
{{- with .Values.policy.reference }}
{{- if not (regexMatch "^oci://[^@]+@sha256:[0-9a-f]{64}$" .) }}
{{- fail (printf "values: policy.reference %q: use oci://REGISTRY/REPOSITORY@sha256:<64 hex digits> (pinned by digest, so every replica and cluster runs the same module)" .) }}
{{- end }}
{{- else }}
{{- if not .Values.policy.configMap.name }}
{{- fail "values: set policy.configMap.name (a ConfigMap holding the module from `straddle compile`) or policy.reference (oci://...@sha256:...)" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "straddle-webhook.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}
