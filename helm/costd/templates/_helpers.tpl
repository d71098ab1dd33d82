{{/* Names, labels, and the values derived from costd's configuration. */}}

{{- define "costd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "costd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "costd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "costd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "costd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "costd.labels" -}}
helm.sh/chart: {{ include "costd.chart" . }}
{{ include "costd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "costd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "costd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "costd.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Where the Secret's keys are mounted as files; config file references point here. */}}
{{- define "costd.secretMountPath" -}}/var/run/secrets/costd{{- end -}}

{{/*
Where tls.existingSecret's keys (tls.crt, tls.key, ca.crt) are mounted; config.server.tls names them
(values.schema.json checks the paths).
*/}}
{{- define "costd.tlsMountPath" -}}/var/run/secrets/costd-tls{{- end -}}

{{/* "true" when costd serves TLS on its gRPC port (config.server.tls). */}}
{{- define "costd.tlsEnabled" -}}
{{- hasKey (dig "server" dict .Values.config) "tls" | toString -}}
{{- end -}}

{{/* Where the kubelet's gRPC probes go: with TLS on, the plaintext Health port (config.server.health_listen). */}}
{{- define "costd.probePort" -}}
{{- if eq (include "costd.tlsEnabled" .) "true" -}}
{{- include "costd.portOf" (dig "server" "health_listen" "" .Values.config) -}}
{{- else -}}
{{- include "costd.grpcPort" . -}}
{{- end -}}
{{- end -}}

{{/* Where the ConfigMap is mounted; the container's args name the file. */}}
{{- define "costd.configPath" -}}/etc/costd/costd.toml{{- end -}}

{{/*
The port of a listen address such as "0.0.0.0:50051" or "[::]:50051": the container's ports and the
probes follow costd's configuration instead of repeating it.
*/}}
{{- define "costd.portOf" -}}
{{- regexReplaceAll "^.*:([0-9]+)$" . "${1}" -}}
{{- end -}}

{{- define "costd.grpcPort" -}}
{{- include "costd.portOf" (dig "server" "listen" "0.0.0.0:50051" .Values.config) -}}
{{- end -}}

{{- define "costd.metricsPort" -}}
{{- include "costd.portOf" (dig "metrics" "listen" "0.0.0.0:9090" .Values.config) -}}
{{- end -}}

{{/* "true" when costd serves /metrics (its default). */}}
{{- define "costd.metricsEnabled" -}}
{{- dig "metrics" "enabled" true .Values.config | toString -}}
{{- end -}}

{{/*
Long enough for the whole stop: the preStop sleep, then costd's drain, then its trace flush (costd's
defaults when the keys are unset), plus a margin. It is computed, not a value, so it can never be
shorter than the stop it has to cover.
*/}}
{{- define "costd.terminationGracePeriodSeconds" -}}
{{- $drainMs := dig "server" "drain_timeout_ms" 10000 .Values.config | int64 -}}
{{- $flushMs := dig "telemetry" "flush_timeout_ms" 5000 .Values.config | int64 -}}
{{- add (.Values.preStopSleepSeconds | int64) (div (add $drainMs 999) 1000) (div (add $flushMs 999) 1000) (.Values.terminationGraceMarginSeconds | int64) -}}
{{- end -}}

{{/*
values.config as TOML. Helm reads every YAML number as a float, and toToml would write 10000 as
10000.0, which costd's integer keys refuse; every key of costd's file is an integer, a string, a
boolean or a table, so numbers are turned back into integers (on a copy) first.
*/}}
{{- define "costd.configToml" -}}
{{- $config := deepCopy .Values.config -}}
{{- include "costd.integers" $config -}}
{{- toToml $config -}}
{{- end -}}

{{- define "costd.integers" -}}
{{- $table := . -}}
{{- range $key, $value := $table -}}
{{- if kindIs "float64" $value -}}
{{- $_ := set $table $key (int64 $value) -}}
{{- else if kindIs "map" $value -}}
{{- include "costd.integers" $value -}}
{{- else if kindIs "slice" $value -}}
{{- range $value -}}
{{- if kindIs "map" . -}}
{{- include "costd.integers" . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
