// Package deploy holds what runs troupe outside `troupe dev`:
//
//   - images/ builds each service's OCI image without a Docker daemon, with go-containerregistry
//     (the library crane and ko are built on): layers and configs written in Go, no base image
//     pulled, the output an OCI layout and `docker load` tarballs.
//   - charts/troupe is troupe's Helm chart: the four services, a 3-node NATS JetStream cluster
//     (the official NATS chart, as a dependency), least-privilege RBAC per service. It is plain
//     Helm so that Helm, Flux, Argo CD and troupe itself install it alike; its tests render it
//     with troupe's renderer and with the Helm CLI and require the same objects.
//   - charts/ packages the chart's dependency with Helm's own SDK (the chart loader and
//     chartutil.Save that `helm package` runs), so `make deploy-deps` needs neither the Helm CLI
//     nor the network; and writes the chart README's values table from values.schema.json, the
//     one place values are described.
//   - monitoring/ is what operators watch troupe with: the alerting rules (a PrometheusRule) and a
//     Grafana dashboard, which the chart ships when asked, and the test that evaluates the rules
//     with Prometheus's PromQL engine on the services' real /metrics.
package deploy
