package access_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/embedded"
	"github.com/troupe-dev/troupe/events/historyapi"
	"github.com/troupe-dev/troupe/events/natstest"
)

// system is an embedded server with auth on, provisioned by the admin, and every identity's
// credentials.
type system struct {
	url   string
	creds map[string]string
	dir   string
}

func start(t *testing.T) system {
	t.Helper()
	a := natstest.StartAuth(t)
	return system{url: a.URL, creds: a.Creds, dir: a.Dir}
}

// conn is a connection as an identity, with the permission violations the server reported.
type conn struct {
	nc         *nats.Conn
	violations chan error
}

func (s system) connect(t *testing.T, identity string) (*conn, jetstream.JetStream) {
	t.Helper()
	c := &conn{violations: make(chan error, 64)}
	nc, err := events.ConnOptions{Server: s.url, CredsFile: s.creds[identity]}.Connect("test-"+identity,
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				c.violations <- err
			}
		}))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	c.nc = nc
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return c, js
}

// refused publishes to subject and says whether the server refused it.
func (c *conn) refused(t *testing.T, subject string) bool {
	t.Helper()
	require.NoError(t, c.nc.Publish(subject, []byte("{}")))
	require.NoError(t, c.nc.Flush())
	select {
	case err := <-c.violations:
		return strings.Contains(err.Error(), `"`+subject+`"`)
	case <-time.After(2 * time.Second): // a refusal comes back within the flush's round trip
		return false
	}
}

// subject is where an event of type typ about team-a/web goes; a verdict, on the subject of the
// gate named policy.
func subject(t *testing.T, typ string) string {
	t.Helper()
	r := events.Release{Namespace: "team-a", Name: "web"}
	if events.IsVerdict(typ) {
		s, err := events.Names{}.VerdictSubject(r, typ, "policy")
		require.NoError(t, err)
		return s
	}
	s, err := events.Names{}.Subject(r, typ)
	require.NoError(t, err)
	return s
}

// TestNoCredentialsNoEntry: with auth on, a client without credentials, or with credentials
// some other operator signed, is not let in.
func TestNoCredentialsNoEntry(t *testing.T) {
	s := start(t)
	_, err := nats.Connect(s.url, nats.MaxReconnects(0))
	require.Error(t, err)
	assert.ErrorContains(t, err, "Authorization Violation")

	other, err := access.LoadOrCreate(filepath.Join(t.TempDir(), "creds"))
	require.NoError(t, err)
	forged, err := other.WriteCreds(t.TempDir(), events.Names{})
	require.NoError(t, err)
	_, err = nats.Connect(s.url, nats.UserCredentials(forged[access.Admin]), nats.MaxReconnects(0))
	require.Error(t, err, "the admin of another operator")
}

// TestCLICannotActAsAService: the CLI's identity publishes the three requests and nothing a
// service decides, writes no bundle, and cannot take the applier's deliveries.
func TestCLICannotActAsAService(t *testing.T) {
	s := start(t)
	cli, js := s.connect(t, access.CLI)
	ctx := t.Context()

	for _, typ := range []string{events.TypeRequested, events.TypeRollbackRequested, events.TypeUninstallRequested} {
		_, err := js.Publish(ctx, subject(t, typ), []byte("{}"))
		assert.NoError(t, err, "the CLI publishes %s", typ)
	}
	for _, typ := range []string{events.TypeRendered, events.TypeApplied, events.TypeReady, events.TypeFailed, events.TypeUninstalled, events.TypeSuperseded} {
		assert.True(t, cli.refused(t, subject(t, typ)), "the CLI may not publish %s", typ)
	}
	assert.True(t, cli.refused(t, "$O."+events.BucketBundles+".M.bundle"), "the CLI writes no bundle")
	assert.True(t, cli.refused(t, "$KV."+events.KVInventory+".x"), "nor an inventory")
	assert.True(t, cli.refused(t, "$KV."+events.KVReleases+".rev.team-a.web"), "nor a revision counter")
	assert.True(t, cli.refused(t, "$JS.API.STREAM.DELETE."+events.StreamName), "nor deletes the stream")
	assert.True(t, cli.refused(t, "$JS.API.CONSUMER.MSG.NEXT."+events.StreamName+".applier"), "nor takes the applier's deliveries")
	assert.True(t, cli.refused(t, "$JS.API.CONSUMER.CREATE."+events.StreamName+".applier.troupe.release.>"), "nor rewrites the applier's consumer")
	assert.True(t, cli.refused(t, "$JS.ACK."+events.StreamName+".applier.1.1.1.1.1"), "nor acks for it")

	assert.True(t, cli.refused(t, "$JS.API.STREAM.INFO.OBJ_"+events.BucketBundles), "nor reads the bundles (Secrets unredacted)")
	sources, err := js.ObjectStore(ctx, events.BucketSources)
	require.NoError(t, err)
	_, err = sources.PutBytes(ctx, "chart.tgz", []byte("a chart"))
	assert.NoError(t, err, "it uploads sources")
}

