{{/* Names, labels and the values-derived pieces the templates share. */}}

{{- define "oclip.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "oclip.fullname" -}}
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

{{- define "oclip.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "oclip.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: server
{{- end }}

{{- define "oclip.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oclip.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "oclip.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "oclip.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "oclip.image" -}}
{{- $tag := .Values.image.tag | default (printf "%s-%s" .Chart.AppVersion .Values.image.variant) }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{- define "oclip.tlsSecretName" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "oclip.fullname" .)) }}
{{- end }}

{{- define "oclip.authSecretName" -}}
{{- .Values.auth.secretName | default (printf "%s-auth" (include "oclip.fullname" .)) }}
{{- end }}

{{- define "oclip.cacheClaimName" -}}
{{- .Values.cache.persistence.existingClaim | default (printf "%s-cache" (include "oclip.fullname" .)) }}
{{- end }}

{{/*
Whether a model's checkpoint is fetched by an init container: its `fetch`
key, else true for a registry tag (not "random", not a path to a file).
*/}}
{{- define "oclip.fetchModel" -}}
{{- $p := toString .pretrained -}}
{{- if hasKey . "fetch" -}}
{{- if .fetch }}true{{ end -}}
{{- else if and $p (ne $p "random") (not (contains "/" $p)) (not (hasSuffix ".safetensors" $p)) (not (hasSuffix ".bin" $p)) (not (hasSuffix ".pt" $p)) -}}
true
{{- end -}}
{{- end }}

{{/* Mount points of the files server.yaml names. */}}
{{- define "oclip.configDir" -}}/etc/oclip/config{{- end }}
{{- define "oclip.tlsDir" -}}/etc/oclip/tls{{- end }}
{{- define "oclip.authDir" -}}/etc/oclip/auth{{- end }}

{{/*
A probe against grpc.health.v1, service "" (every model loaded): native
gRPC in plaintext, `oclip client health` over TLS.
*/}}
{{- define "oclip.healthProbe" -}}
{{- $root := .root -}}
{{- if $root.Values.tls.enabled }}
exec:
  command:
    - oclip
    - client
    - health
    - --address
    - {{ printf "127.0.0.1:%d" (int $root.Values.server.grpcPort) | quote }}
    - --tls-ca
    - {{ include "oclip.tlsDir" $root }}/ca.crt
    - --tls-server-name
    - {{ $root.Values.tls.serverName | default (include "oclip.fullname" $root) | quote }}
    {{- if $root.Values.tls.clientAuth }}
    - --tls-cert
    - {{ include "oclip.tlsDir" $root }}/tls.crt
    - --tls-key
    - {{ include "oclip.tlsDir" $root }}/tls.key
    {{- end }}
    - --timeout
    - {{ printf "%ds" (int .probe.timeoutSeconds) | quote }}
{{- else }}
grpc:
  port: {{ $root.Values.server.grpcPort }}
  service: ""
{{- end }}
periodSeconds: {{ .probe.periodSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
{{- end }}

{{/* Checks of values that would otherwise fail only inside the cluster. */}}
{{- define "oclip.validate" -}}
{{- if not .Values.models }}
{{- fail "models: at least one model is required" }}
{{- end }}
{{- range $i, $m := .Values.models }}
{{- if not $m.name }}
{{- fail (printf "models[%d].name is required" $i) }}
{{- end }}
{{- range ($m.devices | default list) }}
{{- if and (hasPrefix "cuda" .) (eq (int $.Values.gpu.count) 0) }}
{{- fail (printf "models[%d] (%s) runs on %s but gpu.count is 0" $i $m.name .) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) (not (and .Values.tls.cert .Values.tls.key)) }}
{{- fail "tls.enabled: set tls.secretName, or tls.cert and tls.key" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) (not .Values.tls.ca) }}
{{- fail "tls.enabled: tls.ca is required (the probes verify the server with it)" }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.secretName) (not .Values.auth.tokens) }}
{{- fail "auth.enabled: set auth.secretName or auth.tokens" }}
{{- end }}
{{- end }}
