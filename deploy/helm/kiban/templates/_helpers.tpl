{{/* Names and labels (app.kubernetes.io/*) shared by every object. */}}

{{- define "kiban.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kiban.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name of one service's objects: <release>-<service>. */}}
{{- define "kiban.fullname" -}}
{{- printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kiban.commonLabels" -}}
helm.sh/chart: {{ include "kiban.chart" . }}
app.kubernetes.io/part-of: kiban
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one service: {root, name}. */}}
{{- define "kiban.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* All labels of one service's objects: {root, name, svc}. */}}
{{- define "kiban.labels" -}}
{{ include "kiban.commonLabels" .root }}
{{ include "kiban.selectorLabels" . }}
app.kubernetes.io/component: {{ .name }}
kiban.jp/zone: {{ .svc.zone }}
{{- end -}}

{{- define "kiban.namespace" -}}
{{- $zone := index .root.Values.zones .zone -}}
{{- $zone.namespace -}}
{{- end -}}

{{- define "kiban.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* A service's settings merged over serviceDefaults: {root, name} → YAML of the dict. */}}
{{- define "kiban.service" -}}
{{- $svc := index .root.Values.services .name -}}
{{- $merged := mustMergeOverwrite (deepCopy .root.Values.serviceDefaults) (deepCopy $svc) -}}
{{- toYaml $merged -}}
{{- end -}}

{{/* Peer rules of a NetworkPolicy: a target {cidrs, namespace, podLabels}. An empty `to` would
allow every destination, so a target without CIDRs or a namespace stops the render. */}}
{{- define "kiban.peers" -}}
{{- if and (empty .cidrs) (empty .namespace) -}}
{{- fail "an egress target (kafka, postgres.core, postgres.information, dns) needs cidrs or a namespace" -}}
{{- end -}}
{{- range .cidrs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- if .namespace }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .namespace }}
  {{- with .podLabels }}
  podSelector:
    matchLabels:
      {{- toYaml . | nindent 6 }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "kiban.ports" -}}
{{- range . }}
- protocol: TCP
  port: {{ . }}
{{- end }}
{{- end -}}

{{/* The container env of one service: {root, name, svc}. */}}
{{- define "kiban.env" -}}
{{- $v := .root.Values -}}
- name: KIBAN_ZONE
  value: {{ .svc.zone | quote }}
- name: KIBAN_BUS
  value: kafka
- name: KIBAN_KAFKA_BOOTSTRAP
  value: {{ $v.kafka.bootstrap | quote }}
- name: KIBAN_KAFKA__SECURITY_PROTOCOL
  value: {{ $v.kafka.securityProtocol | quote }}
{{- if $v.kafka.existingSecret }}
- name: KIBAN_KAFKA__SASL_MECHANISM
  value: {{ $v.kafka.saslMechanism | quote }}
- name: KIBAN_KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ $v.kafka.existingSecret }}, key: username}
- name: KIBAN_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $v.kafka.existingSecret }}, key: password}
{{- end }}
- name: KIBAN_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ .svc.databaseSecret }}, key: database-url}
- name: KIBAN_HTTP__HOST
  value: "0.0.0.0"
- name: KIBAN_HTTP__PORT
  value: {{ .svc.port | quote }}
- name: KIBAN_STATE_DIR
  value: /tmp/kiban
- name: KIBAN_AUTH__ISSUER
  value: {{ $v.auth.issuer | quote }}
{{- if $v.auth.audience }}
- name: KIBAN_AUTH__AUDIENCE
  value: {{ $v.auth.audience | quote }}
{{- end }}
{{- if and $v.auth.jwksUrl (eq .svc.zone "information") }}
- name: KIBAN_AUTH__JWKS_URL
  value: {{ $v.auth.jwksUrl | quote }}
{{- else }}
- name: KIBAN_AUTH__JWKS_FILE
  value: /var/run/kiban/jwks/jwks.json
{{- end }}
- name: KIBAN_CRYPTO__KEYS_FILE
  value: /var/run/kiban/keys/keys.json
- name: KIBAN_CRYPTO__SEALING_PUBLIC_KEY_FILE
  value: /var/run/kiban/sealing-public/public.pem
{{- if eq .svc.zone "core" }}
- name: KIBAN_CRYPTO__SEALING_PRIVATE_KEY_FILE
  value: /var/run/kiban/sealing-private/private.pem
{{- end }}
{{- /* Core: who may call at all. Both zones: who may scrape /metrics. */}}
- name: KIBAN_ZONE_GUARD__ALLOWED_NETWORKS
  value: {{ $v.zoneGuard.allowedNetworks | toJson | quote }}
{{- if has .name (list "anonymizer" "release") }}
- name: KIBAN_FILES_DIR
  value: {{ $v.fileStore.mountPath | quote }}
{{- end }}
- name: KIBAN_TELEMETRY__EXPORTER
  value: {{ $v.telemetry.exporter | quote }}
{{- if $v.telemetry.otlpEndpoint }}
- name: KIBAN_TELEMETRY__OTLP_ENDPOINT
  value: {{ $v.telemetry.otlpEndpoint | quote }}
{{- end }}
{{- range $key, $value := .svc.env }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Volumes (secrets by reference, writable /tmp, file store): {root, name, svc}. */}}
{{- define "kiban.volumes" -}}
{{- $v := .root.Values -}}
- name: tmp
  emptyDir: {sizeLimit: 1Gi}
- name: field-keys
  secret:
    secretName: {{ index $v.keys.fieldKeysSecret .svc.zone }}
    defaultMode: 0400
- name: sealing-public
  secret:
    secretName: {{ $v.keys.sealingPublicKeySecret }}
    defaultMode: 0444
{{- if eq .svc.zone "core" }}
- name: sealing-private
  secret:
    secretName: {{ $v.keys.sealingPrivateKeySecret }}
    defaultMode: 0400
{{- end }}
{{- if not (and $v.auth.jwksUrl (eq .svc.zone "information")) }}
- name: jwks
  secret:
    secretName: {{ $v.auth.jwksExistingSecret }}
    defaultMode: 0444
{{- end }}
{{- if has .name (list "anonymizer" "release") }}
- name: files
  {{- if $v.fileStore.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ $v.fileStore.existingClaim }}
    readOnly: {{ eq .name "release" }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "kiban.volumeMounts" -}}
{{- $v := .root.Values -}}
- {name: tmp, mountPath: /tmp}
- {name: field-keys, mountPath: /var/run/kiban/keys, readOnly: true}
- {name: sealing-public, mountPath: /var/run/kiban/sealing-public, readOnly: true}
{{- if eq .svc.zone "core" }}
- {name: sealing-private, mountPath: /var/run/kiban/sealing-private, readOnly: true}
{{- end }}
{{- if not (and $v.auth.jwksUrl (eq .svc.zone "information")) }}
- {name: jwks, mountPath: /var/run/kiban/jwks, readOnly: true}
{{- end }}
{{- if has .name (list "anonymizer" "release") }}
- {name: files, mountPath: {{ $v.fileStore.mountPath }}, readOnly: {{ eq .name "release" }}}
{{- end }}
{{- end -}}

{{- define "kiban.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "kiban.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
