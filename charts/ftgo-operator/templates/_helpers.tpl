{{- define "ftgo-operator.labels" -}}
app.kubernetes.io/name: ftgo-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "ftgo-operator.selector" -}}
app.kubernetes.io/name: ftgo-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
