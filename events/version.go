package events

import (
	"runtime/debug"
	"strings"
	"sync"
)

// Version is this build's version, as a service advertises it ($SRV.INFO) and `troupe version`
// prints it: the main module's version when built from a tagged module (`go install …@v1.2.0`:
// "1.2.0"), else "0.0.0-dev", with the commit it was built from when Go recorded one
// ("0.0.0-dev+9470604c1a2b", ".dirty" for uncommitted changes). Always valid semver, which
// NATS micro requires.
func Version() string { return versionOnce() }

var versionOnce = sync.OnceValue(func() string {
	info, _ := debug.ReadBuildInfo()
	return buildVersion(info)
})

func buildVersion(info *debug.BuildInfo) string {
	v := "0.0.0-dev"
	if info == nil {
		return v
	}
	if mv := info.Main.Version; mv != "" && mv != "(devel)" {
		return strings.TrimPrefix(mv, "v") // a module version already names its commit when it is a pseudo-version
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return v
	}
	v += "+" + rev[:min(len(rev), 12)]
	if dirty {
		v += ".dirty"
	}
	return v
}
