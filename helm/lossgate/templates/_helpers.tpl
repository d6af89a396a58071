{{/* Names and labels. */}}
{{- define "lossgate.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lossgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lossgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lossgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lossgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "lossgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "lossgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lossgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The rules the operator needs on the objects it watches and writes, wherever it watches them
(a ClusterRole when cluster-wide, a Role per namespace otherwise). Each verb is used by the code:
  modelrollouts            get/list/watch (kopf watches), patch (kopf's finalizer and annotations;
                           the operator removes handled lossgate.io/* annotations)
  modelrollouts/status     patch (the one status write per tick)
  modelrollouts/finalizers update (set the finalizer where OwnerReferencesPermissionEnforcement is on)
  events                   create (kopf.event for every decision)
  httproutes               get, patch (gateway router: read, then JSON patch of two weights);
                           list, watch (the routers' read cache: get_weights() reads the watched copy)
  virtualservices          get, patch (istio router); list, watch (the read cache)
  deployments              get, patch (replica router's total annotation; canary scale-down note);
                           list, watch (the read cache of the replica router)
  deployments/scale        get, patch (replica router and canary scale-down, through /scale only)
  services                 get (read only: the baseline and canary Services a rollout names)
  pods                     list (read only: the version label of the canary Deployment's Ready pods)
*/}}
{{- define "lossgate.rules" -}}
- apiGroups: [lossgate.io]
  resources: [modelrollouts]
  verbs: [get, list, watch, patch]
- apiGroups: [lossgate.io]
  resources: [modelrollouts/status]
  verbs: [patch]
- apiGroups: [lossgate.io]
  resources: [modelrollouts/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, patch]
- apiGroups: [networking.istio.io]
  resources: [virtualservices]
  verbs: [get, list, watch, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, patch]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
{{- end -}}

{{/* Secrets: get only, never list/watch; restricted to the named Secrets when names are given. */}}
{{- define "lossgate.secretRule" -}}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
  {{- with .Values.prometheus.authSecretNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
{{- end -}}

{{/* kopf's peering objects, when HA is on. */}}
{{- define "lossgate.peeringRule" -}}
- apiGroups: [kopf.dev]
  resources: [{{ if .Values.watchNamespaces }}kopfpeerings{{ else }}clusterkopfpeerings{{ end }}]
  verbs: [get, list, watch, patch]
{{- end -}}

{{- define "lossgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The label joiner (joiner.enabled): its own name label, so that no operator selector (Deployment,
Service, monitors) ever matches its pods. */}}
{{- define "lossgate.joinerName" -}}
{{- printf "%s-joiner" (include "lossgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lossgate.joinerSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-joiner" (include "lossgate.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lossgate.joinerLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "lossgate.joinerSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: joiner
{{- end -}}

{{/*
The notification sinks file: each sink as given, a urlSecretRef replaced by urlFrom.env (the
variable lossgate.notifyUrlEnv names, filled from the Secret in the Deployment).
*/}}
{{- define "lossgate.notificationsFile" -}}
{{- $sinks := list }}
{{- range $i, $s := .Values.notifications.sinks }}
{{- $out := omit $s "urlSecretRef" }}
{{- if $s.urlSecretRef }}
{{- $out = set $out "urlFrom" (dict "env" (printf "LOSSGATE_NOTIFY_URL_%d" $i)) }}
{{- end }}
{{- $sinks = append $sinks $out }}
{{- end }}
{{- dict "sinks" $sinks "retry" .Values.notifications.retry "queueSize" .Values.notifications.queueSize | toYaml }}
{{- end }}
