package events

//go:generate go run ./internal/schemagen -out schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
)

// Event types: the catalog of ARCHITECTURE.md. The NATS subject of each is
// troupe.release.<namespace>.<release>.<type without "release.">.
const (
	TypeRequested          = "release.requested"
	TypeRendered           = "release.rendered"
	TypeHooked             = "release.hooked"
	TypeApplied            = "release.applied"
	TypeDiffed             = "release.diffed"
	TypeProgressing        = "release.progressing"
	TypeSettled            = "release.settled"
	TypeReady              = "release.ready"
	TypeFailed             = "release.failed"
	TypeDegraded           = "release.degraded"
	TypeRecovered          = "release.recovered"
	TypeRollbackRequested  = "release.rollback.requested"
	TypeUninstallRequested = "release.uninstall.requested"
	TypeUninstalled        = "release.uninstalled"
	TypeSuperseded         = "release.superseded"
	TypeApproved           = "release.approved"
	TypeRejected           = "release.rejected"
)

// Payload is the data of a catalog event.
type Payload interface {
	// Validate reports every violation of the payload's rules, joined, each naming its field.
	Validate() error
}

// Spec describes one catalog entry.
type Spec struct {
	// Type is the CloudEvents type.
	Type string
	// PublishedBy names who publishes it.
	PublishedBy string
	// Carries says what the payload holds.
	Carries string
	// Terminal is true for the events that end a revision's flow.
	Terminal bool
	// Request is true for the types people publish (requests): their fields are instructions, so
	// a field the reader does not know is an error (a misspelt option, or one this version does
	// not support, is never silently dropped). Every other type is a fact one service tells the
	// others, read tolerantly: a field the reader does not know is ignored, so that a newer
	// replica's events are understood by an older one during a rolling update (see Versioning in
	// doc.go).
	Request bool

	payload reflect.Type
}

// New returns a pointer to a zero payload of the spec's type.
func (s Spec) New() Payload { return reflect.New(s.payload).Interface().(Payload) }

var catalog = []Spec{
	{Type: TypeRequested, Request: true, PublishedBy: "CLI (the `cli` identity; give another client its permissions)", payload: reflect.TypeFor[Requested](),
		Carries: "source (helm path/uploaded object/OCI/repo, kustomize, manifests), values, options (timeout, wait, prune, rollbackOnFailure, dryRun)"},
	{Type: TypeRendered, PublishedBy: "renderer; history, for rollback", payload: reflect.TypeFor[Rendered](),
		Carries: "bundle digest in the object store, object list, render time, notes, options"},
	{Type: TypeHooked, PublishedBy: "applier", payload: reflect.TypeFor[Hooked](),
		Carries: "a phase of the chart's hooks that ran (pre-install, …, post-rollback): each hook with its result and timing"},
	{Type: TypeApplied, PublishedBy: "applier", payload: reflect.TypeFor[Applied](),
		Carries: "inventory (every object applied, with what changed), pruned objects, options, the post-phase hooks due once ready"},
	{Type: TypeDiffed, PublishedBy: "applier, for dryRun", Terminal: true, payload: reflect.TypeFor[Diffed](),
		Carries: "server-side dry-run diff per object"},
	{Type: TypeProgressing, PublishedBy: "health", payload: reflect.TypeFor[Progressing](),
		Carries: "per-object status (kstatus), ready count"},
	{Type: TypeSettled, PublishedBy: "health", payload: reflect.TypeFor[Settled](),
		Carries: "every object Current, the chart's post-phase hooks due: the bundle, the phase, the object count"},
	{Type: TypeReady, PublishedBy: "health", Terminal: true, payload: reflect.TypeFor[Ready](),
		Carries: "time to ready"},
	{Type: TypeFailed, PublishedBy: "renderer, applier, health, history (its deadline watchdog)", Terminal: true, payload: reflect.TypeFor[Failed](),
		Carries: "stage, reason code, message, failing objects"},
	{Type: TypeDegraded, PublishedBy: "health", payload: reflect.TypeFor[Degraded](),
		Carries: "after ready: the objects whose status changed"},
	{Type: TypeRecovered, PublishedBy: "health", payload: reflect.TypeFor[Recovered](),
		Carries: "after degraded: the objects that recovered"},
	{Type: TypeRollbackRequested, Request: true, PublishedBy: "CLI, history (auto on failure)", payload: reflect.TypeFor[RollbackRequested](),
		Carries: "target revision (0: the previous ready one), reason"},
	{Type: TypeUninstallRequested, Request: true, PublishedBy: "CLI, history (auto when a first install fails)", payload: reflect.TypeFor[UninstallRequested](),
		Carries: "whether to delete CRDs, timeout, reason"},
	{Type: TypeUninstalled, PublishedBy: "applier", Terminal: true, payload: reflect.TypeFor[Uninstalled](),
		Carries: "the objects deleted and kept"},
	{Type: TypeSuperseded, PublishedBy: "renderer, applier, health: the stage that drops stale work", Terminal: true, payload: reflect.TypeFor[Superseded](),
		Carries: "the newer revision that replaced it, the stage that dropped the work"},
	{Type: TypeApproved, PublishedBy: "a gate (its own identity, on its own subject)", payload: reflect.TypeFor[Approved](),
		Carries: "the gate, the revision and bundle digest it judged, reason, message, findings per object"},
	{Type: TypeRejected, PublishedBy: "a gate (its own identity, on its own subject)", payload: reflect.TypeFor[Rejected](),
		Carries: "the gate, the revision and bundle digest it judged, reason, message, findings per object"},
}

