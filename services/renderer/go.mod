module github.com/troupe-dev/troupe/services/renderer

go 1.26.8

replace github.com/troupe-dev/troupe/events => ../../events

require (
	github.com/blang/semver/v4 v4.0.0 // indirect
	helm.sh/helm/v4 v4.3.1 // indirect
	sigs.k8s.io/kustomize/api v0.21.2 // indirect
	sigs.k8s.io/kustomize/kyaml v0.21.2 // indirect
)
