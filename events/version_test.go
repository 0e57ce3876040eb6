package events

import (
	"regexp"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
)

// semver is the Semantic Versioning 2.0 grammar NATS micro checks a service's version against.
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

func TestBuildVersion(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	for _, c := range []struct {
		info *debug.BuildInfo
		want string
	}{
		{nil, "0.0.0-dev"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "0.0.0-dev"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("9470604c1a2b3c4d5e6f", "false")}, "0.0.0-dev+9470604c1a2b"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("9470604c1a2b3c4d5e6f", "true")}, "0.0.0-dev+9470604c1a2b.dirty"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.2.0"}, Settings: vcs("9470604c1a2b", "false")}, "1.2.0"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261202013759-9470604c1a2b"}}, "0.0.0-20261202013759-9470604c1a2b"},
	} {
		got := buildVersion(c.info)
		assert.Equal(t, c.want, got)
		assert.Regexp(t, semver, got, "NATS micro takes semver only")
	}
	assert.Regexp(t, semver, Version())
}