// Catalog returns every event type's spec, in the order of ARCHITECTURE.md.
func Catalog() []Spec { return append([]Spec(nil), catalog...) }

// Types returns every catalog type, sorted.
func Types() []string {
	out := make([]string, 0, len(catalog))
	for _, s := range catalog {
		out = append(out, s.Type)
	}
	sort.Strings(out)
	return out
}

// EndsFlow reports whether an event of type typ ends a revision's flow: the catalog's
// Spec.Terminal (ready, failed, superseded, diffed, uninstalled). Every flow ends in exactly one
// of them. Not to be mixed up with IsTerminal, which is about a handler's error.
func EndsFlow(typ string) bool {
	s, ok := Lookup(typ)
	return ok && s.Terminal
}

// Lookup returns the spec of typ.
func Lookup(typ string) (Spec, bool) {
	for _, s := range catalog {
		if s.Type == typ {
			return s, true
		}
	}
	return Spec{}, false
}

// DecodePayload decodes data as the payload of typ and validates it. Decoding is strict: a
// missing required field is an error, and so is a field the payload does not have, because a misspelt option ("valeus", "prun") that is
// silently ignored would deploy something other than what was asked.
func DecodePayload(typ string, data []byte) (Payload, error) {
	spec, ok := Lookup(typ)
	if !ok {
		return nil, fmt.Errorf("%w: %q (known: %v)", ErrUnknownType, typ, Types())
	}
	p := spec.New()
	if err := decodeValid(data, p, spec.Request); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidPayload, typ, err)
	}
	return p, nil
}

// decodeValid decodes data into p, checking that it has every required field (and, strict, no
// unknown one), then p's own rules.
func decodeValid(data []byte, p Payload, strict bool) error {
	if err := checkSize(data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(p); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON object")
	}
	// A required field that decoded to a non-zero value was there. Only when one is zero does it
	// take a second look at the JSON to tell "absent" from "zero".
	if anyZeroRequired(reflect.ValueOf(p)) {
		var c checker
		checkFields(&c, "", data, reflect.TypeOf(p))
		if err := c.err(); err != nil {
			return err
		}
	}
	return p.Validate()
}

func checkSize(data []byte) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return fmt.Errorf("no data")
	}
	if len(data) > MaxDataSize {
		return fmt.Errorf("data is %d bytes, at most %d are allowed: put large content in the object store and send its digest", len(data), MaxDataSize)
	}
	return nil
}
