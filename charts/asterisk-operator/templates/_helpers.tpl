{{/* The chart name, unless overridden. */}}
{{- define "asterisk-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix: <release>-<chart>, or the release alone when it already names the chart. */}}
{{- define "asterisk-operator.fullname" -}}
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

{{/* Labels every object carries. */}}
{{- define "asterisk-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "asterisk-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels selecting the controller pods. */}}
{{- define "asterisk-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "asterisk-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "asterisk-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "asterisk-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "asterisk-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The controller's rules: exactly the calls it makes (tests/chart_rbac.rs keeps them equal). */}}
{{- define "asterisk-operator.rules" }}
rules:
  # The fleet: watched; finalizers on every resource (a deletion waits until nothing of it is
  # left on a node); conditions through the status subresource (server-side apply).
  - apiGroups: ["asterisk.operator.dev"]
    resources: ["asterisknodes", "trunks", "phones", "blfsubscriptions"]
    verbs: ["list", "watch", "patch"]
  - apiGroups: ["asterisk.operator.dev"]
    resources: ["asterisknodes/status", "trunks/status", "phones/status", "blfsubscriptions/status"]
    verbs: ["patch"]
  # Secrets: listed and watched only with the label asterisk.operator.dev/secret (RBAC cannot
  # express a label; the code asks for no other), created when generated (default phone and
  # trunk secrets, each node's credentials, the mesh CA), read back by name and labelled when one
  # it made before the label exists, patched to add a node's mesh keys.
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["get", "list", "watch", "create", "patch"]
  # Managed nodes' workloads, by server-side apply; the StatefulSet's status says when its pod runs.
  - apiGroups: [""]
    resources: ["services"]
    verbs: ["patch"]
  - apiGroups: ["apps"]
    resources: ["statefulsets"]
    verbs: ["patch"]
  - apiGroups: ["apps"]
    resources: ["statefulsets/status"]
    verbs: ["get"]
  # Events about the resources (kube-rs's recorder: created, then patched as a series repeats).
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]
{{- end }}
