package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A gate is a peer that judges a rendered revision before it is applied: it reacts to
// release.rendered when the revision names it (Rendered.Gates) and publishes its verdict,
// release.approved or release.rejected, on a subject of its own:
//
//	<root>.release.<namespace>.<release>.approved.<gate>
//	<root>.release.<namespace>.<release>.rejected.<gate>
//
// The gate's name is the subject's last token, so NATS permissions can let a gate's identity
// publish its own verdicts and no one else's (access.Gate), and a verdict whose payload names
// another gate than its subject does is malformed (Decode): it counts for nothing.
//
// Which gates a revision needs is the request's Options.Gates and, stronger, the namespace's
// policy (GatePolicy, the KVGates bucket, written by an operator: `troupe gate require`), which a
// requester cannot skip. The applier applies a revision once every gate it needs approved that
// revision and that bundle digest (GateVerdicts); a rejection fails it at stage gate.

// KVGates holds the gate policy: per namespace, the gates every revision of its releases must
// pass. Only an operator (the admin identity) writes it; the services read it.
const KVGates = "troupe-gates"

// Reasons of a failure at stage gate.
const (
	// ReasonGateRejected: a gate the revision needs rejected it.
	ReasonGateRejected = "gate_rejected"
)

// Finding is one thing a gate found wrong (or worth saying) in a bundle: the rule, the object
// it is about when there is one, and what it found.
type Finding struct {
	Rule    string     `json:"rule" jsonschema:"minLength=1,maxLength=128"`
	Object  *ObjectRef `json:"object,omitempty"`
	Message string     `json:"message" jsonschema:"minLength=1,maxLength=32768"`
}

// Verdict is what a gate says of one revision's bundle: the payload of release.approved and
// release.rejected.
type Verdict struct {
	// Gate is the gate's name: the last token of the verdict's subject.
	Gate string `json:"gate" jsonschema:"minLength=1,maxLength=63"`
	// Revision and Bundle are what was judged: a verdict counts only for that revision and that
	// digest.
	Revision int    `json:"revision" jsonschema:"minimum=1"`
	Bundle   string `json:"bundle" jsonschema:"pattern=^sha256:[a-f0-9]{64}$"`
	// Reason is a stable snake_case code; Message says why, for a person.
	Reason   string    `json:"reason,omitempty" jsonschema:"pattern=^[a-z][a-z0-9_]*$,maxLength=64"`
	Message  string    `json:"message,omitempty" jsonschema:"maxLength=32768"`
	Findings []Finding `json:"findings,omitempty" jsonschema:"maxItems=10000"`
	// By names who decided, for a gate a person drives (the approver), as it was told.
	By string `json:"by,omitempty" jsonschema:"maxLength=256"`
	// DryRun: the revision judged was a dry run's. Its approval is no earlier approval a
	// rollback may trust (ApprovedBefore).
	DryRun bool `json:"dryRun,omitempty"`
}

// Approved says a gate lets a revision's bundle be applied.
type Approved Verdict

// Rejected says a gate does not let a revision's bundle be applied; Message says why.
type Rejected Verdict

// Validate implements Payload.
func (p *Approved) Validate() error { return (*Verdict)(p).validate(false) }

// Validate implements Payload.
func (p *Rejected) Validate() error { return (*Verdict)(p).validate(true) }

func (v *Verdict) validate(rejected bool) error {
	var c checker
	if err := ValidateName("gate", v.Gate); err != nil {
		c.addf("gate: %v", err)
	}
	c.min("revision", int64(v.Revision), 1)
	c.digest("bundle", v.Bundle, true)
	if v.Reason != "" && (!reasonRE.MatchString(v.Reason) || len(v.Reason) > 64) {
		c.addf("reason: %q must be a snake_case code of at most 64 characters", v.Reason)
	}
	if rejected {
		c.nonEmpty("message", v.Message)
	}
	c.maxLen("message", v.Message, MaxMessageLength)
	c.maxLen("by", v.By, 256)
	c.max("findings", len(v.Findings), MaxObjects)
	for i, f := range v.Findings {
		f.check(&c, fmt.Sprintf("findings[%d]", i))
	}
	return c.err()
}

func (f Finding) check(c *checker, field string) {
	c.nonEmpty(field+".rule", f.Rule)
	c.maxLen(field+".rule", f.Rule, 128)
	c.nonEmpty(field+".message", f.Message)
	c.maxLen(field+".message", f.Message, MaxMessageLength)
	if f.Object != nil {
		c.object(field+".object", *f.Object)
	}
}

// Verdicts of a GateVerdict.
const (
	VerdictApproved = "approved"
	VerdictRejected = "rejected"
	// VerdictPending: the gate has not answered (yet).
	VerdictPending = "pending"
)

