{{- define "hh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "ingest") */}}
{{- define "hh.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hh.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "hh.keysSecret" -}}
{{ .Values.keys.existingSecret | default (printf "%s-keys" (include "hh.fullname" .)) }}
{{- end -}}

{{- define "hh.connectionsSecret" -}}
{{ .Values.connections.existingSecret | default (printf "%s-connections" (include "hh.fullname" .)) }}
{{- end -}}

{{/* The pod template of one component: (dict "root" $ "component" "worker" "command" "hh-worker"
     "values" .Values.worker "env" (list ...)) */}}
{{- define "hh.podTemplate" -}}
{{- $root := .root -}}
{{- $values := .values -}}
metadata:
  labels:
    {{- include "hh.selector" . | nindent 4 }}
    {{- with $root.Values.podLabels }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    # A changed config or key rolls the pods (the processes read them at start).
    checksum/config: {{ include (print $root.Template.BasePath "/config.yaml") $root | sha256sum }}
    {{- with $root.Values.podAnnotations }}{{ toYaml . | nindent 4 }}{{ end }}
spec:
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets: {{ toYaml . | nindent 4 }}
  {{- end }}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
  securityContext: {{ toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- if $root.Values.topologySpread.enabled }}
  topologySpreadConstraints:
    {{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
    - maxSkew: {{ $root.Values.topologySpread.maxSkew }}
      topologyKey: {{ $key }}
      whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
      labelSelector:
        matchLabels: {{- include "hh.selector" (dict "root" $root "component" $.component) | nindent 10 }}
    {{- end }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "hh.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: [{{ .command | quote }}]
      securityContext: {{ toYaml $root.Values.securityContext | nindent 8 }}
      env:
        - name: HH_CONFIG
          value: /etc/hh-callbacks/config.toml
        - name: HH_AMQP_URL
          valueFrom: {secretKeyRef: {name: {{ include "hh.connectionsSecret" $root }}, key: amqp-url}}
        - name: HH_AMQP_URLS  # a cluster's nodes, if the Secret lists them
          valueFrom: {secretKeyRef: {name: {{ include "hh.connectionsSecret" $root }}, key: amqp-urls, optional: true}}
        - name: HH_MONGO_URL
          valueFrom: {secretKeyRef: {name: {{ include "hh.connectionsSecret" $root }}, key: mongo-url}}
        {{- with .env }}{{ toYaml . | nindent 8 }}{{ end }}
        {{- with $root.Values.extraEnv }}{{ toYaml . | nindent 8 }}{{ end }}
      ports:
        - name: http
          containerPort: {{ $values.port }}
      startupProbe:  # the worker waits for the store and the broker before it consumes
        httpGet: {path: /healthz, port: {{ $values.port }}}
        periodSeconds: 5
        failureThreshold: 60
      livenessProbe:
        httpGet: {path: /healthz, port: {{ $values.port }}}
        periodSeconds: 10
        failureThreshold: 3
      readinessProbe:
        httpGet: {path: /readyz, port: {{ $values.port }}}
        periodSeconds: 5
      resources: {{ toYaml $values.resources | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/hh-callbacks
          readOnly: true
  volumes:
    # config.toml and the key files it names, side by side (its key paths are relative).
    - name: config
      projected:
        defaultMode: 0440
        sources:
          - configMap:
              name: {{ include "hh.fullname" $root }}-config
          - secret:
              name: {{ include "hh.keysSecret" $root }}
          {{- with .extraSources }}{{ toYaml . | nindent 10 }}{{ end }}
  {{- with $values.nodeSelector }}
  nodeSelector: {{ toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.tolerations }}
  tolerations: {{ toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.affinity }}
  affinity: {{ toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
