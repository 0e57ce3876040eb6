// Command notifier posts every release.ready and release.failed to a webhook, as JSON. It is the
// whole of a troupe subscriber: no other service knows about it, and `troupe graph` shows it.
package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/spf13/pflag"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/serve"
)

func main() {
	var webhook string
	serve.Main(serve.Command{
		Name:  "notifier",
		Flags: func(fs *pflag.FlagSet) { fs.StringVar(&webhook, "webhook", "", "URL to POST each event to") },
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			if webhook == "" {
				return nil, fmt.Errorf("--webhook is required")
			}
			return events.NewSubscriber(env.JS, events.SubscriberConfig{Service: "notifier", Names: env.Names, Logger: env.Log, Metrics: env.Metrics,
				TracerProvider: env.TracerProvider, Types: []string{events.TypeReady, events.TypeFailed}}, func(ctx context.Context, e event.Event) error {
				body, err := e.MarshalJSON()
				if err != nil {
					return events.Terminal(err)
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, webhook, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/cloudevents+json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return err // retried with backoff
				}
				resp.Body.Close()
				if resp.StatusCode >= 300 {
					return fmt.Errorf("webhook %s: %s", webhook, resp.Status)
				}
				return nil
			})
		},
	})
}