// TestViewerPublishesNothing: the viewer reads the stream and asks history, and publishes no
// event, uploads nothing, and cannot read another identity's replies.
func TestViewerPublishesNothing(t *testing.T) {
	s := start(t)
	_, ajs := s.connect(t, access.Admin)
	_, err := ajs.Publish(t.Context(), subject(t, events.TypeRequested), []byte("{}"))
	require.NoError(t, err)

	viewer, js := s.connect(t, access.Viewer)
	for _, typ := range events.Types() {
		assert.True(t, viewer.refused(t, subject(t, typ)), "the viewer may not publish %s", typ)
	}
	assert.True(t, viewer.refused(t, "$O."+events.BucketSources+".C.x"), "nor upload a source")

	c, err := js.OrderedConsumer(t.Context(), events.StreamName, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
	require.NoError(t, err, "the viewer reads the stream")
	assert.Equal(t, subject(t, events.TypeRequested), m.Subject())

	_, err = viewer.nc.SubscribeSync("_INBOX.cli.>")
	require.NoError(t, err)
	require.NoError(t, viewer.nc.Flush())
	select {
	case err := <-viewer.violations:
		assert.ErrorContains(t, err, "Subscription to \"_INBOX.cli.>\"")
	case <-time.After(2 * time.Second):
		t.Error("the viewer subscribed to the CLI's replies")
	}
}

// TestServicesPublishTheirPart: each service publishes its part of the catalog and not another's.
func TestServicesPublishTheirPart(t *testing.T) {
	s := start(t)
	for _, tc := range []struct {
		identity    string
		may, mayNot []string
	}{
		{access.Renderer, []string{events.TypeRendered, events.TypeFailed}, []string{events.TypeApplied, events.TypeRequested}},
		{access.Applier, []string{events.TypeApplied, events.TypeUninstalled}, []string{events.TypeRendered, events.TypeReady}},
		{access.Health, []string{events.TypeReady, events.TypeDegraded}, []string{events.TypeApplied, events.TypeRendered}},
		{access.History, []string{events.TypeRendered, events.TypeRollbackRequested}, []string{events.TypeApplied, events.TypeRequested}},
		{access.Subscriber, nil, []string{events.TypeRequested, events.TypeReady}},
	} {
		t.Run(tc.identity, func(t *testing.T) {
			c, js := s.connect(t, tc.identity)
			for _, typ := range tc.may {
				_, err := js.Publish(t.Context(), subject(t, typ), []byte("{}"))
				assert.NoError(t, err, "%s publishes %s", tc.identity, typ)
			}
			for _, typ := range tc.mayNot {
				assert.True(t, c.refused(t, subject(t, typ)), "%s may not publish %s", tc.identity, typ)
			}
		})
	}
}

// TestCredsFiles: one file per identity, mode 0600, that nats.go reads, and the same account at
// every start (the keys are kept).
func TestCredsFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "creds")
	auth, err := access.LoadOrCreate(dir)
	require.NoError(t, err)
	creds, err := auth.WriteCreds(dir, events.Names{})
	require.NoError(t, err)
	for _, id := range access.Table() {
		fi, err := os.Stat(creds[id.Name])
		require.NoError(t, err, id.Name)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), id.Name)
		b, err := os.ReadFile(creds[id.Name])
		require.NoError(t, err)
		assert.True(t, bytes.Contains(b, []byte("BEGIN NATS USER JWT")), id.Name)
	}
	for _, key := range []string{"operator.nk", "account.nk", "system.nk"} {
		fi, err := os.Stat(filepath.Join(dir, key))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), key)
	}
	again, err := access.LoadOrCreate(dir)
	require.NoError(t, err)
	assert.Equal(t, auth.Account(), again.Account())
}

