package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	nodefast "sigs.k8s.io/kwok/kustomize/stage/node/fast"
	nodeheartbeat "sigs.k8s.io/kwok/kustomize/stage/node/heartbeat-with-lease"
	podfast "sigs.k8s.io/kwok/kustomize/stage/pod/fast"
	"sigs.k8s.io/yaml"
)

// FaultAnnotation on a pod (set it in a Deployment's pod template) makes the fake node fail it
// in one of these ways instead of making it Ready.
const FaultAnnotation = "troupe.dev/kwok-fault"

// Faults a pod can be given with FaultAnnotation.
const (
	// FaultCrashLoop: the pod runs, its containers keep exiting with code 1 and are in
	// CrashLoopBackOff.
	FaultCrashLoop = "crashloop"
	// FaultImagePull: the pod stays Pending, its containers waiting in ImagePullBackOff.
	FaultImagePull = "image-pull-error"
	// FaultNeverReady: the pod runs, its containers never pass readiness.
	FaultNeverReady = "never-ready"
	// FaultFail: the pod fails, its containers exited with code 1 (a Job's pod that failed).
	FaultFail = "fail"
)

// stageFiles writes kwok's stock fast stages (from the kwok module, as kwok ships them), with
// pod-ready changed to leave faulted pods alone, plus one stage per fault. It returns the paths.
func stageFiles(dir string) ([]string, error) {
	podReady, err := excludeFaulted(podfast.DefaultPodReady)
	if err != nil {
		return nil, err
	}
	stages := map[string]string{
		"node-initialize":           nodefast.DefaultNodeInit,
		"node-heartbeat-with-lease": nodeheartbeat.DefaultNodeHeartbeatWithLease,
		"pod-ready":                 podReady,
		"pod-complete":              podfast.DefaultPodComplete,
		"pod-delete":                podfast.DefaultPodDelete,
		"pod-fault-crashloop":       faultStage(FaultCrashLoop, crashLoopStatus),
		"pod-fault-image-pull":      faultStage(FaultImagePull, imagePullStatus),
		"pod-fault-never-ready":     faultStage(FaultNeverReady, neverReadyStatus),
		"pod-fault-fail":            faultStage(FaultFail, failStatus),
	}
	var paths []string
	for name, body := range stages {
		p := filepath.Join(dir, "stage-"+name+".yaml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// excludeFaulted adds "has no fault annotation" to a stage's selector.
func excludeFaulted(stage string) (string, error) {
	var s map[string]any
	if err := yaml.Unmarshal([]byte(stage), &s); err != nil {
		return "", fmt.Errorf("kwok stage: %w", err)
	}
	spec, _ := s["spec"].(map[string]any)
	sel, _ := spec["selector"].(map[string]any)
	if sel == nil {
		return "", fmt.Errorf("kwok stage has no selector: kwok's stage format changed")
	}
	exprs, _ := sel["matchExpressions"].([]any)
	sel["matchExpressions"] = append(exprs, map[string]any{
		"key": `.metadata.annotations["` + FaultAnnotation + `"]`, "operator": "DoesNotExist",
	})
	b, err := yaml.Marshal(s)
	return string(b), err
}

// faultStage moves a scheduled, pending pod annotated with fault into status, once.
func faultStage(fault, status string) string {
	return strings.NewReplacer("FAULT", fault, "STATUS", indent(status, "      ")).Replace(`apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-fault-FAULT
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.metadata.annotations["` + FaultAnnotation + `"]'
      operator: 'In'
      values: ['FAULT']
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
    - key: '.status.containerStatuses'
      operator: 'DoesNotExist'
  next:
    event:
      type: Warning
      reason: FaultInjected
      message: 'troupe test fault: FAULT'
    statusTemplate: |
STATUS
`)
}

func indent(s, by string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = by + l
	}
	return strings.Join(lines, "\n")
}

// faultStatus is the status template of a pod whose containers are not ready: in phase, each
// container reported as container (a template, with the container as dot).
func faultStatus(phase, container string) string {
	return `{{ $now := Now }}
phase: ` + phase + `
conditions:
- {lastTransitionTime: {{ $now | Quote }}, status: "True", type: Initialized}
- {lastTransitionTime: {{ $now | Quote }}, status: "False", type: Ready, reason: ContainersNotReady}
- {lastTransitionTime: {{ $now | Quote }}, status: "False", type: ContainersReady, reason: ContainersNotReady}
- {lastTransitionTime: {{ $now | Quote }}, status: "True", type: PodScheduled}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
` + container + `{{ end }}
startTime: {{ $now | Quote }}
`
}

// The status each fault leaves a pod in, as the kubelet would report it.
var (
	crashLoopStatus = faultStatus("Running", `  started: false
  restartCount: 5
  state:
    waiting:
      reason: CrashLoopBackOff
      message: {{ printf "back-off 2m40s restarting failed container=%s" .name | Quote }}
  lastState:
    terminated:
      exitCode: 1
      reason: Error
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}
`)
	imagePullStatus = faultStatus("Pending", `  started: false
  restartCount: 0
  state:
    waiting:
      reason: ImagePullBackOff
      message: {{ printf "Back-off pulling image %q" .image | Quote }}
`)
	failStatus = faultStatus("Failed", `  started: false
  restartCount: 0
  state:
    terminated:
      exitCode: 1
      reason: Error
      message: troupe test fault
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}
`)
	neverReadyStatus = faultStatus("Running", `  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
`)
)
