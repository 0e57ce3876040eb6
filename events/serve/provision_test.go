package serve_test

import (
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/events/serve"
)

// TestProvisionFlags: a service restarted with the default flags keeps the 90 days an operator
// provisioned (and says so); --provision=lower shortens them; --provision=false touches nothing.
func TestProvisionFlags(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	log := zerolog.Nop()
	parse := func(args ...string) *serve.ProvisionOptions {
		var o serve.ProvisionOptions
		fs := pflag.NewFlagSet("svc", pflag.ContinueOnError)
		o.BindFlags(fs)
		require.NoError(t, fs.Parse(args))
		return &o
	}
	maxAge := func() time.Duration {
		st, err := js.Stream(t.Context(), events.StreamName)
		require.NoError(t, err)
		return st.CachedInfo().Config.MaxAge
	}
	const quarter = 90 * 24 * time.Hour

	_, err := parse("--max-age", "2160h").Provision(t.Context(), js, events.Names{}, &log)
	require.NoError(t, err)
	require.Equal(t, quarter, maxAge())

	out, err := parse().Provision(t.Context(), js, events.Names{}, &log)
	require.NoError(t, err)
	assert.Equal(t, events.Unchanged, out[0].Action)
	assert.Equal(t, []string{"max age 2160h0m0s (asked 720h0m0s)"}, out[0].Kept)
	assert.Equal(t, quarter, maxAge(), "a restart with the defaults keeps it")

	out, err = parse("--provision=false", "--max-age", "1h").Provision(t.Context(), js, events.Names{}, &log)
	require.NoError(t, err)
	assert.Empty(t, out)
	assert.Equal(t, quarter, maxAge())

	out, err = parse("--provision=lower").Provision(t.Context(), js, events.Names{}, &log)
	require.NoError(t, err)
	assert.Equal(t, events.Updated, out[0].Action)
	assert.Equal(t, 30*24*time.Hour, maxAge(), "lowered when asked")

	_, err = parse("--provision").Provision(t.Context(), js, events.Names{}, &log)
	require.NoError(t, err, "--provision alone is true")
	var o serve.ProvisionOptions
	fs := pflag.NewFlagSet("svc", pflag.ContinueOnError)
	o.BindFlags(fs)
	assert.Error(t, fs.Parse([]string{"--provision=down"}))
}
