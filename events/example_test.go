package events_test

import (
	"context"
	"fmt"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/events"
)

// A subscriber that reacts to finished releases: the README's example, compiled.
func ExampleNewSubscriber() {
	run := func(ctx context.Context, nc *nats.Conn, post func(context.Context, string) error) error {
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		sub, err := events.NewSubscriber(js, events.SubscriberConfig{
			Service: "notifier",
			Types:   []string{events.TypeReady, events.TypeFailed},
		}, func(ctx context.Context, e cloudevents.Event) error {
			zerolog.Ctx(ctx).Info().Msg("release finished")
			if e.Type() == events.TypeFailed {
				f, err := events.Data[events.Failed](e)
				if err != nil {
					return events.Terminal(err)
				}
				return post(ctx, f.Message)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return sub.Start(ctx)
	}
	fmt.Println(run != nil)
	// Output: true
}
