{{/* The services, in the order they are rendered. */}}
{{- define "troupe.services" -}}renderer applier health history{{- end }}

{{- define "troupe.fullname" -}}
{{- if contains "troupe" .Release.Name }}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{ else }}{{ printf "%s-troupe" .Release.Name | trunc 50 | trimSuffix "-" }}{{ end }}
{{- end }}

{{/* The name of one service's objects: (dict "ctx" $ "svc" "renderer"). */}}
{{- define "troupe.name" -}}
{{- printf "%s-%s" (include "troupe.fullname" .ctx) .svc }}
{{- end }}

{{- define "troupe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: troupe
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{ include "troupe.selectorLabels" . }}
{{- end }}

{{- define "troupe.selectorLabels" -}}
app.kubernetes.io/name: troupe
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .svc }}
{{- end }}

{{- define "troupe.image" -}}
{{- printf "%s-%s:%s" .ctx.Values.image.repository .svc (.ctx.Values.image.tag | default .ctx.Chart.AppVersion) }}
{{- end }}

{{/* The NATS URL services connect to: natsURL, else the bundled NATS chart's client service. */}}
{{- define "troupe.natsURL" -}}
{{- if .Values.natsURL }}{{ .Values.natsURL }}
{{- else if not .Values.nats.enabled }}{{ fail "natsURL: required when nats.enabled is false (the existing NATS troupe connects to)" }}
{{- else }}
{{- $name := .Values.nats.fullnameOverride | default (ternary .Release.Name (printf "%s-nats" .Release.Name) (contains "nats" .Release.Name)) | trunc 63 | trimSuffix "-" }}
{{- printf "nats://%s.%s.svc:4222" $name .Release.Namespace }}
{{- end }}
{{- end }}

{{/* The Secret of an identity's credentials. */}}
{{- define "troupe.credsSecret" -}}
{{- printf "%s%s-creds" .ctx.Values.credentials.secretPrefix .id }}
{{- end }}

{{/* The namespaces roles are made in: the listed ones, or "" for cluster-wide. */}}
{{- define "troupe.scopes" -}}
{{- if .Values.namespaces }}{{ join " " .Values.namespaces }}{{ else }}*{{ end }}
{{- end }}

{{/* The pod spec every troupe pod shares: (dict "ctx" $ "svc" S "containers" YAML "volumes" YAML). */}}
{{- define "troupe.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "troupe.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end }}

{{/* Flags every service takes: (dict "ctx" $ "id" IDENTITY). */}}
{{- define "troupe.commonArgs" -}}
- --server={{ include "troupe.natsURL" .ctx }}
- --creds=/var/run/troupe/creds/{{ .id }}.creds
- --http-listen=:8080
- --log-level={{ .ctx.Values.logLevel }}
{{- with .ctx.Values.subjectsPrefix }}
- --subjects-prefix={{ . }}
{{- end }}
{{- with .ctx.Values.tracing.otlpEndpoint }}
- --otlp-endpoint={{ . }}
{{- end }}
{{- end }}
