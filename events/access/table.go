package access

import (
	"fmt"
	"slices"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

// Rights on a KV bucket or an object store.
type Rights int

const (
	// Read is reading keys or objects, and watching.
	Read Rights = iota + 1
	// Write is Read, and putting, deleting and purging.
	Write
)

// Identity is one NATS user of troupe and what it may do.
type Identity struct {
	// Name names the identity, its credentials file (<Name>.creds) and its inbox prefix.
	Name string
	// Doc says who uses it, for the README and `troupe dev`.
	Doc string
	// All is every permission: the admin, for provisioning, sandboxes and tools such as the
	// nats CLI.
	All bool
	// Publishes are the catalog types it may publish.
	Publishes []string
	// Durables are its durable consumers on the events stream: only it may create, read, ack
	// or delete them.
	Durables []string
	// OwnDurables lets it keep durable consumers of names not in the table (users' own
	// subscribers): it may create and ack any consumer that is not a troupe service's.
	OwnDurables bool
	// KV are the KV buckets it uses (base names, as events.KVReleases), and how.
	KV map[string]Rights
	// Objects are the object stores it uses (events.BucketBundles, events.BucketSources), and how.
	Objects map[string]Rights
	// Service is true for a running service: it answers NATS service discovery ($SRV), the
	// requests `troupe graph` makes, and dead-letters what it gives up on.
	Service bool
	// ServesQueries is history's: it answers the history queries.
	ServesQueries bool
	// Queries lets it ask the history queries and discover services.
	Queries bool
	// ReadsSecrets lets it ask history for manifests and diffs with Secret values
	// (historyapi.SecretsSubject: `troupe get manifest --show-secrets`). Only the admin does.
	ReadsSecrets bool
	// Gate is the gate a gate's identity judges as (Gate): its verdicts (release.approved and
	// release.rejected in Publishes) go on that gate's subjects only, and it answers the
	// decisions asked of that gate (events.Names.GateDecisionSubject).
	Gate string
	// Decides lets it ask any gate for a decision: a person approving or rejecting a revision
	// (`troupe approve`, `troupe reject`).
	Decides bool
}

// Names of the identities of Table.
const (
	Admin        = "admin"
	CLI          = "cli"
	Viewer       = "viewer"
	Renderer     = "renderer"
	Applier      = "applier"
	Health       = "health"
	History      = "history"
	CatalogCheck = "catalog-check"
	Subscriber   = "subscriber"
	Approver     = "approver"
	// GatePrefix begins the name of a gate's identity: gate-<gate> (Gate).
	GatePrefix = "gate-"
)

// Table is every identity, in the order the README lists them. Publishes follows the catalog's
// PublishedBy (access_test checks that every type has a publisher here, named there).
func Table() []Identity {
	// Readers number revisions as the services do (events.Revisions.Peek); the rest they ask
	// history.
	readState := map[string]Rights{events.KVReleases: Read, events.KVGates: Read}
	return []Identity{
		{Name: Admin, All: true,
			Doc: "every permission: provisioning, sandboxes (troupe dev --subjects-prefix, troupe replay --to), the nats CLI"},
		{Name: CLI, Queries: true,
			Doc:       "the troupe CLI: publishes the three requests, uploads sources, reads events and asks history; writes nothing a service decides",
			Publishes: []string{events.TypeRequested, events.TypeRollbackRequested, events.TypeUninstallRequested},
			KV:        readState,
			Objects:   map[string]Rights{events.BucketSources: Write}},
		{Name: Viewer, Queries: true,
			Doc: "reads events, dead letters and history (manifests with Secrets redacted); publishes nothing",
			KV:  readState},
		{Name: Renderer, Service: true,
			Doc:       "renders a release.requested into a bundle",
			Publishes: []string{events.TypeRendered, events.TypeFailed, events.TypeSuperseded},
			Durables:  []string{"renderer"},
			KV:        map[string]Rights{events.KVReleases: Write, events.KVFlows: Write, events.KVGates: Read},
			Objects:   map[string]Rights{events.BucketSources: Read, events.BucketBundles: Write}},
		{Name: Applier, Service: true,
			Doc: "runs a chart's hooks, applies a bundle, deletes on uninstall",
			Publishes: []string{events.TypeHooked, events.TypeApplied, events.TypeDiffed, events.TypeUninstalled, events.TypeFailed,
				events.TypeSuperseded},
			Durables: []string{"applier"},
			KV: map[string]Rights{events.KVReleases: Write, events.KVFlows: Write, events.KVLeases: Write,
				events.KVInventory: Write, events.KVGates: Read},
			Objects: map[string]Rights{events.BucketBundles: Read}},
		{Name: Health, Service: true,
			Doc: "watches what was applied until it is ready",
			Publishes: []string{events.TypeProgressing, events.TypeSettled, events.TypeReady, events.TypeDegraded, events.TypeRecovered,
				events.TypeFailed, events.TypeSuperseded},
			Durables: []string{"health"},
			KV:       map[string]Rights{events.KVReleases: Write, events.KVFlows: Write, events.KVLeases: Write, events.KVHealth: Write}},
		{Name: History, Service: true, ServesQueries: true, Queries: true,
			Doc:       "records revisions, answers queries, serves the web UI (its graph asks the services), rolls back (re-publishing a stored bundle), uninstalls a failed first install, and ends flows nobody answered",
			Publishes: []string{events.TypeRendered, events.TypeRollbackRequested, events.TypeUninstallRequested, events.TypeFailed},
			Durables:  []string{"history", "deadlines"},
			KV: map[string]Rights{events.KVReleases: Write, events.KVFlows: Write, events.KVHistory: Write,
				events.KVHealth: Read, events.KVInventory: Read, events.KVGates: Read},
			Objects: map[string]Rights{events.BucketBundles: Write}},
		{Name: CatalogCheck, Service: true,
			Doc:      "reads every event and dead-letters what does not conform (troupe dev runs it)",
			Durables: []string{"catalog-check"}},
		{Name: Subscriber, Service: true, OwnDurables: true,
			Doc: "a user's own subscriber (examples/notifier): reads events with a durable consumer of its own name; publishes nothing in the catalog",
			KV:  map[string]Rights{events.KVReleases: Read}},
		{Name: Approver, Queries: true, Decides: true,
			Doc: "a person who approves or rejects revisions waiting at a gate (troupe approve, troupe reject): asks the gate, which publishes the verdict; publishes nothing in the catalog",
			KV:  readState},
	}
}

// Gate returns the identity of the gate named gate (a DNS-1123 label): gate-<gate>, a service
// that reads release.rendered with its own durable consumer (gate-<gate>), reads the bundles
// and the flows, and publishes release.approved and release.rejected on its own subjects only —
// never another gate's verdicts. It is not in Table: gates are the operator's; `troupe gate
// creds` and the chart's gates make their credentials.
func Gate(gate string) (Identity, error) {
	if err := events.ValidateName("gate", gate); err != nil {
		return Identity{}, err
	}
	return Identity{Name: GatePrefix + gate, Service: true, Gate: gate,
		Doc:       "the gate " + gate + ": judges rendered revisions, publishes its own verdicts only",
		Publishes: []string{events.TypeApproved, events.TypeRejected},
		Durables:  []string{GatePrefix + gate},
		KV:        map[string]Rights{events.KVReleases: Read, events.KVFlows: Read, events.KVGates: Read},
		Objects:   map[string]Rights{events.BucketBundles: Read}}, nil
}

// Lookup returns the identity of Table named name.
func Lookup(name string) (Identity, bool) {
	i := slices.IndexFunc(Table(), func(id Identity) bool { return id.Name == name })
	if i < 0 {
		return Identity{}, false
	}
	return Table()[i], true
}

// Publishes returns what the identity name may publish: what a service of that name advertises
// it produces (events.SubscriberConfig.Produces), so `troupe graph` and the permissions say the
// same. It panics for a name not in Table, a programming error.
func Publishes(name string) []string {
	id, ok := Lookup(name)
	if !ok {
		panic("access: no identity " + name)
	}
	return id.Publishes
}

// Permissions are NATS publish and subscribe permissions: subjects allowed and denied (a
// denial wins).
type Permissions struct {
	PubAllow []string `json:"publishAllow"`
	PubDeny  []string `json:"publishDeny,omitempty"`
	SubAllow []string `json:"subscribeAllow"`
	SubDeny  []string `json:"subscribeDeny,omitempty"`
}

// Permissions returns what id may publish and subscribe to in the system of names.
func (id Identity) Permissions(names events.Names) (Permissions, error) {
	if id.All {
		return Permissions{PubAllow: []string{">"}, SubAllow: []string{">"}}, nil
	}
	var p Permissions
	pub := func(s ...string) { p.PubAllow = append(p.PubAllow, s...) }
	deny := func(s ...string) { p.PubDeny = append(p.PubDeny, s...) }
	p.SubAllow = []string{events.InboxPrefix(id.Name) + ".>"}
	pub("$JS.API.INFO")

	for _, typ := range id.Publishes {
		f, err := names.TypeFilter(typ)
		if events.IsVerdict(typ) {
			if id.Gate == "" {
				return Permissions{}, fmt.Errorf("identity %s: only a gate's identity publishes %s", id.Name, typ)
			}
			f, err = names.VerdictFilter(typ, id.Gate)
		}
		if err != nil {
			return Permissions{}, fmt.Errorf("identity %s: %w", id.Name, err)
		}
		pub(f)
	}
	if id.Service {
		// Dead letters name the consumer that gave up: its own, never a service's.
		if id.OwnDurables {
			pub(names.Root() + ".dlq.*.>")
			for _, other := range Table() {
				for _, d := range other.Durables {
					deny(names.Root() + ".dlq." + d + ".>")
				}
			}
		}
		for _, d := range id.Durables {
			pub(names.Root() + ".dlq." + d + ".>")
		}
		// It answers requests (discovery; history's queries) on the requesters' inboxes, and
		// only there: NATS's response permission would let it answer on whatever reply subject
		// a request names — a JetStream API subject, a KV key — with the rights of the service.
		p.SubAllow = append(p.SubAllow, "$SRV.>")
		pub("_INBOX.>")
	}
	if id.ServesQueries {
		p.SubAllow = append(p.SubAllow, historyapi.QuerySubject(names)+".>", historyapi.SecretsSubject(names)+".>")
	}
	if id.Gate != "" {
		p.SubAllow = append(p.SubAllow, names.GateDecisionSubject(id.Gate))
	}
	if id.Decides {
		pub(names.GateDecisionSubject("*"))
	}
	if id.ReadsSecrets {
		pub(historyapi.SecretsSubject(names) + ".>")
	}
	if id.Queries {
		pub(historyapi.QuerySubject(names)+".>", "$SRV.>")
	}

	// Every identity reads the events and the dead letters: revisions are numbered by reading
	// the stream, and every service's work starts from an event.
	for _, stream := range []string{names.Stream(), names.DeadLetterStream()} {
		pub(readStream(stream)...)
	}
	s := names.Stream()
	for _, d := range id.Durables {
		pub("$JS.ACK."+s+"."+d+".>", "$JS.API.CONSUMER.DURABLE.CREATE."+s+"."+d)
	}
	if id.OwnDurables {
		pub("$JS.ACK."+s+".>", "$JS.API.CONSUMER.DURABLE.CREATE."+s+".>")
	}
	// Nobody but its owner touches a service's durable consumer: creating one of its name
	// would update its config, reading it would take its deliveries.
	for _, other := range Table() {
		for _, d := range other.Durables {
			if slices.Contains(id.Durables, d) {
				continue
			}
			deny(durableSubjects(s, d, id.OwnDurables)...)
		}
	}

	for _, b := range sortedKeys(id.KV) {
		stream := "KV_" + names.KV(b)
		pub(readStream(stream)...)
		if id.KV[b] == Write {
			pub("$KV."+names.KV(b)+".>", "$JS.API.STREAM.PURGE."+stream)
		}
	}
	for _, b := range sortedKeys(id.Objects) {
		stream := "OBJ_" + names.Objects(b)
		pub(readStream(stream)...)
		if id.Objects[b] == Write {
			pub("$O."+names.Objects(b)+".>", "$JS.API.STREAM.PURGE."+stream)
		}
	}
	return p, nil
}

// readStream is reading stream: its info, a message by sequence or subject (from the leader or
// any replica), and consumers of its own (ordered ones, KV watches, object reads) with their flow
// control.
func readStream(stream string) []string {
	var out []string
	for _, api := range []string{"STREAM.INFO", "STREAM.MSG.GET", "DIRECT.GET", "CONSUMER.NAMES", "CONSUMER.LIST"} {
		out = append(out, "$JS.API."+api+"."+stream)
	}
	for _, api := range []string{"DIRECT.GET", "CONSUMER.CREATE", "CONSUMER.INFO", "CONSUMER.DELETE", "CONSUMER.MSG.NEXT"} {
		out = append(out, "$JS.API."+api+"."+stream+".>")
	}
	return append(out, "$JS.FC."+stream+".>")
}

// durableSubjects are the subjects of durable consumer d on stream s that readStream allows (and
// with durables, what OwnDurables allows): what another identity must be denied.
func durableSubjects(s, d string, durables bool) []string {
	out := []string{
		"$JS.API.CONSUMER.CREATE." + s + "." + d, "$JS.API.CONSUMER.CREATE." + s + "." + d + ".>",
		"$JS.API.CONSUMER.DELETE." + s + "." + d, "$JS.API.CONSUMER.MSG.NEXT." + s + "." + d,
	}
	if durables {
		out = append(out, "$JS.API.CONSUMER.DURABLE.CREATE."+s+"."+d, "$JS.ACK."+s+"."+d+".>")
	}
	return out
}

func sortedKeys(m map[string]Rights) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// BundleWriters is whom an applier connected with the credentials file creds trusts to have
// written the bundles it applies: the renderer of its own account (history republishes the
// renderer's bundles for a rollback; it writes none). nil (trust whoever NATS let write) when
// creds is not one of troupe's identities' (no credentials, or a deployment's own users):
// nothing then signs the bundles.
func BundleWriters(creds string) (*events.Attestor, error) {
	if creds == "" || events.CredsIdentity(creds) == "" {
		return nil, nil
	}
	return events.AttestorFromCreds(creds, Renderer)
}

// BundleSigner is what a renderer connected with the credentials file creds signs its bundles
// with: its identity's key; nil without troupe's credentials.
func BundleSigner(creds string) (*events.Signer, error) {
	if creds == "" || events.CredsIdentity(creds) == "" {
		return nil, nil
	}
	return events.SignerFromCreds(creds)
}