// GateVerdict is one gate's verdict on a revision as the applier reads it (and a dry run's
// release.diffed reports it).
type GateVerdict struct {
	Gate string `json:"gate" jsonschema:"minLength=1,maxLength=63"`
	// Verdict is approved, rejected or pending.
	Verdict string `json:"verdict" jsonschema:"enum=approved,enum=rejected,enum=pending"`
	// Trusted: approved by an earlier approval of the same bundle (a rollback through a gate
	// whose policy trusts earlier approvals), not judged again.
	Trusted  bool      `json:"trusted,omitempty"`
	Reason   string    `json:"reason,omitempty" jsonschema:"maxLength=64"`
	Message  string    `json:"message,omitempty" jsonschema:"maxLength=32768"`
	Findings []Finding `json:"findings,omitempty" jsonschema:"maxItems=10000"`
	By       string    `json:"by,omitempty" jsonschema:"maxLength=256"`
}

func (g GateVerdict) check(c *checker, field string) {
	if err := ValidateName("gate", g.Gate); err != nil {
		c.addf("%s.gate: %v", field, err)
	}
	c.oneOf(field+".verdict", g.Verdict, []string{VerdictApproved, VerdictRejected, VerdictPending})
	c.maxLen(field+".message", g.Message, MaxMessageLength)
	for i, f := range g.Findings {
		f.check(c, fmt.Sprintf("%s.findings[%d]", field, i))
	}
}

// IsVerdict reports whether typ is a gate's verdict (release.approved, release.rejected): its
// subject ends in the gate's name.
func IsVerdict(typ string) bool { return typ == TypeApproved || typ == TypeRejected }

// VerdictSubject returns the subject gate publishes its verdict of type typ on about r:
// <root>.release.<namespace>.<release>.<approved|rejected>.<gate>.
func (n Names) VerdictSubject(r Release, typ, gate string) (string, error) {
	if !IsVerdict(typ) {
		return "", fmt.Errorf("%w: %q is not a gate's verdict", ErrUnknownType, typ)
	}
	if err := r.Validate(); err != nil {
		return "", err
	}
	if err := ValidateName("gate", gate); err != nil {
		return "", err
	}
	return n.releasePrefix() + r.Namespace + "." + r.Name + "." + strings.TrimPrefix(typ, typePrefix) + "." + gate, nil
}

// VerdictFilter returns the filter of gate's verdicts of type typ about every release ("*"
// for gate: every gate's): what the gate's identity may publish on.
func (n Names) VerdictFilter(typ, gate string) (string, error) {
	if !IsVerdict(typ) {
		return "", fmt.Errorf("%w: %q is not a gate's verdict", ErrUnknownType, typ)
	}
	if gate != "*" {
		if err := ValidateName("gate", gate); err != nil {
			return "", err
		}
	}
	return n.releasePrefix() + "*.*." + strings.TrimPrefix(typ, typePrefix) + "." + gate, nil
}

// GateDecisionSubject is where the gate named gate ("*": every gate) takes decisions asked of
// it by a person (GateDecision): `troupe approve` and `troupe reject` ask there, with the
// approver identity's right to.
func (n Names) GateDecisionSubject(gate string) string { return n.Root() + ".gate." + gate + ".decide" }

// GateDecision asks a gate that a person drives to approve or reject a release's revision.
type GateDecision struct {
	Release Release `json:"-"`
	// Namespace and Name are the release's.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Revision is the revision to decide on; 0: the newest waiting for the gate.
	Revision int  `json:"revision,omitempty"`
	Approve  bool `json:"approve"`
	// Reason says why (required to reject); By names who decides.
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"`
}

// GateDecisionReply is a gate's answer to a GateDecision: the verdict it published, or why it
// did not.
type GateDecisionReply struct {
	Revision int    `json:"revision,omitempty"`
	Verdict  string `json:"verdict,omitempty"`
	Error    string `json:"error,omitempty"`
}

