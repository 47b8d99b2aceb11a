{{/*
The chart's name.
*/}}
{{- define "model-serving.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Every object is named after the release: one release is one deployment, and the deployer names
the release after the deployment's k8s_service_name, so the Service carries that name too.
*/}}
{{- define "model-serving.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "model-serving.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The deployment id as digits. Values files give numbers as float64, which print as 1e+07 past a
million, so the value goes through int64 (the schema has already checked it).
*/}}
{{- define "model-serving.deploymentId" -}}
{{- if kindIs "string" .Values.deploymentId }}
{{- .Values.deploymentId }}
{{- else }}
{{- int64 .Values.deploymentId | toString }}
{{- end }}
{{- end }}

{{- define "model-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "model-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "model-serving.labels" -}}
helm.sh/chart: {{ include "model-serving.chart" . }}
{{ include "model-serving.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | toString | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: model-server
app.kubernetes.io/part-of: modelport
app.kubernetes.io/managed-by: {{ .Release.Service }}
modelport.io/deployment-id: {{ include "model-serving.deploymentId" . | quote }}
{{- end }}

{{- define "model-serving.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "model-serving.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "model-serving.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository ((default .Chart.AppVersion .Values.image.tag) | toString) }}
{{- end }}
{{- end }}

{{/*
The ingress path, which is also the server's ROOT_PATH: {basePath}/{deploymentId}.
*/}}
{{- define "model-serving.path" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.ingress.basePath) (include "model-serving.deploymentId" .) }}
{{- end }}

{{/*
The Secret with the S3 credentials: s3.existingSecret, else the one this chart creates from
s3.accessKey and s3.secretKey, else none (the default AWS credential chain).
*/}}
{{- define "model-serving.createSecret" -}}
{{- if and (not .Values.s3.existingSecret) .Values.s3.accessKey .Values.s3.secretKey }}true{{ end }}
{{- end }}

{{- define "model-serving.secretName" -}}
{{- if .Values.s3.existingSecret }}
{{- .Values.s3.existingSecret }}
{{- else if include "model-serving.createSecret" . }}
{{- printf "%s-s3" (include "model-serving.fullname" . | trunc 60 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{/*
The public URL of the deployment, as NOTES.txt prints it.
*/}}
{{- define "model-serving.url" -}}
{{- $path := include "model-serving.path" . }}
{{- if .Values.ingress.publicBaseUrl }}
{{- printf "%s%s" (trimSuffix "/" .Values.ingress.publicBaseUrl) $path }}
{{- else }}
{{- $tls := false }}
{{- range .Values.ingress.tls }}
{{- if has $.Values.ingress.host (.hosts | default list) }}{{ $tls = true }}{{ end }}
{{- end }}
{{- printf "%s://%s%s" (ternary "https" "http" $tls) (default "<ingress-address>" .Values.ingress.host) $path }}
{{- end }}
{{- end }}

{{/*
Checks the schema cannot express.
*/}}
{{- define "model-serving.validate" -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%v) must not exceed autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not (dig "requests" "cpu" "" .Values.resources)) }}
{{- fail "autoscaling.enabled needs resources.requests.cpu: the HPA scales on CPU utilization of the request" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- end }}
