{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "objmig.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "objmig.fullname" -}}
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

{{- define "objmig.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "objmig.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: objmig
{{- end -}}

{{- define "objmig.selectorLabels" -}}
app.kubernetes.io/name: {{ include "objmig.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "objmig.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "objmig.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "objmig.workerServiceAccountName" -}}
{{- default (printf "%s-worker" (include "objmig.fullname" .)) .Values.workers.serviceAccount.name -}}
{{- end -}}

{{/* Images ----------------------------------------------------------------------------- */}}

{{- define "objmig.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "objmig.workerImage" -}}
{{- default (include "objmig.image" .) .Values.workers.image -}}
{{- end -}}

{{/* Leader election ------------------------------------------------------------------- */}}

{{/* "true" when the operator takes a Lease before it works: asked for, or more than one replica. */}}
{{- define "objmig.leaderElection" -}}
{{- $enabled := .Values.operator.leaderElection.enabled -}}
{{- $replicas := int .Values.operator.replicas -}}
{{- if and (gt $replicas 1) (eq (toString $enabled) "false") -}}
{{- fail "objmig: operator.replicas > 1 needs operator.leaderElection.enabled (two operators must never act at once)" -}}
{{- end -}}
{{- if or (eq (toString $enabled) "true") (and (eq (toString $enabled) "<nil>") (gt $replicas 1)) -}}true{{- end -}}
{{- end -}}

{{/* Namespaces ------------------------------------------------------------------------- */}}

{{/* Watched namespaces, de-duplicated, comma-joined ("" = the whole cluster). */}}
{{- define "objmig.watchNamespaces" -}}
{{- .Values.watchNamespaces | uniq | join "," -}}
{{- end -}}

{{/* Namespaces that get a worker ServiceAccount: the release's and every watched one. */}}
{{- define "objmig.workerNamespaces" -}}
{{- prepend (.Values.watchNamespaces | default list) .Release.Namespace | uniq | join "," -}}
{{- end -}}

{{/* Database --------------------------------------------------------------------------- */}}

{{/* Fails the render unless exactly one database source is configured. */}}
{{- define "objmig.validateDatabase" -}}
{{- $sources := 0 -}}
{{- if .Values.externalDatabase.existingSecret }}{{ $sources = add1 $sources }}{{ end -}}
{{- if .Values.externalDatabase.url }}{{ $sources = add1 $sources }}{{ end -}}
{{- if .Values.postgresql.enabled }}{{ $sources = add1 $sources }}{{ end -}}
{{- if ne (int $sources) 1 -}}
{{- fail "objmig: set exactly one of externalDatabase.existingSecret, externalDatabase.url or postgresql.enabled=true (the ledger database)" -}}
{{- end -}}
{{- end -}}

{{/* True ("true") when the chart itself knows the URL and keeps it in a Secret. */}}
{{- define "objmig.chartOwnsDatabaseSecret" -}}
{{- if or .Values.externalDatabase.url .Values.postgresql.enabled -}}true{{- end -}}
{{- end -}}

{{- define "objmig.databaseSecretName" -}}
{{- if .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.existingSecret -}}
{{- else -}}
{{- printf "%s-database" (include "objmig.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "objmig.databaseSecretKey" -}}
{{- if .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.key -}}
{{- else -}}
url
{{- end -}}
{{- end -}}

{{/*
The Secret worker pods read the URL from, as "name/key" (OBJMIG_DATABASE_SECRET), or "" when
workers get the URL as a plain value.
*/}}
{{- define "objmig.workerDatabaseSecret" -}}
{{- if .Values.externalDatabase.workerSecret.name -}}
{{- printf "%s/%s" .Values.externalDatabase.workerSecret.name .Values.externalDatabase.workerSecret.key -}}
{{- else if and (include "objmig.chartOwnsDatabaseSecret" .) .Values.watchNamespaces -}}
{{- printf "%s-database/url" (include "objmig.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "objmig.postgresqlHost" -}}
{{- printf "%s-postgresql.%s.svc" (include "objmig.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The bundled PostgreSQL's password: given, else the one already stored, else new. */}}
{{- define "objmig.postgresqlPassword" -}}
{{- if .Values.postgresql.auth.password -}}
{{- .Values.postgresql.auth.password -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-postgresql" (include "objmig.fullname" .)) -}}
{{- if and $existing $existing.data (index $existing.data "password") -}}
{{- index $existing.data "password" | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The ledger URL the chart stores (url, or the bundled PostgreSQL's). */}}
{{- define "objmig.databaseURL" -}}
{{- if .Values.externalDatabase.url -}}
{{- .Values.externalDatabase.url -}}
{{- else -}}
{{- $auth := .Values.postgresql.auth -}}
{{- printf "postgresql://%s:%s@%s:5432/%s" $auth.username (include "objmig.postgresqlPassword" . | urlquery) (include "objmig.postgresqlHost" .) $auth.database -}}
{{- end -}}
{{- end -}}

{{/* RBAC rules ------------------------------------------------------------------------- */}}

{{/*
What the operator does in each namespace it serves. Each rule is derived from a call in the
operator (docs/install.md, "Permissions", maps rule -> code); tests/k8s/test_packaging.py proves
the set sufficient by running the operator as this ServiceAccount and recording its requests.
*/}}
{{- define "objmig.namespacedRules" -}}
# Kopf lists and watches the resources it serves, and patches them (finalizer, annotations).
- apiGroups: ["objmig.dev"]
  resources: ["objectmigrations", "migrationcleanups"]
  verbs: ["list", "watch", "patch"]
# Status summaries (bounded, rate-limited).
- apiGroups: ["objmig.dev"]
  resources: ["objectmigrations/status", "migrationcleanups/status"]
  verbs: ["patch"]
# Worker Jobs carry an ownerReference with blockOwnerDeletion; clusters that enable the
# OwnerReferencesPermissionEnforcement admission plugin require this to set it.
- apiGroups: ["objmig.dev"]
  resources: ["objectmigrations/finalizers"]
  verbs: ["update"]
# Indexed worker Jobs: found by label, created, resized and suspended. Deleted only when their
# namespace is being deleted (a Job with backoffLimitPerIndex would hold its pods, and the
# namespace, forever); otherwise the garbage collector and ttlSecondsAfterFinished do it.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "create", "patch", "delete"]
# Events on transitions (kopf.event posts core/v1 Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Cutover action spec.cutover.configMapRef: read the old values, then patch; ConfigMaps a spec
# reads (a worklist, a caBundle): checked before Jobs are created.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "patch"]
{{- if .Values.rbac.readSecrets }}
# Secrets a spec references (checked before Jobs are created); the catalog DSN Secret.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- end -}}

{{/* Cluster-scoped reads Kopf makes even when it serves only some namespaces. */}}
{{- define "objmig.clusterRules" -}}
# Kopf notices CRDs appearing, changing or going away.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.watchNamespaces }}
# Kopf lists and watches namespaces to match its namespace list; the operator reads a
# resource's namespace to notice it being deleted.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- else }}
# The operator reads a resource's namespace to notice it being deleted.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
{{- end }}
{{- end -}}
