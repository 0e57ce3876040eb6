package events_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/internal/schemas"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// payloadCase is one payload of one type. schemaToo says the JSON Schema must agree with the Go
// validation about it; rules the schema cannot say (exactly one of several fields) are Go only.
type payloadCase struct {
	name      string
	typ       string
	data      string
	wantErr   string // empty: valid
	schemaToo bool
}

var payloadCases = []payloadCase{
	{name: "requested helm path", typ: events.TypeRequested, schemaToo: true,
		data: `{"source":{"helm":{"path":"./charts/podinfo"}},"valuesFiles":[{"name":"values-prod.yaml","content":"replicaCount: 2"}],"values":{"image":{"tag":"6.5.0"}},"set":["a.b=1"],"options":{"timeout":"2m","wait":true,"prune":false,"rollbackOnFailure":true}}`},
	{name: "requested helm repo", typ: events.TypeRequested, schemaToo: true,
		data: `{"source":{"helm":{"repoURL":"https://stefanprodan.github.io/podinfo","chart":"podinfo","version":">=6.0.0"}}}`},
	{name: "requested oci", typ: events.TypeRequested, schemaToo: true,
		data: `{"source":{"helm":{"oci":"oci://ghcr.io/stefanprodan/charts/podinfo","version":"6.14.1"}}}`},
	{name: "requested kustomize upload", typ: events.TypeRequested, schemaToo: true,
		data: `{"source":{"kustomize":{"object":"` + digest + `","dir":"overlays/dev"}}}`},
	{name: "requested inline manifests", typ: events.TypeRequested, schemaToo: true,
		data: `{"source":{"manifests":{"yaml":"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"}}}`},
	{name: "requested without source", typ: events.TypeRequested, schemaToo: true,
		data: `{"values":{}}`, wantErr: "source"},
	{name: "requested misspelt field", typ: events.TypeRequested, schemaToo: true,
		data: `{"source":{"helm":{"path":"x"}},"valeus":{}}`, wantErr: `unknown field "valeus"`},
	{name: "applied by a newer applier", typ: events.TypeApplied, schemaToo: true, // a field this version does not know: ignored
		data: `{"bundle":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","applyTime":"1s","inventory":[{"apiVersion":"v1","kind":"ConfigMap","name":"a","action":"created","since":"v2"}],"shards":3}`},
	{name: "ready from a newer health", typ: events.TypeReady, schemaToo: true, data: `{"timeToReady":"4.2s","objects":3,"slowest":"Deployment/web"}`},
	{name: "rollback requested with a field this version does not know", typ: events.TypeRollbackRequested, schemaToo: true,
		data: `{"targetRevision":1,"keepValues":true}`, wantErr: `unknown field "keepValues"`},
	{name: "uninstall requested with a field this version does not know", typ: events.TypeUninstallRequested, schemaToo: true,
		data: `{"keepHistory":true}`, wantErr: `unknown field "keepHistory"`},
	{name: "requested misspelt option", typ: events.TypeRequested, schemaToo: true,
		data: `{"source":{"helm":{"path":"x"}},"options":{"prun":false}}`, wantErr: `unknown field "prun"`},
	{name: "requested bad timeout", typ: events.TypeRequested, schemaToo: true,
		data: `{"source":{"helm":{"path":"x"}},"options":{"timeout":"five minutes"}}`, wantErr: "duration"},
	{name: "requested bad digest", typ: events.TypeRequested, schemaToo: true,
		data: `{"source":{"helm":{"object":"sha256:xyz"}}}`, wantErr: "sha256"},
	{name: "requested two sources", typ: events.TypeRequested,
		data: `{"source":{"helm":{"path":"x"},"kustomize":{"path":"y"}}}`, wantErr: "exactly one of helm, kustomize, manifests"},
	{name: "requested helm two refs", typ: events.TypeRequested,
		data: `{"source":{"helm":{"path":"x","oci":"oci://r/c"}}}`, wantErr: "exactly one of path, object, oci, repoURL"},
	{name: "requested repo without chart", typ: events.TypeRequested,
		data: `{"source":{"helm":{"repoURL":"https://charts.example.com"}}}`, wantErr: "chart: required with repoURL"},
	{name: "requested set without =", typ: events.TypeRequested,
		data: `{"source":{"helm":{"path":"x"}},"set":["replicas"]}`, wantErr: "not key=value"},
	{name: "requested timeout too long", typ: events.TypeRequested,
		data: `{"source":{"helm":{"path":"x"}},"options":{"timeout":"48h"}}`, wantErr: "longer than"},
	{name: "requested with gates", typ: events.TypeRequested, schemaToo: true,
		data: `{"source":{"helm":{"path":"x"}},"options":{"gates":["policy","approval"]}}`},
	{name: "requested gate not a name", typ: events.TypeRequested,
		data: `{"source":{"helm":{"path":"x"}},"options":{"gates":["Security Team"]}}`, wantErr: "options.gates[0]"},
	{name: "requested gate twice", typ: events.TypeRequested,
		data: `{"source":{"helm":{"path":"x"}},"options":{"gates":["policy","policy"]}}`, wantErr: "listed twice"},
	{name: "requested not an object", typ: events.TypeRequested, schemaToo: true,
		data: `[1,2]`, wantErr: "cannot unmarshal"},
	{name: "rendered", typ: events.TypeRendered, schemaToo: true,
		data: `{"bundle":"` + digest + `","size":1024,"objects":[{"apiVersion":"apps/v1","kind":"Deployment","namespace":"prod","name":"podinfo"},{"apiVersion":"v1","kind":"Namespace","name":"prod"}],"renderTime":"12ms","chart":{"name":"podinfo","version":"6.14.1"},"notes":"hi"}`},
	{name: "rendered empty chart", typ: events.TypeRendered, schemaToo: true,
		data: `{"bundle":"` + digest + `","size":0,"renderTime":"1ms"}`},
	{name: "rendered without bundle", typ: events.TypeRendered, schemaToo: true,
		data: `{"size":1,"objects":[],"renderTime":"1ms"}`, wantErr: "bundle"},
	{name: "rendered object without kind", typ: events.TypeRendered, schemaToo: true,
		data: `{"bundle":"` + digest + `","size":1,"objects":[{"apiVersion":"v1","name":"x"}],"renderTime":"1ms"}`, wantErr: "objects[0].kind"},
	{name: "rendered negative size", typ: events.TypeRendered, schemaToo: true,
		data: `{"bundle":"` + digest + `","size":-1,"renderTime":"1ms"}`, wantErr: "size"},
	{name: "hooked", typ: events.TypeHooked, schemaToo: true,
		data: `{"phase":"pre-install","bundle":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","hooks":[{"apiVersion":"batch/v1","kind":"Job","namespace":"prod","name":"db-init","weight":-5,"result":"succeeded","started":"2026-12-03T08:00:00Z","duration":"2.1s","deleted":true}]}`},
	{name: "settled", typ: events.TypeSettled, schemaToo: true, data: `{"bundle":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","phase":"post-install","objects":3}`},
	{name: "settled, a pre phase", typ: events.TypeSettled, schemaToo: true, data: `{"bundle":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","phase":"pre-install","objects":3}`, wantErr: "phase"},
	{name: "hooked, no hooks", typ: events.TypeHooked, schemaToo: true, data: `{"phase":"pre-install","bundle":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","hooks":[]}`, wantErr: "hooks"},
	{name: "hooked, unknown phase", typ: events.TypeHooked, schemaToo: true,
		data: `{"phase":"mid-install","bundle":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","hooks":[{"apiVersion":"v1","kind":"Pod","name":"p","weight":0,"result":"succeeded","started":"2026-12-03T08:00:00Z","duration":"1s"}]}`, wantErr: "phase"},
	{name: "applied", typ: events.TypeApplied, schemaToo: true,
		data: `{"bundle":"` + digest + `","inventory":[{"apiVersion":"v1","kind":"Service","namespace":"prod","name":"podinfo","action":"configured"}],"pruned":[{"apiVersion":"v1","kind":"ConfigMap","namespace":"prod","name":"old"}],"applyTime":"300ms","options":{"timeout":"5m"}}`},
	{name: "applied bad action", typ: events.TypeApplied, schemaToo: true,
		data: `{"bundle":"` + digest + `","inventory":[{"apiVersion":"v1","kind":"Service","name":"s","action":"patched"}],"applyTime":"1s"}`, wantErr: "action"},
	{name: "diffed", typ: events.TypeDiffed, schemaToo: true,
		data: `{"bundle":"` + digest + `","objects":[{"apiVersion":"v1","kind":"Service","namespace":"prod","name":"s","action":"update","diff":"-a\n+b"}]}`},
	{name: "progressing", typ: events.TypeProgressing, schemaToo: true,
		data: `{"objects":[{"apiVersion":"apps/v1","kind":"Deployment","namespace":"prod","name":"podinfo","status":"InProgress","message":"1/2 ready"}],"ready":0,"total":1}`},
	{name: "progressing bad status", typ: events.TypeProgressing, schemaToo: true,
		data: `{"objects":[{"apiVersion":"apps/v1","kind":"Deployment","name":"p","status":"Happy"}],"ready":0,"total":1}`, wantErr: "status"},
	{name: "progressing ready above total", typ: events.TypeProgressing,
		data: `{"ready":2,"total":1}`, wantErr: "more than total"},
	{name: "ready", typ: events.TypeReady, schemaToo: true, data: `{"timeToReady":"4.2s","objects":3}`},
	{name: "ready missing time", typ: events.TypeReady, schemaToo: true, data: `{"objects":3}`, wantErr: "timeToReady"},
	{name: "failed", typ: events.TypeFailed, schemaToo: true,
		data: `{"stage":"render","reason":"template_error","message":"templates/deployment.yaml:12: required value image.tag"}`},
	{name: "failed unknown stage", typ: events.TypeFailed, schemaToo: true,
		data: `{"stage":"deploy","reason":"x","message":"m"}`, wantErr: "stage"},
	{name: "failed reason not a code", typ: events.TypeFailed, schemaToo: true,
		data: `{"stage":"apply","reason":"It broke","message":"m"}`, wantErr: "reason"},
	{name: "failed empty message", typ: events.TypeFailed, schemaToo: true,
		data: `{"stage":"apply","reason":"rejected","message":""}`, wantErr: "message"},
	{name: "degraded", typ: events.TypeDegraded, schemaToo: true,
		data: `{"objects":[{"apiVersion":"apps/v1","kind":"Deployment","namespace":"prod","name":"p","status":"NotFound"}]}`},
	{name: "degraded without objects", typ: events.TypeDegraded, schemaToo: true, data: `{"objects":[]}`, wantErr: "objects"},
	{name: "recovered", typ: events.TypeRecovered, schemaToo: true,
		data: `{"objects":[{"apiVersion":"apps/v1","kind":"Deployment","namespace":"prod","name":"p","status":"Current"}]}`},
	{name: "rollback requested", typ: events.TypeRollbackRequested, schemaToo: true, data: `{"targetRevision":3,"reason":"bad deploy"}`},
	{name: "rollback to previous", typ: events.TypeRollbackRequested, schemaToo: true, data: `{}`},
	{name: "rollback negative", typ: events.TypeRollbackRequested, schemaToo: true, data: `{"targetRevision":-1}`, wantErr: "targetRevision"},
	{name: "uninstall requested", typ: events.TypeUninstallRequested, schemaToo: true, data: `{"deleteCRDs":true,"timeout":"1m"}`},
	{name: "uninstalled", typ: events.TypeUninstalled, schemaToo: true,
		data: `{"deleted":[{"apiVersion":"v1","kind":"Service","namespace":"prod","name":"s"}],"kept":[{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","name":"streams.jetstream.nats.io"}]}`},
	{name: "superseded", typ: events.TypeSuperseded, schemaToo: true, data: `{"byRevision":4,"stage":"apply"}`},
	{name: "superseded by an uninstall", typ: events.TypeSuperseded, schemaToo: true, data: `{"byRevision":0,"byUninstall":"0f3c","stage":"apply"}`},
	{name: "superseded by nothing", typ: events.TypeSuperseded, schemaToo: true, data: `{"byRevision":0,"stage":"apply"}`, wantErr: "byRevision"},
	{name: "approved", typ: events.TypeApproved, schemaToo: true,
		data: `{"gate":"policy","revision":3,"bundle":"` + digest + `","reason":"rules_passed","message":"3 rules, 4 objects","by":"alice"}`},
	{name: "approved with findings", typ: events.TypeApproved, schemaToo: true,
		data: `{"gate":"policy","revision":1,"bundle":"` + digest + `","findings":[{"rule":"resource-limits","object":{"apiVersion":"apps/v1","kind":"Deployment","namespace":"prod","name":"web"},"message":"no memory limit: allowed in this namespace"}]}`},
	{name: "approved by a newer gate SDK", typ: events.TypeApproved, schemaToo: true, // a fact: a field this version does not know is ignored
		data: `{"gate":"policy","revision":1,"bundle":"` + digest + `","score":0.9}`},
	{name: "approved without gate", typ: events.TypeApproved, schemaToo: true,
		data: `{"revision":1,"bundle":"` + digest + `"}`, wantErr: "gate"},
	{name: "approved gate not a name", typ: events.TypeApproved,
		data: `{"gate":"Policy.Gate","revision":1,"bundle":"` + digest + `"}`, wantErr: "gate"},
	{name: "approved without revision", typ: events.TypeApproved, schemaToo: true,
		data: `{"gate":"policy","revision":0,"bundle":"` + digest + `"}`, wantErr: "revision"},
	{name: "approved bad bundle", typ: events.TypeApproved, schemaToo: true,
		data: `{"gate":"policy","revision":1,"bundle":"sha256:xyz"}`, wantErr: "bundle"},
	{name: "approved reason not a code", typ: events.TypeApproved, schemaToo: true,
		data: `{"gate":"policy","revision":1,"bundle":"` + digest + `","reason":"All good"}`, wantErr: "reason"},
	{name: "rejected", typ: events.TypeRejected, schemaToo: true,
		data: `{"gate":"policy","revision":2,"bundle":"` + digest + `","reason":"policy_violation","message":"2 findings","findings":[{"rule":"image-digest","object":{"apiVersion":"apps/v1","kind":"Deployment","namespace":"prod","name":"web"},"message":"image nginx:latest has no digest"},{"rule":"no-load-balancer","message":"this namespace forbids LoadBalancer Services"}]}`},
	{name: "rejected without message", typ: events.TypeRejected,
		data: `{"gate":"manual","revision":2,"bundle":"` + digest + `"}`, wantErr: "message"},
	{name: "rejected finding without rule", typ: events.TypeRejected, schemaToo: true,
		data: `{"gate":"policy","revision":2,"bundle":"` + digest + `","message":"m","findings":[{"message":"x"}]}`, wantErr: "findings[0].rule"},
}

