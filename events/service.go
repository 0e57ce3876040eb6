package events

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// Metadata keys of a troupe service's $SRV.INFO.
const (
	MetaConsumes = "troupe.consumes"
	MetaProduces = "troupe.produces"
	// MetaSubjects is the release subjects the service works on: a sandbox's services
	// (NewNames) are told apart from the live ones by it.
	MetaSubjects = "troupe.subjects"
)

var serviceNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ServiceInfo is what a service advertises for discovery.
type ServiceInfo struct {
	Name     string
	Version  string // semver; default: this build's (Version)
	Consumes []string
	Produces []string
	Names    Names // the system it works in: the live one (zero) or a sandbox
}

// RegisterService registers a NATS micro service named info.Name, so that $SRV.PING, $SRV.INFO
// and $SRV.STATS answer for it, with the event types it consumes and produces in its metadata
// (comma-separated, under MetaConsumes and MetaProduces). That is how `troupe graph` discovers the
// choreography live. Stop the returned service when the service stops.
func RegisterService(js jetstream.JetStream, info ServiceInfo) (micro.Service, error) {
	if !serviceNameRE.MatchString(info.Name) {
		return nil, fmt.Errorf("register service: name %q must be letters, digits, '-' and '_'", info.Name)
	}
	version := info.Version
	if version == "" || version == "dev" {
		version = Version()
	}
	svc, err := micro.AddService(js.Conn(), micro.Config{
		Name:        info.Name,
		Version:     version,
		Description: "troupe service " + info.Name,
		Metadata: map[string]string{
			MetaConsumes: strings.Join(info.Consumes, ","),
			MetaProduces: strings.Join(info.Produces, ","),
			MetaSubjects: info.Names.ReleaseSubjects(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("register service %s: %w", info.Name, err)
	}
	return svc, nil
}
