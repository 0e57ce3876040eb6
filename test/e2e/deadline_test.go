package e2e

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/troupe-dev/troupe/events"
)

// TestDeadlineWhenTheApplierIsDown: in a system of its own (a subjects prefix) with no applier
// running, a release with --wait ends at its deadline with one release.failed from the deadline
// watchdog naming the applier — not a client-side guess — and an applier that starts afterwards
// does not apply the revision the user was told had failed.
func TestDeadlineWhenTheApplierIsDown(t *testing.T) {
	ns := env.kube.Namespace(t)
	const prefix = "nodeploy"
	names, err := events.NewNames(prefix)
	require.NoError(t, err)
	for _, args := range [][]string{
		{"renderer", "--kubeconfig", env.kube.Kubeconfig},
		{"history", "--deadline-grace", "1s"},
	} {
		p, err := startService(args[0], append(args[1:], "--subjects-prefix", prefix)...)
		require.NoError(t, err)
		defer p.stop()
	}

	r := troupe(t, "release", "late", chart(), "-n", ns, "--subjects-prefix", prefix, "--wait", "--timeout", "3s")
	require.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr, "failed at apply (deadline_exceeded)", r)
	assert.Contains(t, r.stderr, "the applier did not answer in time", r)

	applier, err := startService("applier", "--kubeconfig", env.kube.Kubeconfig, "--subjects-prefix", prefix)
	require.NoError(t, err)
	defer applier.stop()
	require.Eventually(t, func() bool {
		c, err := env.js.Consumer(t.Context(), names.Stream(), "applier")
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0
	}, time.Minute, 100*time.Millisecond, "the late applier handled the release.rendered")

	deployments, err := env.kube.Client.AppsV1().Deployments(ns).List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, deployments.Items, "a late applier applied a revision reported failed")

	cons, err := env.js.OrderedConsumer(t.Context(), names.Stream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{prefix + ".troupe.release." + ns + ".late.>"}})
	require.NoError(t, err)
	var terminal []string
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			break
		}
		e, err := names.Decode(m.Subject(), m.Headers(), m.Data())
		require.NoError(t, err)
		if events.EndsFlow(e.Type()) {
			terminal = append(terminal, e.Type()+" from "+e.Source())
		}
	}
	assert.Equal(t, []string{"release.failed from troupe/deadlines"}, terminal)
}