func TestDecodePayload(t *testing.T) {
	for _, tc := range payloadCases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := events.DecodePayload(tc.typ, []byte(tc.data))
			if tc.wantErr == "" {
				require.NoError(t, err)
				// What decodes re-encodes to something that decodes the same.
				b, err := json.Marshal(p)
				require.NoError(t, err)
				p2, err := events.DecodePayload(tc.typ, b)
				require.NoError(t, err)
				assert.Equal(t, p, p2)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, events.ErrInvalidPayload)
			assert.Contains(t, err.Error(), tc.wantErr)
			assert.Contains(t, err.Error(), tc.typ, "the error names the event type")
		})
	}
}

func TestEveryTypeHasAValidCase(t *testing.T) {
	seen := map[string]bool{}
	for _, tc := range payloadCases {
		if tc.wantErr == "" {
			seen[tc.typ] = true
		}
	}
	for _, typ := range events.Types() {
		assert.True(t, seen[typ], "no valid example of %s", typ)
	}
}

func TestDecodePayloadLimits(t *testing.T) {
	_, err := events.DecodePayload("release.deployed", []byte(`{}`))
	assert.ErrorIs(t, err, events.ErrUnknownType)
	_, err = events.DecodePayload(events.TypeReady, nil)
	assert.ErrorContains(t, err, "no data")
	big := `{"stage":"apply","reason":"x","message":"` + strings.Repeat("a", events.MaxDataSize) + `"}`
	_, err = events.DecodePayload(events.TypeFailed, []byte(big))
	assert.ErrorContains(t, err, "object store")
	_, err = events.DecodePayload(events.TypeReady, []byte(`{"timeToReady":"1s","objects":1} {}`))
	assert.ErrorContains(t, err, "trailing")
	// Every violation is listed, not only the first.
	_, err = events.DecodePayload(events.TypeFailed, []byte(`{"stage":"nope","reason":"Bad","message":""}`))
	require.Error(t, err)
	for _, field := range []string{"stage", "reason", "message"} {
		assert.Contains(t, err.Error(), field+":")
	}
}