// TestStoreKeptWithoutAuthIsAdopted: a store the server kept before auth was on keeps its
// streams and messages once auth is on.
func TestStoreKeptWithoutAuthIsAdopted(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "nats")
	s, err := embedded.Start(embedded.Options{StoreDir: store})
	require.NoError(t, err)
	nc, err := nats.Connect(s.ClientURL())
	require.NoError(t, err)
	js, _ := jetstream.New(nc)
	_, err = events.Provision(t.Context(), js, events.ProvisionConfig{})
	require.NoError(t, err)
	_, err = js.Publish(t.Context(), subject(t, events.TypeRequested), []byte("{}"))
	require.NoError(t, err)
	nc.Close()
	s.Shutdown()
	s.WaitForShutdown()

	auth, err := access.LoadOrCreate(filepath.Join(dir, "creds"))
	require.NoError(t, err)
	creds, err := auth.WriteCreds(filepath.Join(dir, "creds"), events.Names{})
	require.NoError(t, err)
	s, err = embedded.Start(embedded.Options{StoreDir: store, Auth: auth})
	require.NoError(t, err)
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	nc, err = nats.Connect(s.ClientURL(), nats.UserCredentials(creds[access.Viewer]), nats.CustomInboxPrefix(events.InboxPrefix(access.Viewer)))
	require.NoError(t, err)
	defer nc.Close()
	js, _ = jetstream.New(nc)
	st, err := js.Stream(t.Context(), events.StreamName)
	require.NoError(t, err)
	info, err := st.Info(t.Context())
	require.NoError(t, err)
	assert.Equal(t, uint64(1), info.State.Msgs, "the request made before auth is still there")
}

// TestEveryEventHasItsPublishers: every catalog type may be published by some identity other
// than the admin, and the requests only by the CLI (and history's automatic rollback): nothing in
// the catalog is left to "anyone". The verdicts are published by gates, whose identities
// (access.Gate) are the operator's, not the table's, and by nobody in the table.
func TestEveryEventHasItsPublishers(t *testing.T) {
	gate, err := access.Gate("example")
	require.NoError(t, err)
	by := map[string][]string{}
	for _, id := range append(access.Table(), gate) {
		_, err := id.Permissions(events.Names{})
		require.NoError(t, err, id.Name)
		for _, typ := range id.Publishes {
			by[typ] = append(by[typ], id.Name)
		}
	}
	for _, typ := range events.Types() {
		assert.NotEmpty(t, by[typ], "nobody may publish %s", typ)
	}
	assert.Equal(t, []string{access.CLI}, by[events.TypeRequested])
	assert.Equal(t, []string{access.CLI, access.History}, by[events.TypeRollbackRequested])
	assert.Equal(t, []string{access.Renderer, access.History}, by[events.TypeRendered])
	assert.Equal(t, []string{access.Applier}, by[events.TypeApplied])
	assert.Equal(t, []string{"gate-example"}, by[events.TypeApproved])
	assert.Equal(t, []string{"gate-example"}, by[events.TypeRejected])
}