// SubjectGate returns the gate a verdict's subject names ("" for another subject).
func (n Names) SubjectGate(subject string) string {
	rest, ok := strings.CutPrefix(subject, n.releasePrefix())
	if !ok {
		return ""
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 4 || !IsVerdict(typePrefix+parts[2]) {
		return ""
	}
	return parts[3]
}

// verdictGate is the gate of a verdict's data, for the subject to publish it on.
func verdictGate(data []byte) (string, error) {
	var v struct {
		Gate string `json:"gate"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return "", err
	}
	return v.Gate, ValidateName("gate", v.Gate)
}

// GateRule is one gate a namespace's policy requires.
type GateRule struct {
	Gate string `json:"gate"`
	// TrustApprovals lets a rollback through without judging again a bundle this gate approved
	// before (for the same release); otherwise a rollback is judged as any revision is.
	TrustApprovals bool `json:"trustApprovals,omitempty"`
	// By and At say who set the rule, and when.
	By string    `json:"by,omitempty"`
	At time.Time `json:"at,omitzero"`
}

// NamespaceGates is the policy of one namespace: the value of its key in KVGates.
type NamespaceGates struct {
	Namespace string     `json:"namespace"`
	Gates     []GateRule `json:"gates"`
}

// Rule returns the rule of gate, if the policy has one.
func (p *NamespaceGates) Rule(gate string) (GateRule, bool) {
	if p == nil {
		return GateRule{}, false
	}
	i := slices.IndexFunc(p.Gates, func(r GateRule) bool { return r.Gate == gate })
	if i < 0 {
		return GateRule{}, false
	}
	return p.Gates[i], true
}

// GatePolicy reads and writes the KVGates bucket of a system.
type GatePolicy struct {
	kv jetstream.KeyValue
}

// OpenGatePolicy opens the KVGates bucket of names (made by Provision).
func OpenGatePolicy(ctx context.Context, js jetstream.JetStream, names Names) (*GatePolicy, error) {
	kv, err := js.KeyValue(ctx, names.KV(KVGates))
	if err != nil {
		return nil, fmt.Errorf("gate policy: kv %s: %w", names.KV(KVGates), err)
	}
	return &GatePolicy{kv: kv}, nil
}

// For returns namespace's policy; an empty one when it has none.
func (p *GatePolicy) For(ctx context.Context, namespace string) (*NamespaceGates, error) {
	ng, _, err := p.get(ctx, namespace)
	return ng, err
}

func (p *GatePolicy) get(ctx context.Context, namespace string) (*NamespaceGates, uint64, error) {
	if err := ValidateName("namespace", namespace); err != nil {
		return nil, 0, err
	}
	e, err := p.kv.Get(ctx, namespace)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &NamespaceGates{Namespace: namespace}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("gate policy of namespace %s: %w", namespace, err)
	}
	var ng NamespaceGates
	if err := json.Unmarshal(e.Value(), &ng); err != nil {
		return nil, 0, fmt.Errorf("gate policy of namespace %s: %w", namespace, err)
	}
	ng.Namespace = namespace
	return &ng, e.Revision(), nil
}

// Require makes namespace's policy require rule.Gate (replacing the rule it had for that gate).
func (p *GatePolicy) Require(ctx context.Context, namespace string, rule GateRule) error {
	if err := ValidateName("gate", rule.Gate); err != nil {
		return err
	}
	var tooMany error
	err := p.change(ctx, namespace, func(ng *NamespaceGates) bool {
		others := slices.DeleteFunc(slices.Clone(ng.Gates), func(r GateRule) bool { return r.Gate == rule.Gate })
		if len(others) >= MaxPolicyGates {
			tooMany = fmt.Errorf("namespace %s requires %d gates already, at most %d are allowed", namespace, len(others), MaxPolicyGates)
			return false
		}
		ng.Gates = append(others, rule)
		slices.SortFunc(ng.Gates, func(a, b GateRule) int { return strings.Compare(a.Gate, b.Gate) })
		return true
	})
	if err != nil {
		return err
	}
	return tooMany
}

// MaxPolicyGates bounds the gates a namespace's policy requires: with a request's own
// (Options.Gates, at most 16), they fit a release.rendered's list (at most 64).
const MaxPolicyGates = 32

// Remove makes namespace's policy no longer require gate; false when it did not.
func (p *GatePolicy) Remove(ctx context.Context, namespace, gate string) (bool, error) {
	removed := false
	err := p.change(ctx, namespace, func(ng *NamespaceGates) bool {
		n := len(ng.Gates)
		ng.Gates = slices.DeleteFunc(ng.Gates, func(r GateRule) bool { return r.Gate == gate })
		removed = len(ng.Gates) < n
		return removed
	})
	return removed, err
}

func (p *GatePolicy) change(ctx context.Context, namespace string, f func(*NamespaceGates) bool) error {
	for attempt := 1; ; attempt++ {
		ng, rev, err := p.get(ctx, namespace)
		if err != nil {
			return err
		}
		if !f(ng) {
			return nil
		}
		b, _ := json.Marshal(ng)
		if len(ng.Gates) == 0 {
			if rev == 0 {
				return nil
			}
			err = p.kv.Delete(ctx, namespace, jetstream.LastRevision(rev))
		} else if rev == 0 {
			_, err = p.kv.Create(ctx, namespace, b)
		} else {
			_, err = p.kv.Update(ctx, namespace, b, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !strings.Contains(err.Error(), "wrong last sequence") {
			return fmt.Errorf("gate policy of namespace %s: %w", namespace, err)
		}
		if attempt == maxCASAttempts {
			return fmt.Errorf("gate policy of namespace %s: %d writers came first, one after the other: %w", namespace, attempt, err)
		}
		// another writer came first: read again
	}
}

// List returns every namespace's policy, by namespace.
func (p *GatePolicy) List(ctx context.Context) ([]*NamespaceGates, error) {
	lister, err := p.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []*NamespaceGates
	for _, k := range keys {
		ng, err := p.For(ctx, k)
		if err != nil {
			return nil, err
		}
		if len(ng.Gates) > 0 {
			out = append(out, ng)
		}
	}
	return out, nil
}

// RequiredGates returns the gates a revision must pass: those its request names and those the
// namespace's policy requires, sorted, each once.
func RequiredGates(requested []string, policy *NamespaceGates) []string {
	out := slices.Clone(requested)
	if policy != nil {
		for _, r := range policy.Gates {
			out = append(out, r.Gate)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// GateVerdicts reads the verdicts gates gave on one revision of rel: every release.approved and
// release.rejected in stream after sequence from (the revision's release.rendered: its verdicts
// come after it) for that correlation id, revision and bundle digest. A verdict for another
// revision or another bundle is no verdict on this one. When a gate answered more than once, its
// last answer counts. Verdicts of gates not in gates are left out.
func (n Names) GateVerdicts(ctx context.Context, stream jetstream.Stream, rel Release, from uint64, corr string, revision int, bundle string, gates []string) (map[string]GateVerdict, error) {
	out := map[string]GateVerdict{}
	if len(gates) == 0 {
		return out, nil
	}
	type found struct {
		seq uint64
		v   GateVerdict
	}
	last := map[string]found{}
	for _, typ := range []string{TypeApproved, TypeRejected} {
		filter := n.releasePrefix() + rel.Namespace + "." + rel.Name + "." + strings.TrimPrefix(typ, typePrefix) + ".*"
		for seq := from + 1; ; {
			m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("verdicts on %s: %w", rel, err)
			}
			seq = m.Sequence + 1
			e, err := n.Decode(m.Subject, m.Header, m.Data)
			if err != nil || CorrelationID(e) != corr {
				continue // malformed (another gate's name, bad data): no verdict
			}
			var v Verdict
			if json.Unmarshal(e.Data(), &v) != nil || v.Revision != revision || v.Bundle != bundle || !slices.Contains(gates, v.Gate) {
				continue
			}
			if f, ok := last[v.Gate]; ok && f.seq > m.Sequence {
				continue
			}
			verdict := VerdictApproved
			if typ == TypeRejected {
				verdict = VerdictRejected
			}
			last[v.Gate] = found{m.Sequence, GateVerdict{Gate: v.Gate, Verdict: verdict, Reason: v.Reason, Message: v.Message,
				Findings: v.Findings, By: v.By}}
		}
	}
	for g, f := range last {
		out[g] = f.v
	}
	return out, nil
}

// ApprovedBefore reports whether gate approved bundle for rel in any earlier revision: what lets
// a rollback through a gate whose policy trusts earlier approvals. A revision counts by the gate's
// last verdict on it: an approval the gate (or the person driving it) took back with a rejection
// is none.
func (n Names) ApprovedBefore(ctx context.Context, stream jetstream.Stream, rel Release, gate, bundle string) (bool, error) {
	if _, err := n.VerdictSubject(rel, TypeApproved, gate); err != nil {
		return false, err
	}
	// The gate's approved.<gate> and rejected.<gate>; the type of its last verdict by flow and
	// revision.
	filter := n.releasePrefix() + rel.Namespace + "." + rel.Name + ".*." + gate
	last := map[string]string{}
	for seq := uint64(1); ; {
		m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return false, fmt.Errorf("approvals of %s by %s: %w", rel, gate, err)
		}
		seq = m.Sequence + 1
		e, err := n.Decode(m.Subject, m.Header, m.Data)
		if err != nil || !IsVerdict(e.Type()) {
			continue
		}
		var v Verdict
		if json.Unmarshal(e.Data(), &v) == nil && v.Bundle == bundle && !v.DryRun {
			last[fmt.Sprintf("%s %d", CorrelationID(e), v.Revision)] = e.Type()
		}
	}
	for _, typ := range last {
		if typ == TypeApproved {
			return true, nil
		}
	}
	return false, nil
}

// Pending returns the gates of gates that have no verdict in verdicts, in order.
func Pending(gates []string, verdicts map[string]GateVerdict) []string {
	var out []string
	for _, g := range gates {
		if _, ok := verdicts[g]; !ok {
			out = append(out, g)
		}
	}
	return out
}
