package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	cloudevent "github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/troupe-dev/troupe/events"
)

// Labels the applier puts on what it applies, and the chart's marker.
const (
	labelRelease          = "troupe.dev/release"
	labelReleaseNamespace = "troupe.dev/release-namespace"
	annotationGen         = "chaos.troupe.dev/gen"
)

// ReadStream returns every message of a stream, oldest first, with its sequence: what an
// ordered consumer delivers, nothing deduplicated.
func ReadStream(ctx context.Context, js jetstream.JetStream, stream string, each func(jetstream.Msg, uint64) error) error {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fmt.Errorf("read %s: %w", stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read %s: %w", stream, err)
	}
	if info.NumPending == 0 {
		return nil
	}
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				return err
			}
			if err := each(msg, md.Sequence.Stream); err != nil {
				return err
			}
			if md.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		if n == 0 {
			return fmt.Errorf("read %s: no message within 10s with messages pending", stream)
		}
	}
}

// CollectEvents reads every message of the events stream as the checker's Events, and says what
// is wrong with each message that does not decode (nothing in the stream should be malformed).
func CollectEvents(ctx context.Context, js jetstream.JetStream, names events.Names) (evs []Event, malformed []string, err error) {
	err = ReadStream(ctx, js, names.Stream(), func(msg jetstream.Msg, seq uint64) error {
		e, err := names.Decode(msg.Subject(), msg.Headers(), msg.Data())
		if err != nil {
			malformed = append(malformed, fmt.Sprintf("seq %d (%s): %v", seq, msg.Subject(), err))
			return nil
		}
		ev, err := toEvent(e)
		if err != nil {
			malformed = append(malformed, fmt.Sprintf("seq %d (%s): %v", seq, msg.Subject(), err))
			return nil
		}
		ev.Seq = seq
		evs = append(evs, ev)
		return nil
	})
	return evs, malformed, err
}

// toEvent takes what the checker needs from a CloudEvent.
func toEvent(e cloudevent.Event) (Event, error) {
	ev := Event{Type: e.Type(), ID: e.ID(), Release: e.Subject(), Correlation: events.CorrelationID(e),
		Revision: events.Revision(e), Time: e.Time()}
	if _, ok := events.Lookup(e.Type()); !ok {
		return ev, nil
	}
	p, err := events.DecodePayload(e.Type(), e.Data())
	if err != nil {
		return ev, err
	}
	switch p := p.(type) {
	case *events.Requested:
		ev.Timeout, ev.DryRun = time.Duration(p.Options.Timeout), p.Options.DryRun
		if rel, err := events.ParseRelease(e.Subject()); err == nil {
			ev.Want = Wants(rel.Name, p.Set)
		}
	case *events.RollbackRequested:
		ev.Timeout, ev.Target = time.Duration(p.Options.Timeout), p.TargetRevision
	case *events.UninstallRequested:
		ev.Timeout = time.Duration(p.Timeout)
	case *events.Superseded:
		ev.ByRevision, ev.Stage = p.ByRevision, p.Stage
	case *events.Failed:
		ev.Stage, ev.Reason = p.Stage, p.Reason
	}
	return ev, nil
}

// Wants is what the harness's chart renders for release name with the --set values set: a
// ConfigMap and a Deployment marked with gen, and a second ConfigMap when extra is true.
func Wants(name string, set []string) State {
	gen, extra := "0", false
	for _, s := range set {
		for kv := range strings.SplitSeq(s, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "gen":
				gen = v
			case "extra":
				extra = v == "true"
			}
		}
	}
	st := State{"ConfigMap/" + name + "-gen": gen, "Deployment/" + name: gen}
	if extra {
		st["ConfigMap/"+name+"-extra"] = gen
	}
	return st
}

// CollectDeadLetters reads the dead-letter stream.
func CollectDeadLetters(ctx context.Context, js jetstream.JetStream, names events.Names) ([]DeadLetter, error) {
	var out []DeadLetter
	err := ReadStream(ctx, js, names.DeadLetterStream(), func(msg jetstream.Msg, _ uint64) error {
		d := events.ParseDeadLetter(msg.Headers(), msg.Data())
		dl := DeadLetter{Service: d.Service, Reason: d.Reason, Subject: d.Subject}
		if e, err := names.Decode(d.Subject, d.Header, d.Data); err == nil {
			dl.Type, dl.Correlation = e.Type(), events.CorrelationID(e)
		}
		out = append(out, dl)
		return nil
	})
	return out, err
}

// CollectObjects lists the kinds the chart makes (ConfigMaps, Deployments) labelled
// troupe.dev/release, in every namespace.
func CollectObjects(ctx context.Context, kc kubernetes.Interface) ([]Object, error) {
	sel := metav1.ListOptions{LabelSelector: labelRelease}
	var out []Object
	rel := func(m metav1.ObjectMeta) string {
		return m.Labels[labelReleaseNamespace] + "/" + m.Labels[labelRelease]
	}
	cms, err := kc.CoreV1().ConfigMaps("").List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list configmaps: %w", err)
	}
	for _, o := range cms.Items {
		if o.DeletionTimestamp != nil {
			continue
		}
		out = append(out, Object{Release: rel(o.ObjectMeta), Key: "ConfigMap/" + o.Name, Gen: o.Data["gen"]})
	}
	ds, err := kc.AppsV1().Deployments("").List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	for _, o := range ds.Items {
		if o.DeletionTimestamp != nil {
			continue
		}
		out = append(out, Object{Release: rel(o.ObjectMeta), Key: "Deployment/" + o.Name, Gen: o.Spec.Template.Annotations[annotationGen]})
	}
	return out, nil
}