// TestBundleWriters: what the renderer stored is read by an applier that trusts the renderer and
// history; what the admin stored (unsigned), what the CLI's key signed, and what another
// system's renderer signed are refused, naming why.
func TestBundleWriters(t *testing.T) {
	s := start(t)
	ctx := t.Context()
	_, js := s.connect(t, access.Admin)
	store := func(creds string, signer *events.Signer) string {
		t.Helper()
		o, err := events.OpenObjects(ctx, js, events.BucketBundles)
		require.NoError(t, err)
		if signer != nil {
			o.SignWith(signer)
		}
		digest, _, err := o.Put(ctx, strings.NewReader("bundle written with "+creds))
		require.NoError(t, err)
		return digest
	}
	signer := func(creds string) *events.Signer {
		t.Helper()
		sg, err := access.BundleSigner(creds)
		require.NoError(t, err)
		require.NotNil(t, sg)
		return sg
	}
	other, err := access.LoadOrCreate(filepath.Join(t.TempDir(), "other"))
	require.NoError(t, err)
	otherCreds, err := other.WriteCreds(t.TempDir(), events.Names{})
	require.NoError(t, err)

	byRenderer := store("renderer", signer(s.creds[access.Renderer]))
	byAdmin := store("admin", nil)
	byCLI := store("cli", signer(s.creds[access.CLI]))
	byStranger := store("another system's renderer", signer(otherCreds[access.Renderer]))

	writers, err := access.BundleWriters(s.creds[access.Applier])
	require.NoError(t, err)
	require.NotNil(t, writers)
	_, ajs := s.connect(t, access.Applier)
	bundles, err := events.OpenObjects(ctx, ajs, events.BucketBundles)
	require.NoError(t, err)
	bundles.TrustOnly(writers)

	rc, err := bundles.Get(ctx, byRenderer)
	require.NoError(t, err)
	rc.Close()
	for digest, why := range map[string]string{byAdmin: "names no writer", byCLI: `written by "cli"`, byStranger: "of another account"} {
		_, err := bundles.Get(ctx, digest)
		assert.ErrorIs(t, err, events.ErrUntrustedWriter, why)
		assert.ErrorContains(t, err, why)
	}

	// The renderer storing what the admin stored before vouches for it from then on.
	again := store("admin", signer(s.creds[access.Renderer]))
	require.Equal(t, byAdmin, again)
	rc, err = bundles.Get(ctx, byAdmin)
	require.NoError(t, err)
	rc.Close()
	// So does PutBytes, which stores nothing for content it finds stored: not for content the
	// renderer did not sign.
	renderer, err := events.OpenObjects(ctx, js, events.BucketBundles)
	require.NoError(t, err)
	renderer.SignWith(signer(s.creds[access.Renderer]))
	d, _, err := renderer.PutBytes(ctx, []byte("bundle written with cli"))
	require.NoError(t, err)
	require.Equal(t, byCLI, d)
	rc, err = bundles.Get(ctx, byCLI)
	require.NoError(t, err, "vouched for by the renderer now")
	rc.Close()

	none, err := access.BundleWriters("")
	require.NoError(t, err)
	assert.Nil(t, none, "without troupe's credentials there is nobody to trust")
}

// TestCatalogNamesThePublishers: the catalog's "published by" (README's table) names every
// identity allowed to publish the type.
func TestCatalogNamesThePublishers(t *testing.T) {
	for _, id := range access.Table() {
		for _, typ := range id.Publishes {
			spec, ok := events.Lookup(typ)
			require.True(t, ok, typ)
			assert.Contains(t, strings.ToLower(spec.PublishedBy), id.Name, "%s: published by %s", typ, id.Name)
		}
	}
}

// TestReadmeListsIdentities keeps the README's identity table true: a row per identity, and one
// for the gates' (gate-<name>), naming every type it may publish.
func TestReadmeListsIdentities(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	gate, err := access.Gate("name")
	require.NoError(t, err)
	gate.Name = access.GatePrefix + "<name>"
	for _, id := range append(access.Table(), gate) {
		start := bytes.Index(readme, []byte("| `"+id.Name+"` |"))
		if !assert.GreaterOrEqual(t, start, 0, "README row of %s", id.Name) {
			continue
		}
		row := string(readme[start:])
		row = row[:strings.IndexByte(row, '\n')]
		for _, typ := range id.Publishes {
			assert.Contains(t, row, "`"+typ+"`", "README row of %s", id.Name)
		}
	}
}

