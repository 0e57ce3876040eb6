package historyapi

import (
	"time"

	"github.com/troupe-dev/troupe/events"
)

// QuerySubject returns the prefix of the query endpoints of the system names:
// troupe.history.<endpoint>. Requests and replies are JSON: a Query, answered with the
// endpoint's reply type, or a NATS micro error (Nats-Service-Error-Code 400 for a bad query,
// 404 for what history does not have).
func QuerySubject(names events.Names) string { return names.Root() + ".history" }

// Query endpoints, and what each answers a Query with.
const (
	EndpointList     = "list"     // []Summary: Namespace, After, Limit
	EndpointGet      = "get"      // View: Release
	EndpointRevision = "revision" // RevisionDetail: Release, Revision
	EndpointDiff     = "diff"     // Diff: Release, From, To
	EndpointTimeline = "timeline" // []Entry: Release
	EndpointValues   = "values"   // Values: Release, Revision (0: the latest), All
)

// SecretsSubject returns the prefix of the endpoints that answer as QuerySubject's do but leave
// a Secret's values in manifests and diffs (SecretEndpoints): <root>.history-secrets.<endpoint>.
// NATS permissions say who may ask there (events/access: only identities that may read
// Secrets; the CLI's and the viewer's may not).
func SecretsSubject(names events.Names) string { return names.Root() + ".history-secrets" }

// SecretEndpoints are the endpoints SecretsSubject answers.
func SecretEndpoints() []string { return []string{EndpointRevision, EndpointDiff, EndpointValues} }

// Endpoints returns every query endpoint.
func Endpoints() []string {
	return []string{EndpointList, EndpointGet, EndpointRevision, EndpointDiff, EndpointTimeline, EndpointValues}
}

// Query is a request to a query endpoint; which fields count depends on the endpoint.
type Query struct {
	Release  string `json:"release,omitempty"` // namespace/name
	Revision int    `json:"revision,omitempty"`
	From     int    `json:"from,omitempty"`
	To       int    `json:"to,omitempty"`
	// All asks values for the computed values (the chart's defaults with the user's), not only
	// those the requests set.
	All bool `json:"all,omitempty"`
	// list: only this namespace's releases; those after this namespace/name (the last of the
	// previous page); at most Limit of them (default and most: ListLimit).
	Namespace string `json:"namespace,omitempty"`
	After     string `json:"after,omitempty"`
	Limit     int    `json:"limit,omitempty"`
}

// ListLimit is the most releases one list reply holds (~150 bytes each, well inside a NATS
// message): a client asks again with After for the next page, until a page is shorter.
const ListLimit = 1000

// Summary is one release in a list.
type Summary struct {
	Release     string    `json:"release"`
	Current     int       `json:"current"`
	Latest      int       `json:"latest"`
	State       string    `json:"state"` // the latest revision's
	Uninstalled bool      `json:"uninstalled,omitempty"`
	Updated     time.Time `json:"updated"`
	// Requested and Timeout are the latest revision's request time and timeout: whoever lists
	// can tell a revision in flight past its time.
	Requested time.Time       `json:"requested,omitzero"`
	Timeout   events.Duration `json:"timeout,omitempty"`
}

// Values answers EndpointValues: a revision's values, as `helm get values` shows them.
type Values struct {
	Release  string `json:"release"`
	Revision int    `json:"revision"`
	// Digest is the revision's events.ValuesRecord's, for a request's ReuseValues.
	Digest string `json:"digest"`
	// All says Values are the computed ones.
	All    bool          `json:"all,omitempty"`
	Values events.Values `json:"values"`
}

// RevisionDetail is one revision with its manifests.
type RevisionDetail struct {
	*Revision
	Current   bool             `json:"current"`
	Manifests []map[string]any `json:"manifests,omitempty"`
}

// Diff is what changed between two revisions' manifests.
type Diff struct {
	Release string         `json:"release"`
	From    int            `json:"from"`
	To      int            `json:"to"`
	Objects []ObjectChange `json:"objects"`
}

// Changes of an object between two revisions.
const (
	ChangeAdded   = "added"
	ChangeRemoved = "removed"
	ChangeChanged = "changed"
)

// ObjectChange is one object added, removed or changed between two revisions.
type ObjectChange struct {
	events.ObjectRef
	Change string        `json:"change"` // added, removed, changed
	Fields []FieldChange `json:"fields,omitempty"`
}

// FieldChange is one field that differs.
type FieldChange struct {
	Path string `json:"path"`
	From any    `json:"from,omitempty"`
	To   any    `json:"to,omitempty"`
}
