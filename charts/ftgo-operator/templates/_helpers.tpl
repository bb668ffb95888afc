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

{{- /* The operator's image, also run by the `helm test` Pod. */ -}}
{{- define "ftgo-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- /* Where the operator pods are scheduled, and the test Pod with them: it runs the same image. */ -}}
{{- define "ftgo-operator.scheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