// TestSchemasAreGenerated fails when events/schemas/ differs from what the structs generate:
// run `go generate ./...` in events/ after changing a payload.
func TestSchemasAreGenerated(t *testing.T) {
	files, err := filepath.Glob("schemas/*.json")
	require.NoError(t, err)
	assert.Len(t, files, len(events.Catalog()), "one schema per catalog type, no strays")
	for _, spec := range events.Catalog() {
		want, err := schemas.Generate(spec)
		require.NoError(t, err)
		have, err := os.ReadFile(filepath.Join("schemas", schemas.FileName(spec.Type)))
		require.NoError(t, err, "schema of %s missing: run go generate ./... in events/", spec.Type)
		assert.Equal(t, string(want), string(have), "schema of %s is stale: run go generate ./... in events/", spec.Type)
	}
}

// TestSchemasAgreeWithStructs checks each example against the committed schema: what the Go
// validation accepts the schema accepts, and what both are meant to reject the schema rejects.
func TestSchemasAgreeWithStructs(t *testing.T) {
	c := jsonschema.NewCompiler()
	compiled := map[string]*jsonschema.Schema{}
	for _, spec := range events.Catalog() {
		path, err := filepath.Abs(filepath.Join("schemas", schemas.FileName(spec.Type)))
		require.NoError(t, err)
		s, err := c.Compile(path)
		require.NoError(t, err, spec.Type)
		compiled[spec.Type] = s
	}
	for _, tc := range payloadCases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(tc.data)))
			require.NoError(t, err)
			serr := compiled[tc.typ].Validate(v)
			if tc.wantErr == "" {
				assert.NoError(t, serr, "the Go validation accepts this, the schema must too")
			} else if tc.schemaToo {
				assert.Error(t, serr, "the Go validation rejects this (%s), the schema must too", tc.wantErr)
			}
		})
	}
}

