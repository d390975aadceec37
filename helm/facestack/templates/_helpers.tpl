{{/* vim: set filetype=mustache: */}}

{{- define "facestack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name; kept short enough for "-gateway-canary" (15 characters) to fit in 63. */}}
{{- define "facestack.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "facestack.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object (chart, version, commonLabels). */}}
{{- define "facestack.labels" -}}
{{- include "facestack.labelsWith" (dict "root" .) -}}
{{- end -}}

{{/*
Labels on an object, with `extra` (a YAML map) merged in: dict root, extra. One map, so no key is written
twice (Flux and kustomize reject duplicate keys); `extra` wins over commonLabels.
*/}}
{{- define "facestack.labelsWith" -}}
{{- $labels := dict "helm.sh/chart" (include "facestack.chart" .root) "app.kubernetes.io/name" (include "facestack.name" .root) "app.kubernetes.io/instance" .root.Release.Name "app.kubernetes.io/version" (.root.Chart.AppVersion | toString) "app.kubernetes.io/managed-by" .root.Release.Service "app.kubernetes.io/part-of" "facestack" -}}
{{- $labels = mergeOverwrite $labels (deepCopy (default dict .root.Values.commonLabels)) (fromYaml (default "" .extra)) -}}
{{- toYaml $labels -}}
{{- end -}}

{{/*
Pod template labels: selector labels, commonLabels and podLabels, but not the chart or app version, so that a
chart bump alone does not restart (GPU) pods: dict root, selector (selector labels YAML), podLabels.
*/}}
{{- define "facestack.podLabels" -}}
{{- $labels := dict "app.kubernetes.io/part-of" "facestack" "app.kubernetes.io/managed-by" .root.Release.Service -}}
{{- $labels = mergeOverwrite $labels (deepCopy (default dict .root.Values.commonLabels)) (deepCopy (default dict .podLabels)) (fromYaml .selector) -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* Labels that select one component's pods across tracks: dict root, component. */}}
{{- define "facestack.componentLabels" -}}
app.kubernetes.io/name: {{ include "facestack.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selector labels of one component on one track (stable or canary): dict root, component, track. */}}
{{- define "facestack.selectorLabels" -}}
{{ include "facestack.componentLabels" . }}
facestack.io/track: {{ .track }}
{{- end -}}

{{/* Object name of a component on a track: <fullname>-<component>[-canary]. */}}
{{- define "facestack.componentName" -}}
{{- $base := printf "%s-%s" (include "facestack.fullname" .root) .component -}}
{{- if eq .track "canary" -}}{{ printf "%s-canary" $base }}{{- else -}}{{ $base }}{{- end -}}
{{- end -}}

{{/* The tracks to render: stable, plus canary when enabled. Returns a JSON list. */}}
{{- define "facestack.tracks" -}}
{{- if .Values.canary.enabled -}}["stable","canary"]{{- else -}}["stable"]{{- end -}}
{{- end -}}

{{- define "facestack.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "facestack.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* image reference: dict image (repository/tag/digest), root. */}}
{{- define "facestack.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* Gateway values for a track (canary: gateway merged with canary.gateway.overrides), as YAML. */}}
{{- define "facestack.gateway.values" -}}
{{- $v := deepCopy .root.Values.gateway -}}
{{- if eq .track "canary" -}}
{{- $v = mergeOverwrite $v (deepCopy (default dict .root.Values.canary.gateway.overrides)) -}}
{{- end -}}
{{- toYaml $v -}}
{{- end -}}

{{/* Triton values for a track (canary: triton merged with canary.triton.overrides), as YAML. */}}
{{- define "facestack.triton.values" -}}
{{- $v := deepCopy .root.Values.triton -}}
{{- if eq .track "canary" -}}
{{- $over := deepCopy (default dict .root.Values.canary.triton.overrides) -}}
{{- $v = mergeOverwrite $v $over -}}
{{- /* A model's version policy is one choice (latest / all / specific): an overridden one replaces the stable
one instead of merging into it (two choices would make Triton reject the config). */}}
{{- range $model, $policy := (($over.modelRepository | default dict).versionPolicy | default dict) -}}
{{- $_ := set $v.modelRepository.versionPolicy $model $policy -}}
{{- end -}}
{{- end -}}
{{- toYaml $v -}}
{{- end -}}

{{/* The Triton tracks: stable, plus canary when the canary track runs its own Triton. */}}
{{- define "facestack.tritonTracks" -}}
{{- if and .Values.canary.enabled .Values.canary.triton.enabled -}}["stable","canary"]{{- else -}}["stable"]{{- end -}}
{{- end -}}

{{/* The Triton Service a gateway track calls. */}}
{{- define "facestack.gateway.tritonService" -}}
{{- if and (eq .track "canary") .root.Values.canary.triton.enabled -}}
{{- include "facestack.componentName" (dict "root" .root "component" "triton" "track" "canary") -}}
{{- else -}}
{{- include "facestack.componentName" (dict "root" .root "component" "triton" "track" "stable") -}}
{{- end -}}
{{- end -}}

{{- define "facestack.apiKeysSecretName" -}}
{{- if .Values.gateway.apiKeys.existingSecret -}}
{{- .Values.gateway.apiKeys.existingSecret -}}
{{- else -}}
{{- printf "%s-api-keys" (include "facestack.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Name of the Milvus token Secret, empty when there is no token. */}}
{{- define "facestack.milvusSecretName" -}}
{{- if .Values.milvusConnection.existingSecret -}}
{{- .Values.milvusConnection.existingSecret -}}
{{- else if .Values.milvusConnection.token -}}
{{- printf "%s-milvus" (include "facestack.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* preStop: the sleep action from Kubernetes 1.30 (no shell needed), an exec sleep before. dict root, seconds. */}}
{{- define "facestack.preStop" -}}
preStop:
{{- if semverCompare ">=1.30.0-0" .root.Capabilities.KubeVersion.Version }}
  sleep:
    seconds: {{ .seconds }}
{{- else }}
  exec:
    command: ["sleep", "{{ .seconds }}"]
{{- end }}
{{- end -}}

{{/* topologySpreadConstraints over zones and nodes: dict root, spread (values), labels (selector labels YAML). */}}
{{- define "facestack.topologySpread" -}}
{{- if .spread.enabled }}
topologySpreadConstraints:
{{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - topologyKey: {{ $key }}
    maxSkew: {{ $.spread.maxSkew }}
    whenUnsatisfiable: {{ $.spread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- $.labels | nindent 8 }}
    matchLabelKeys:
      - pod-template-hash
{{- end }}
{{- end }}
{{- end -}}

{{/* Regex of the Triton Services (all tracks) and gateway Services, for PromQL matchers. */}}
{{- define "facestack.tritonServiceRegex" -}}
{{- printf "%s(-canary)?" (include "facestack.componentName" (dict "root" . "component" "triton" "track" "stable")) -}}
{{- end -}}
{{- define "facestack.gatewayServiceRegex" -}}
{{- printf "%s(-canary)?" (include "facestack.componentName" (dict "root" . "component" "gateway" "track" "stable")) -}}
{{- end -}}

{{/*
Queue time per request (seconds) of the slowest composing model, the autoscaling signal.
dict: models (list), window, matchers (PromQL label matchers, no braces), by (grouping labels).
rate(queue µs) / rate(successes) per model, then the max over the models. clamp_min keeps an idle
Triton at 0 instead of NaN (0/0), so the HPA can scale down to minReplicas.
*/}}
{{- define "facestack.triton.queueQuery" -}}
{{- $sel := printf "%s,model=~\"%s\"" .matchers (join "|" .models) -}}
max by ({{ .by }}) (sum by ({{ .by }}, model) (rate(nv_inference_queue_duration_us{ {{- $sel -}} }[{{ .window }}])) / clamp_min(sum by ({{ .by }}, model) (rate(nv_inference_request_success{ {{- $sel -}} }[{{ .window }}])), 0.001)) / 1e6
{{- end -}}

{{/* Calls the gateways hold back for a Triton Service (waiting for a bulkhead slot), averaged over the window:
     dict matchers (selecting the calling gateways' series), window. */}}
{{- define "facestack.triton.backlogQuery" -}}
sum(avg_over_time(facestack_triton_waiting{ {{- .matchers -}} }[{{ .window }}]))
{{- end -}}

{{/* The gateway Services whose calls go to a Triton track (dict root, track), as a JSON list: the canary gateway
     calls the canary Triton when it runs, else the stable one. */}}
{{- define "facestack.triton.callers" -}}
{{- $gw := include "facestack.componentName" (dict "root" .root "component" "gateway" "track" "stable") -}}
{{- $canary := include "facestack.componentName" (dict "root" .root "component" "gateway" "track" "canary") -}}
{{- if eq .track "canary" -}}{{ list $canary | toJson }}
{{- else if and .root.Values.canary.enabled (not .root.Values.canary.triton.enabled) -}}{{ list $gw $canary | toJson }}
{{- else -}}{{ list $gw | toJson }}
{{- end -}}
{{- end -}}

{{/* Names of the custom / external metrics that the prometheus-adapter rules serve. */}}
{{- define "facestack.metric.tritonQueue" -}}facestack_triton_queue_seconds{{- end -}}
{{- define "facestack.metric.tritonBacklog" -}}facestack_triton_backlog_calls{{- end -}}
{{- define "facestack.metric.gatewayRps" -}}facestack_http_requests_per_second{{- end -}}
