// Package deploy holds what runs troupe outside `troupe dev`: images/ builds each service's OCI
// image without a Docker daemon.
package deploy