// TestReadmeListsCatalog keeps the README's catalog table true: every type, with its schema.
func TestReadmeListsCatalog(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	for _, spec := range events.Catalog() {
		row := "| `" + spec.Type + "` | " + spec.PublishedBy + " |"
		assert.Contains(t, string(readme), row, "README catalog row of %s", spec.Type)
		assert.Contains(t, string(readme), "(events/schemas/"+schemas.FileName(spec.Type)+")")
	}
}

// TestEndsFlow: the types that end a revision's flow are the catalog's terminal ones, and only
// those; an unknown type ends nothing.
func TestEndsFlow(t *testing.T) {
	ends := map[string]bool{events.TypeReady: true, events.TypeFailed: true, events.TypeSuperseded: true,
		events.TypeDiffed: true, events.TypeUninstalled: true}
	for _, typ := range append(events.Types(), "release.deployed", "") {
		t.Run(typ, func(t *testing.T) {
			assert.Equal(t, ends[typ], events.EndsFlow(typ))
		})
	}
}

// TestExampleEvents: every example event data under examples/events (named after its type
// without "release.") is a valid payload, as `troupe publish TYPE --data @FILE` needs it.
func TestExampleEvents(t *testing.T) {
	files, err := filepath.Glob("../examples/events/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		typ := "release." + strings.TrimSuffix(filepath.Base(f), ".json")
		_, err = events.DecodePayload(typ, data)
		assert.NoError(t, err, f)
	}
}