// TestSubscriberTemplate: a user's own subscriber, connected as the subscriber identity, keeps
// a durable consumer of its own name and receives what the CLI requests; it may not take the
// applier's.
func TestSubscriberTemplate(t *testing.T) {
	s := start(t)
	ctx := t.Context()
	c, js := s.connect(t, access.Subscriber)
	got := make(chan string, 1)
	sub, err := events.NewSubscriber(js, events.SubscriberConfig{Service: "notifier", Types: []string{events.TypeRequested}},
		func(ctx context.Context, e event.Event) error { got <- e.ID(); return nil })
	require.NoError(t, err)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sub.Start(sctx) }()
	defer func() { cancel(); <-done }()
	// Its consumer starts at the stream's end when it is created: a request published before
	// that is not for it.
	select {
	case <-sub.Ready():
	case err := <-done:
		t.Fatalf("the subscriber stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the subscriber is not ready")
	}

	_, cjs := s.connect(t, access.CLI)
	e, err := events.NewEvent("troupe/cli", events.TypeRequested, events.Release{Namespace: "team-a", Name: "web"},
		events.Requested{Source: events.Source{Helm: &events.HelmSource{OCI: "oci://example.com/web"}}})
	require.NoError(t, err)
	_, err = events.NewPublisher(cjs, events.Names{}).Publish(ctx, e)
	require.NoError(t, err)
	select {
	case id := <-got:
		assert.Equal(t, e.ID(), id)
	case <-time.After(20 * time.Second):
		t.Fatal("the subscriber received nothing")
	}
	assert.True(t, c.refused(t, "$JS.API.CONSUMER.MSG.NEXT."+events.StreamName+".applier"), "nor takes the applier's deliveries")
	assert.True(t, c.refused(t, "$JS.API.CONSUMER.DURABLE.CREATE."+events.StreamName+".applier"), "nor rewrites the applier's consumer")
	assert.True(t, c.refused(t, "$JS.ACK."+events.StreamName+".applier.1.1.1.1.1"), "nor acks for it")
	assert.True(t, c.refused(t, "troupe.dlq.applier.release.a.b.rendered"), "nor writes the applier's dead letters")
}

// TestAnswersGoOnlyToInboxes: a request whose reply subject is not an inbox — here the viewer's,
// naming the API subject that deletes the events stream — gets no answer from the service it
// asks: a service answers with its own rights, so it may answer on inboxes only.
func TestAnswersGoOnlyToInboxes(t *testing.T) {
	s := start(t)
	history, _ := s.connect(t, access.History)
	sub, err := history.nc.Subscribe(historyapi.QuerySubject(events.Names{})+".>", func(m *nats.Msg) { _ = m.Respond(nil) })
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, history.nc.Flush())

	viewer, _ := s.connect(t, access.Viewer)
	deleteStream := "$JS.API.STREAM.DELETE." + events.StreamName
	require.NoError(t, viewer.nc.PublishRequest(historyapi.QuerySubject(events.Names{})+".revision", deleteStream, nil))
	require.NoError(t, viewer.nc.Flush())
	select {
	case err := <-history.violations:
		assert.ErrorContains(t, err, `Publish to "`+deleteStream+`"`)
	case <-time.After(5 * time.Second):
		t.Error("history answered on the API subject")
	}
	_, js := s.connect(t, access.Admin)
	_, err = js.Stream(t.Context(), events.StreamName)
	assert.NoError(t, err, "the events stream is still there")

	// An answer to an inbox goes through.
	msg, err := viewer.nc.Request(historyapi.QuerySubject(events.Names{})+".list", nil, 5*time.Second)
	require.NoError(t, err)
	assert.Empty(t, msg.Data)
}

// TestStoreOfAnotherAccountIsRefused: a store whose keys were lost is not started as an empty
// system (its releases would look gone): the error names both accounts.
func TestStoreOfAnotherAccountIsRefused(t *testing.T) {
	s := start(t) // provisioned under its account
	other, err := access.LoadOrCreate(filepath.Join(t.TempDir(), "creds"))
	require.NoError(t, err)
	_, err = embedded.Start(embedded.Options{StoreDir: filepath.Join(s.dir, "nats"), Auth: other})
	require.Error(t, err)
	assert.ErrorContains(t, err, "holds the streams of account")
	assert.ErrorContains(t, err, other.Account())
}
